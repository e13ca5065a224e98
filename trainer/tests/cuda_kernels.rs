//! The CUDA kernels compile with NVRTC on any machine (no GPU needed), so
//! a kernel that does not compile fails here, in CI. Running them and
//! checking them against their CPU twin (`trainer::device::twin`) needs the
//! device machine (`cfg(t5mix_gpu)`, or `--include-ignored` there).

use t5mix_trainer::device::twin::{self, FlatLayout};
use t5mix_trainer::device::{
    compile, compile_loss, compile_norm, compile_optimizer, LOSS_KERNELS, NORM_KERNELS,
    OPTIMIZER_KERNELS,
};
use t5mix_trainer::optim::{Optimizer, OptimizerConfig};

#[test]
#[cfg_attr(
    not(t5mix_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.88"
)]
fn kernels_compile_with_nvrtc_for_sm90() {
    type Compile = fn(&str, bool) -> t5mix_trainer::Result<t5mix_trainer::device::Compiled>;
    // (compile, entry points, whether a library call may fuse: the loss's
    // f64 log comes from libdevice, which uses fma itself)
    let sources: [(Compile, &[&str], bool); 3] = [
        (compile_optimizer, &OPTIMIZER_KERNELS, false),
        (compile_norm, &NORM_KERNELS, false),
        (compile_loss, &LOSS_KERNELS, true),
    ];
    for ((compile, kernels, library_fma), flush_denormals) in
        sources.into_iter().flat_map(|s| [(s, true), (s, false)])
    {
        let c = compile("sm_90", flush_denormals).unwrap();
        assert!(c.cubin.starts_with(b"\x7fELF"), "a CUBIN is an ELF file");
        assert!(c.ptx.contains(".target sm_90"), "{}", &c.ptx[..400]);
        // every entry point listed, and only those
        for k in kernels {
            assert!(c.ptx.contains(&format!(".entry {k}(")), "{k} missing");
        }
        assert_eq!(c.ptx.matches(".entry ").count(), kernels.len());
        // products and sums round as on the CPU: no fused multiply-add in
        // our f32 formulas (nor anywhere, but for library calls)
        assert!(
            !c.ptx.contains("fma.rn.f32"),
            "fused multiply-add in the PTX"
        );
        assert!(
            library_fma || !c.ptx.contains("fma.rn"),
            "fused multiply-add in the PTX"
        );
        // subnormals flushed in our f32 arithmetic as asked (libdevice's
        // f64 log has an ftz reciprocal of its own)
        assert_eq!(c.ptx.contains(".ftz.f32"), flush_denormals);
    }
}

#[test]
#[cfg_attr(
    not(t5mix_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.88"
)]
fn a_kernel_that_does_not_compile_is_an_error_with_the_compiler_log() {
    let src = "extern \"C\" __global__ void k(float* x) { x[0] = undefined_thing(); }";
    let err = compile("bad.cu", src, "sm_90", true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.cu") && err.contains("undefined_thing"),
        "{err}"
    );
}

/// Values in [-scale/2, scale/2) from a fixed sequence.
fn values(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(t5mix_gpu),
    ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it on the device machine"
)]
fn optimizer_on_the_gpu_equals_its_cpu_twin_bit_for_bit() {
    use t5mix_trainer::device::optimizer::DeviceOptimizer;
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    // factored both ways, unfactored, and a tensor past one grid's stride
    let shapes = [(300, 1100), (1100, 256), (64, 96), (1, 512), (2048, 512)];
    let layout = FlatLayout::new(&shapes);
    for cfg in [OptimizerConfig::adamw(), OptimizerConfig::adafactor()] {
        let mut seed = 11u64;
        let mut cpu_p = values(&mut seed, layout.len, 2.0);
        let mut cpu_states = Optimizer::new(cfg, &shapes).states;
        let mut dev_p = stream.clone_htod(&cpu_p).unwrap();
        let mut dev = DeviceOptimizer::new(stream.clone(), cfg, layout.clone(), false).unwrap();
        for step in 0..3 {
            let mut cpu_g = values(&mut seed, layout.len, 0.1);
            let mut dev_g = stream.clone_htod(&cpu_g).unwrap();
            let norm = twin::clip_global_norm(&mut cpu_g, Some(1.0));
            dev.clip_global_norm(&mut dev_g, Some(1.0)).unwrap();
            assert_eq!(
                dev.grad_norm().unwrap().to_bits(),
                norm.to_bits(),
                "{cfg:?} step {step}"
            );
            twin::update(
                cfg,
                &layout,
                &mut cpu_p,
                &cpu_g,
                &mut cpu_states,
                step,
                1e-2,
            );
            dev.update(&mut dev_p, &dev_g, 1e-2).unwrap();
        }
        let got = stream.clone_dtoh(&dev_p).unwrap();
        let differ = got
            .iter()
            .zip(&cpu_p)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "{cfg:?}: {differ} of {} weights differ",
            got.len()
        );
        assert_eq!(
            dev.states().unwrap(),
            cpu_states,
            "{cfg:?}: optimizer state"
        );
    }
}

