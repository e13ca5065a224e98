//! The trainer's own GPU code (beside dfdx's): CUDA kernel sources in the
//! repository (`trainer/cuda/`), compiled at run time by NVRTC through
//! `cudarc` to a CUBIN for the GPU's architecture ([`KERNEL_FILES`]: the
//! optimizer, RMS norm, loss, the feed-forward's activations and dropout
//! masks, attention's softmax and bias gradients), each with its CPU side:
//! the optimizer's twin ([`twin`]), the others the trainer's own CPU
//! kernels, whose order the kernels follow, so that the same inputs give
//! the same bits on either.
//!
//! The kernels compile without a GPU (NVRTC is a library: the PyPI wheel
//! `nvidia-cuda-nvrtc` has it), so a test compiles them on every machine
//! that has NVRTC, and CI installs it: a kernel that does not compile fails
//! CI. Running them needs the device machine.
//!
//! Why a CUBIN and not PTX: the device image's NVRTC (13.2, in PyTorch's
//! environment) writes PTX ISA 9.2, which its 580 driver (CUDA 13.0)
//! refuses to load; a CUBIN for the GPU's own architecture needs no JIT.

pub mod attention;
pub mod backend;
pub mod cuda_backend;
pub mod elementwise;
pub mod loss;
pub mod norm;
pub mod optimizer;
pub mod products;
pub mod profile;
pub mod step;
pub mod twin;

use crate::{Result, TrainError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Threads per block of every reduction kernel (the order of the sums
/// depends on it: one home, passed to the kernels as `T5_THREADS`).
pub const THREADS: usize = 256;
/// Blocks of a grid-wide reduction (`T5_BLOCKS`).
pub const BLOCKS: usize = 1024;
/// Threads per block of the kernels whose threads each sum one long chain
/// (`T5_CHAIN_THREADS`, `CHAIN_KERNEL` in common.cuh: their launch bound,
/// so every launch of them takes its blocks from here): warp-sized, so that
/// a matrix's few columns spread over many multiprocessors.
pub(crate) const CHAIN_THREADS: usize = 32;

/// A file of kernels: its name, its source (`common.cuh` in front) and its
/// entry points, in the order `load` gives them.
#[derive(Debug, Clone, Copy)]
pub struct KernelFile {
    /// The file's name under `trainer/cuda/`, for messages.
    pub name: &'static str,
    /// The source as compiled.
    pub src: &'static str,
    /// The entry points.
    pub kernels: &'static [&'static str],
}

/// `trainer/cuda/$file` with `common.cuh` in front.
macro_rules! kernel_source {
    ($file:literal) => {
        concat!(
            include_str!("../../cuda/common.cuh"),
            include_str!(concat!("../../cuda/", $file))
        )
    };
}

/// The optimizer: AdamW, Adafactor, global-norm clipping.
pub const OPTIMIZER: KernelFile = KernelFile {
    name: "optimizer.cu",
    src: kernel_source!("optimizer.cu"),
    kernels: &[
        "sum_partials_by_param",
        "sum_partials",
        "clip_by_norm",
        "adamw",
        "adafactor_sums",
        "adafactor_moments",
        "adafactor_y",
        "adafactor_apply",
    ],
};

/// RMS norm, bit for bit the CPU's fused norm.
pub const NORM: KernelFile = KernelFile {
    name: "norm.cu",
    src: kernel_source!("norm.cu"),
    kernels: &[
        "rms_norm_fwd",
        "rms_norm_bwd_x",
        "rms_norm_bwd_w_partials",
        "rms_norm_bwd_w",
    ],
};

/// The output layer's loss, in the CPU fused loss's order.
pub const LOSS: KernelFile = KernelFile {
    name: "loss.cu",
    src: kernel_source!("loss.cu"),
    kernels: &["row_loss_fwd", "row_loss_grad"],
};

/// The feed-forward's activations and dropout, the dropout masks, bf16
/// operands.
pub const ELEMENTWISE: KernelFile = KernelFile {
    name: "elementwise.cu",
    src: kernel_source!("elementwise.cu"),
    kernels: &[
        "gated_fwd",
        "gated_bwd",
        "relu_fwd",
        "relu_bwd",
        "dropout_mask",
        "to_bf16",
        "residual",
        "heads_layout",
        "mul_masked",
        "scale",
        "embed",
        "embed_grad",
    ],
};

/// Attention's softmax, dropout and position bias gradient, its masks.
pub const ATTENTION: KernelFile = KernelFile {
    name: "attention.cu",
    src: kernel_source!("attention.cu"),
    kernels: &[
        "attn_softmax_fwd",
        "attn_softmax_bwd",
        "attn_bias_grad",
        "bucket_partials",
        "bucket_grad",
        "position_bias",
        "attn_mask",
    ],
};

/// Every kernel file.
pub const KERNEL_FILES: [KernelFile; 5] = [OPTIMIZER, NORM, LOSS, ELEMENTWISE, ATTENTION];

/// Compiled kernels: the PTX (for reading) and the CUBIN (for loading).
#[derive(Debug, Clone)]
pub struct Compiled {
    /// PTX for the architecture's virtual counterpart.
    pub ptx: String,
    /// Machine code for the architecture.
    pub cubin: Vec<u8>,
}

/// The NVRTC options: no fused multiply-add (products and sums round as
/// on the CPU), IEEE division and square root, flush-to-zero as the CPU
/// trainer runs (`Runtime::flush_denormals`).
fn options(arch: &str, flush_denormals: bool) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--fmad=false".into(),
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        format!("--ftz={flush_denormals}"),
        format!("-DT5_THREADS={THREADS}"),
        format!("-DT5_BLOCKS={BLOCKS}"),
        format!("-DT5_CHAIN_THREADS={CHAIN_THREADS}"),
        format!("-DT5_FIELDS={}", optimizer::FIELDS),
        format!("-DT5_CHUNK={}", optimizer::CHUNK),
        format!("-DT5_LANES={}", crate::kernels::LANES),
        format!("-DT5_NORM_ROWS={}", crate::kernels::NORM_ROWS),
        format!("-DT5_ADAFACTOR_EPS1={:e}f", crate::optim::ADAFACTOR_EPS1),
        format!("-DT5_ADAFACTOR_EPS2={:e}f", crate::optim::ADAFACTOR_EPS2),
        format!("-DT5_GELU_C={:e}f", crate::kernels::GELU_C),
        format!("-DT5_SQRT_2_OVER_PI={:e}f", crate::kernels::SQRT_2_OVER_PI),
        format!("-DT5_MASKED={:e}f", crate::model::MASKED),
    ]
}

/// An error of our GPU code: the `part` (the optimizer, the norm, …), what
/// failed and the driver's error.
pub(crate) fn gpu_error(part: &str, what: &str, e: impl std::fmt::Debug) -> TrainError {
    TrainError::Config(format!("GPU {part}: {what}: {e:?}"))
}

/// A failed allocation (or upload) of `bytes` on `stream`'s GPU, as
/// [`gpu_error`]; when the GPU's memory is used up, a
/// [`TrainError::OutOfMemory`] that says how much was asked and how much is
/// free (the step adds what would need less: [`step::DeviceStep`]).
pub(crate) fn memory_error(
    part: &str,
    what: &str,
    bytes: usize,
    stream: &cudarc::driver::CudaStream,
    e: cudarc::driver::DriverError,
) -> TrainError {
    if e.0 != cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        return gpu_error(part, what, e);
    }
    let free = match stream.context().mem_get_info() {
        Ok((free, total)) => format!("{} of its {} free", size(free as u64), size(total as u64)),
        Err(_) => "its free memory unknown".into(),
    };
    TrainError::OutOfMemory(format!(
        "GPU {part}: the GPU is out of memory: {what} asked for {} more, {free}",
        size(bytes as u64)
    ))
}