#[test]
#[cfg_attr(
    not(t5mix_gpu),
    ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it on the device machine"
)]
fn rms_norm_on_the_gpu_equals_the_cpu_norm_bit_for_bit() {
    use t5mix_trainer::device::norm::{cpu_backward, cpu_forward, weight_blocks, DeviceNorm};
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    let norm = DeviceNorm::new(stream.clone(), false).unwrap();
    // t5-v1_1-small's width and a width with a tail past the lanes
    for (rows, d) in [(4096, 512), (150, 72)] {
        let mut seed = 5u64;
        let x = values(&mut seed, rows * d, 2.0);
        let w = values(&mut seed, d, 2.0);
        let g = values(&mut seed, rows * d, 0.1);
        let (o, inv) = cpu_forward(&x, &w, 1e-6);
        let (mut dx, mut dw) = (values(&mut seed, rows * d, 0.1), values(&mut seed, d, 0.1));
        let (dx0, dw0) = (dx.clone(), dw.clone());
        cpu_backward(&x, &g, &inv, &w, &mut dx, &mut dw);
        let up = |v: &[f32]| stream.clone_htod(v).unwrap();
        let (gx, gw, gg) = (up(&x), up(&w), up(&g));
        let (mut go, mut ginv) = (up(&vec![0.0; rows * d]), up(&vec![0.0; rows]));
        norm.forward(&gx, &gw, &mut go, &mut ginv, rows, d, 1e-6)
            .unwrap();
        let (mut gdx, mut gdw) = (up(&dx0), up(&dw0));
        let mut partials = up(&vec![0.0; weight_blocks(rows) * d]);
        norm.backward(
            &gx,
            &gg,
            &ginv,
            &gw,
            &mut gdx,
            (&mut gdw, &mut partials),
            rows,
            d,
        )
        .unwrap();
        let down = |s: &cudarc::driver::CudaSlice<f32>| stream.clone_dtoh(s).unwrap();
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same(&down(&go), &o), "{rows}x{d}: output");
        assert!(same(&down(&ginv), &inv), "{rows}x{d}: inv");
        assert!(same(&down(&gdx), &dx), "{rows}x{d}: input gradient");
        assert!(same(&down(&gdw), &dw), "{rows}x{d}: weight gradient");
    }
}

#[test]
#[cfg_attr(
    not(t5mix_gpu),
    ignore = "needs an NVIDIA GPU: scripts/gpu-check.sh runs it on the device machine"
)]
fn loss_on_the_gpu_equals_the_cpu_loss() {
    use t5mix_trainer::device::loss::{cpu_backward, cpu_forward, DeviceLoss, LossSettings};
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    let loss = DeviceLoss::new(stream.clone(), false).unwrap();
    // t5-v1_1's vocabulary (a tail past the lanes: 32128 = 2008 * 16, so
    // also 1000), with and without label smoothing
    for (n, v) in [(912, 32128), (40, 1000)] {
        for smoothing in [0.0, 0.1] {
            let s = LossSettings { z: 1e-4, smoothing };
            let mut seed = 13u64;
            let x = values(&mut seed, n * v, 16.0);
            let targets: Vec<usize> = (0..n).map(|i| (i * 7919) % v).collect();
            let weights: Vec<f32> = (0..n).map(|i| (i % 5 != 2) as u32 as f32).collect();
            let g_out = values(&mut seed, n, 1.0);
            let rows = cpu_forward(&x, v, &targets, &weights, s);
            let mut d = values(&mut seed, n * v, 0.01);
            let d0 = d.clone();
            cpu_backward(&x, v, &targets, &weights, (&g_out, &rows), s, &mut d);
            let t32: Vec<u32> = targets.iter().map(|&t| t as u32).collect();
            let (gx, gt, gw) = (
                stream.clone_htod(&x).unwrap(),
                stream.clone_htod(&t32).unwrap(),
                stream.clone_htod(&weights).unwrap(),
            );
            let mut grows = stream.clone_htod(&vec![0f32; 4 * n]).unwrap();
            loss.forward(&gx, (n, v), &gt, &gw, s, &mut grows).unwrap();
            let got_rows = stream.clone_dtoh(&grows).unwrap();
            let want_rows: Vec<f32> = rows.iter().flatten().copied().collect();
            // log-sum-exp may differ in its last bit on a rounding tie
            // (CUDA's and the host's f64 log); everything else is exact
            // when it does not
            let lse_ties = (0..n)
                .filter(|&i| got_rows[4 * i + 3].to_bits() != want_rows[4 * i + 3].to_bits())
                .count();
            assert!(
                lse_ties * 100 <= n,
                "{n}x{v}: {lse_ties} rows' log-sum-exp differ"
            );
            if lse_ties == 0 {
                assert_eq!(got_rows, want_rows, "{n}x{v} smoothing {smoothing}");
                let gg = stream.clone_htod(&g_out).unwrap();
                let mut gd = stream.clone_htod(&d0).unwrap();
                loss.backward(&gx, (n, v), &gt, &gw, (&gg, &grows), s, &mut gd)
                    .unwrap();
                let got = stream.clone_dtoh(&gd).unwrap();
                let differ = got
                    .iter()
                    .zip(&d)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(differ, 0, "{n}x{v} smoothing {smoothing}: gradient");
            }
        }
    }
}