/// `bytes` for people: in MiB below a GiB.
pub fn size(bytes: u64) -> String {
    match bytes as f64 / (1u64 << 30) as f64 {
        g if g >= 1.0 => format!("{g:.2} GiB"),
        g => format!("{:.2} MiB", g * 1024.0),
    }
}

/// The most device memory the trainer's buffers held at once on `ctx`'s
/// GPU: the high-water mark of the memory pool every buffer comes from
/// (parameters, gradients, optimizer state, activations; not cuBLAS's own
/// workspace nor the kernels' code).
pub(crate) fn peak_memory(
    ctx: &cudarc::driver::CudaContext,
) -> std::result::Result<u64, cudarc::driver::DriverError> {
    use cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
    pool_attribute(ctx, CU_MEMPOOL_ATTR_USED_MEM_HIGH, None)
}

/// A 64-bit attribute of the default memory pool of `ctx`'s GPU (cudarc's
/// `cuMemAllocAsync` takes every buffer from it): set to `set` when given;
/// its value.
fn pool_attribute(
    ctx: &cudarc::driver::CudaContext,
    attribute: cudarc::driver::sys::CUmemPool_attribute,
    set: Option<u64>,
) -> std::result::Result<u64, cudarc::driver::DriverError> {
    use cudarc::driver::result::{device, mem_pool};
    let mut value = set.unwrap_or(0);
    ctx.bind_to_thread()?;
    // SAFETY: the device is the context's; the attributes asked for here
    // (release threshold, high-water marks) are u64s.
    unsafe {
        let pool = device::get_default_mem_pool(ctx.cu_device())?;
        let v = &mut value as *mut u64 as *mut std::ffi::c_void;
        match set {
            Some(_) => mem_pool::set_attribute(pool, attribute, v)?,
            None => mem_pool::get_attribute(pool, attribute, v)?,
        }
    }
    Ok(value)
}

/// A kernel launch's result (its events dropped), as [`gpu_error`].
pub(crate) fn launched<T>(
    part: &str,
    r: std::result::Result<T, cudarc::driver::DriverError>,
    what: &str,
) -> Result<()> {
    r.map(|_| ()).map_err(|e| gpu_error(part, what, e))
}

/// Where NVRTC is: `$T5MIX_NVRTC` (the library file), else the CUDA 13
/// wheel in python3's site-packages (`nvidia/cu13/lib/libnvrtc.so.13`, as
/// PyTorch installs it), else None (the system's library path).
pub fn nvrtc_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("T5MIX_NVRTC") {
        return Some(PathBuf::from(p));
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import site, sys; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()]))",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|d| Path::new(d).join("nvidia/cu13/lib/libnvrtc.so.13"))
        .find(|p| p.is_file())
}

/// Loads NVRTC (once): from [`nvrtc_path`] when it names a file, so that
/// cudarc's lookup by library name finds the library already loaded; and
/// cuBLAS from the same folder when it is there (PyTorch's wheels put both
/// in `nvidia/cu13/lib`, which is on no library path).
fn load_nvrtc() -> Result<()> {
    use std::sync::OnceLock;
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            if let Some(path) = nvrtc_path() {
                // its builtins first: NVRTC opens them by name, and 13.0's
                // wheel has no RUNPATH to find them beside it
                let dir = path.parent().unwrap_or(Path::new("."));
                let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
                    .map(|d| d.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default();
                libs.retain(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libnvrtc-builtins.so."))
                });
                libs.sort();
                libs.push(path.clone());
                // cuBLASLt before cuBLAS, which needs it
                for name in ["libcublasLt.so.13", "libcublas.so.13"] {
                    if dir.join(name).is_file() {
                        libs.push(dir.join(name));
                    }
                }
                for lib in &libs {
                    // SAFETY: loading these libraries runs no code of ours;
                    // they stay loaded for the life of the process.
                    let loaded = unsafe { libloading::Library::new(lib) }
                        .map_err(|e| format!("CUDA library {}: {e}", lib.display()))?;
                    std::mem::forget(loaded);
                }
            }
            // SAFETY: only tries to open the library by its names.
            if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                Ok(())
            } else {
                Err("NVRTC not found: set T5MIX_NVRTC to libnvrtc.so.13, or \
                     pip install nvidia-cuda-nvrtc==13.0.88"
                    .to_string())
            }
        })
        .clone()
        .map_err(TrainError::Config)
}

/// Sends this process's CUDA calls to the CPU stand-in in `dir`: the
/// `libcuda.so`, `libnvrtc.so` and `libcublas.so` that the build script
/// makes from `trainer/cuda/standin/` (its `T5MIX_CUDA_STANDIN_DIR`). The
/// kernels then run on the CPU, compiled from the same sources (and by the
/// real NVRTC too, when it is found, whose errors and PTX are the answer);
/// the products in plain loops. For testing the GPU code on machines
/// without a GPU: it is slow, and the real GPU's rounding of library
/// functions (`log`, the products' order of sums) is not the stand-in's.
///
/// Call it before anything else in the process touches CUDA; later calls
/// return the first one's result.
pub fn use_cpu_standin(dir: &Path) -> Result<()> {
    use std::sync::OnceLock;
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            for lib in ["libnvrtc.so", "libcuda.so", "libcublas.so"] {
                let path = dir.join(lib);
                // SAFETY: the stand-in's libraries run no code when loaded
                // but reading their environment variables;
                // they stay loaded for the life of the process, where
                // cudarc finds them by name.
                let loaded = unsafe { libloading::Library::new(&path) }
                    .map_err(|e| format!("CUDA stand-in {}: {e}", path.display()))?;
                std::mem::forget(loaded);
            }
            load_nvrtc().map_err(|e| e.to_string())
        })
        .clone()
        .map_err(TrainError::Config)
}

/// The CUDA context of GPU `ordinal`, or an error when there is no driver
/// or no such GPU (cudarc, loading the driver at run time, would panic).
pub fn gpu_context(ordinal: usize) -> Result<std::sync::Arc<cudarc::driver::CudaContext>> {
    // SAFETY: only tries to open the driver library by its names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(TrainError::Config(
            "no CUDA driver (libcuda.so.1): training on the GPU needs an NVIDIA GPU and its driver"
                .into(),
        ));
    }
    let ctx = cudarc::driver::CudaContext::new(ordinal)
        .map_err(|e| gpu_error("GPU", &format!("{ordinal}"), e))?;
    // Every buffer would carry two CUDA events (made when it is allocated,
    // destroyed when it is freed: four driver calls a buffer, hundreds of
    // buffers a step) for ordering work across streams. The step runs on
    // the context's one stream, where the stream itself orders it.
    // SAFETY: nothing here makes a second stream (`new_stream`); every
    // buffer is allocated, used and freed on the default stream.
    unsafe { ctx.disable_event_tracking() };
    if ctx.has_async_alloc() {
        keep_freed_memory(&ctx).map_err(|e| gpu_error("GPU", "memory pool", e))?;
    }
    Ok(ctx)
}

/// The step allocates and frees its buffers on the stream (cudarc's
/// `cuMemAllocAsync` from the device's default pool); by default the pool
/// hands freed memory back to the driver at every synchronisation, and the
/// next step maps it again. Keep it in the pool instead (as PyTorch's
/// caching allocator keeps its blocks).
fn keep_freed_memory(
    ctx: &cudarc::driver::CudaContext,
) -> std::result::Result<(), cudarc::driver::DriverError> {
    use cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
    pool_attribute(ctx, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, Some(u64::MAX)).map(|_| ())
}

/// Loads cuBLAS (with NVRTC, from the same folder when found there).
pub(crate) fn load_cublas() -> Result<()> {
    load_nvrtc()?;
    // SAFETY: only tries to open the library by its names.
    if unsafe { cudarc::cublas::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(TrainError::Config(
            "cuBLAS not found (libcublas.so.13): pip install nvidia-cublas, or put its folder \
             on LD_LIBRARY_PATH"
                .into(),
        ))
    }
}

/// Compiles `src` (with its name for messages) for `arch` (`sm_90` for the
/// H100 and H200).
pub fn compile(name: &str, src: &str, arch: &str, flush_denormals: bool) -> Result<Compiled> {
    use cudarc::nvrtc::{result, sys};
    load_nvrtc()?;
    let fail = |what: &str, e: &dyn std::fmt::Debug| {
        TrainError::Config(format!("compiling {name} for {arch}: {what}: {e:?}"))
    };
    let c_src = std::ffi::CString::new(src).map_err(|e| fail("source", &e))?;
    let c_name = std::ffi::CString::new(name).map_err(|e| fail("name", &e))?;
    let prog =
        result::create_program(&c_src, Some(c_name.as_c_str())).map_err(|e| fail("create", &e))?;
    let opts = options(arch, flush_denormals);
    // SAFETY: `prog` is a live program until destroyed below; the buffers
    // passed to NVRTC are sized by NVRTC's own size queries.
    let out = unsafe {
        let compiled = result::compile_program(prog, &opts).map_err(|e| {
            let log = result::get_program_log(prog)
                .map(|l| {
                    let bytes: Vec<u8> = l.iter().map(|&c| c as u8).collect();
                    String::from_utf8_lossy(&bytes)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_default();
            fail("NVRTC", &format!("{e:?}\n{log}"))
        });
        let ptx = compiled.and_then(|()| {
            let raw = result::get_ptx(prog).map_err(|e| fail("PTX", &e))?;
            let bytes: Vec<u8> = raw.iter().map(|&c| c as u8).collect();
            Ok(String::from_utf8_lossy(&bytes)
                .trim_end_matches('\0')
                .to_string())
        });
        let cubin = ptx.and_then(|ptx| {
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size)
                .result()
                .map_err(|e| fail("CUBIN size", &e))?;
            let mut cubin = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast())
                .result()
                .map_err(|e| fail("CUBIN", &e))?;
            Ok(Compiled { ptx, cubin })
        });
        let _ = result::destroy_program(prog);
        cubin
    }?;
    Ok(out)
}

impl KernelFile {
    /// The file compiled for `arch`.
    pub fn compile(&self, arch: &str, flush_denormals: bool) -> Result<Compiled> {
        compile(self.name, self.src, arch, flush_denormals)
    }
}

/// `file`'s CUBIN for `arch`, compiled once a process (NVRTC takes a
/// while, and every backend loads every file: the tests make many).
fn cubin(file: KernelFile, arch: &str, flush_denormals: bool) -> Result<Arc<[u8]>> {
    type Key = (&'static str, String, bool);
    static CUBINS: OnceLock<Mutex<HashMap<Key, Arc<[u8]>>>> = OnceLock::new();
    let cubins = CUBINS.get_or_init(Default::default);
    let key = (file.name, arch.to_string(), flush_denormals);
    if let Some(c) = cubins.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    // (compiled outside the lock: two threads may both compile a file once)
    let c: Arc<[u8]> = file.compile(arch, flush_denormals)?.cubin.into();
    let mut cubins = cubins.lock().unwrap_or_else(|e| e.into_inner());
    Ok(cubins.entry(key).or_insert(c).clone())
}

/// The `N` kernels of `file`, compiled for the GPU of `stream` and loaded
/// there (in the order of its list).
pub(crate) fn load<const N: usize>(
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    file: KernelFile,
    flush_denormals: bool,
) -> Result<[cudarc::driver::CudaFunction; N]> {
    let KernelFile { name, kernels, .. } = file;
    assert_eq!(kernels.len(), N, "{name}: the kernels loaded");
    let fail = |what: String, e: &dyn std::fmt::Debug| {
        TrainError::Config(format!("{name}: {what}: {e:?}"))
    };
    let ctx = stream.context();
    let (major, minor) = ctx
        .compute_capability()
        .map_err(|e| fail("GPU".into(), &e))?;
    let cubin = cubin(file, &format!("sm_{major}{minor}"), flush_denormals)?;
    let module = ctx
        .load_module(cudarc::nvrtc::Ptx::from_binary(cubin.to_vec()))
        .map_err(|e| fail("loading".into(), &e))?;
    let functions = kernels
        .iter()
        .map(|k| {
            module
                .load_function(k)
                .map_err(|e| fail(format!("kernel {k}"), &e))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(functions
        .try_into()
        .unwrap_or_else(|_| unreachable!("N functions")))
}

/// Pushes `s` as a kernel argument, or a null pointer when it is absent.
pub(crate) fn arg_or_null<'a, T>(
    b: &mut cudarc::driver::LaunchArgs<'a>,
    s: Option<&'a cudarc::driver::CudaSlice<T>>,
) {
    use cudarc::driver::PushKernelArg;
    static NULL: u64 = 0;
    match s {
        Some(s) => b.arg(s),
        None => b.arg(&NULL),
    };
}

/// A bf16 copy of f32 values, what the bf16 products read (the GPU's
/// [`backend::Backend::Ready`]).
#[derive(Debug)]
pub struct Bf16Copy {
    /// The bf16 bits.
    pub bits: cudarc::driver::CudaSlice<u16>,
    /// Whether anything but products reads the f32 values themselves
    /// ([`backend::Readers`]); when not, a kernel that writes the copy
    /// leaves them unwritten.
    pub values_read: bool,
}

/// Whether a kernel writes its output's f32 values: without a bf16 copy,
/// or when more than products read them.
pub(crate) fn writes_values(copy: &Option<&mut Bf16Copy>) -> bool {
    copy.as_ref().is_none_or(|c| c.values_read)
}

/// Pushes where a kernel writes its output (the kernels' `put`): the f32
/// values (`values`, or a null pointer when [`writes_values`] says they go
/// unwritten: then `values` may be the one-value stand-in of
/// `Backend::output_for`) and then the bf16 copy (or a null pointer); an
/// error when the copy holds fewer than the `n` values written. `values` is taken
/// shared: a kernel that reads its output's buffer first (in place) takes
/// it as its input too.
pub(crate) fn out_args<'a>(
    b: &mut cudarc::driver::LaunchArgs<'a>,
    values: &'a cudarc::driver::CudaSlice<f32>,
    copy: Option<&'a mut Bf16Copy>,
    n: usize,
    part: &str,
) -> Result<()> {
    arg_or_null(b, writes_values(&copy).then_some(values));
    copy_arg(b, copy, n, part)
}

/// Pushes a kernel's bf16 copy of its output (the kernels' `put`), or a
/// null pointer when it is absent; an error when it holds fewer than the
/// `n` values written.
pub(crate) fn copy_arg<'a>(
    b: &mut cudarc::driver::LaunchArgs<'a>,
    copy: Option<&'a mut Bf16Copy>,
    n: usize,
    part: &str,
) -> Result<()> {
    if let Some(c) = copy.as_ref().filter(|c| c.bits.len() < n) {
        let e = format!("{} values for {n}", c.bits.len());
        return Err(gpu_error(part, "bf16 copy", e));
    }
    arg_or_null(b, copy.map(|c| &c.bits));
    Ok(())
}

/// The most blocks a grid has along y (CUDA's limit); kernels with rows
/// along y loop over them in steps of the grid.
pub(crate) const MAX_GRID_Y: usize = 65_535;

/// A grid of `threads`-thread blocks for a grid-stride loop over `n` items.
pub(crate) fn grid_for(n: usize, threads: usize) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (n.div_ceil(threads).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid of `threads`-thread blocks over `n` items along x, for each of
/// `rows` rows along y (at most [`MAX_GRID_Y`]: the kernels step over more
/// rows by the grid's height).
pub(crate) fn grid_rows(n: usize, rows: usize, threads: usize) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (
            n.div_ceil(threads).max(1) as u32,
            rows.clamp(1, MAX_GRID_Y) as u32,
            1,
        ),
        block_dim: (threads as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Test values in [-scale/2, scale/2) from a fixed sequence (a linear
/// congruential generator: the GPU tests use the same).
#[cfg(test)]
pub(crate) fn test_values(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}
