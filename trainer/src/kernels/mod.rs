//! Fused, multi-threaded CPU kernels for the operations where dfdx's
//! element-wise CPU kernels (one thread, one pass per primitive) dominate a
//! training step: the feed-forward (its products in OpenBLAS, with ReLU or
//! gated GELU `gelu_new(a) · b` and dropout), RMS norm, attention, residual
//! adds, dropout and the cross-entropy + z-loss over the vocabulary. Each
//! records its own backward operation on the tape. On other devices (CUDA)
//! the same functions fall back to the composition of dfdx primitives, so
//! the model code is device-generic.
//!
//! Profile that motivated them (tiny config, batch 16, 128/32, 2 threads):
//! gated GELU forward+backward ~0.5 s of a 2.6 s step (libm `tanhf` on one
//! thread), the loss over 512 × 32128 logits ~0.25 s.

use std::any::Any;

use dfdx::prelude::*;
use rayon::prelude::*;

static FUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Switches the fused CPU kernels on or off (on by default); set through
/// [`crate::Runtime::install`].
pub(crate) fn set_fused_kernels(on: bool) {
    FUSED.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn fused() -> bool {
    FUSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `$on_cpu!(tape)`, which returns, when the fused kernels are on and
/// `$ty` (a tensor type of shape `$s`, generic over device and tape) is the
/// CPU tensor with an `OwnedTape<f32, Cpu>` or a `NoneTape`.
macro_rules! on_cpu_tapes {
    ($s:ty, $ty:ty, $on_cpu:ident) => {
        let this = std::any::TypeId::of::<$ty>();
        if fused() && this == std::any::TypeId::of::<Tensor<$s, f32, Cpu, OwnedTape<f32, Cpu>>>() {
            $on_cpu!(OwnedTape<f32, Cpu>);
        }
        if fused() && this == std::any::TypeId::of::<Tensor<$s, f32, Cpu, NoneTape>>() {
            $on_cpu!(NoneTape);
        }
    };
}

/// In a fused kernel's backward op: allocates the gradients of the input
/// ghosts, then gives the output's gradient as a slice apart from `grads`
/// (`?` on errors). The kernel then writes the inputs' gradients while
/// reading it: distinct buffers that stay in place, since no entry is
/// inserted after the allocations.
macro_rules! output_grad {
    ($grads:ident, $out:expr, [$($input:expr),+]) => {{
        $($grads.try_alloc_for($input)?;)+
        let g: *const [f32] = $grads.get_or_alloc_mut($out)?.as_slice();
        // SAFETY: as above: `g` is not moved or freed while the op runs.
        unsafe { &*g }
    }};
}

/// Rows of work per rayon task.
const CHUNK: usize = 4096;

/// The values of a contiguous CPU tensor, borrowed: no copy (dfdx's
/// `as_vec` walks an index iterator, ~2.7 ns per value here: 22 ms for the
/// embedding, 44 ms for a step's logits). Holds the tensor (its buffer is
/// reference-counted), so it can move into a backward closure.
struct Values<S: Shape> {
    t: Tensor<S, f32, Cpu>,
    len: usize,
}

impl<S: Shape> std::ops::Deref for Values<S> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        if self.len == 0 {
            return &[];
        }
        let first: *const f32 = &self.t[S::Concrete::default()];
        // SAFETY: `values` checked that the tensor has standard strides
        // (it is contiguous) and that its last element, bounds-checked by
        // `Index`, lies `len - 1` values after the first: the `len` values
        // are one run of the tensor's buffer, alive while `self.t` is.
        unsafe { std::slice::from_raw_parts(first, self.len) }
    }
}

/// Borrows the values of a CPU tensor made contiguous by the caller.
fn values<S: Shape>(t: &Tensor<S, f32, Cpu>) -> Values<S> {
    let len = t.shape().num_elements();
    if len > 0 {
        let dims = t.shape().concrete();
        let mut last = S::Concrete::default();
        let mut stride = 1usize;
        let mut standard = true;
        for i in (0..S::NUM_DIMS).rev() {
            last[i] = dims[i] - 1;
            let mut one = S::Concrete::default();
            one[i] = 1.min(dims[i] - 1);
            let step = (&t[one] as *const f32 as usize)
                .wrapping_sub(&t[S::Concrete::default()] as *const f32 as usize)
                / 4;
            standard &= dims[i] == 1 || step == stride;
            stride *= dims[i];
        }
        let span = (&t[last] as *const f32 as usize)
            .wrapping_sub(&t[S::Concrete::default()] as *const f32 as usize)
            / 4;
        assert!(
            standard && span == len - 1,
            "fused kernel input is not contiguous"
        );
    }
    Values { t: t.clone(), len }
}

/// `t.copy_from(src)`, on the CPU in parallel chunks.
pub fn copy_from<D: Device<f32>>(t: &mut Tensor<(usize, usize), f32, D>, src: &[f32]) {
    let any: &mut dyn Any = t;
    let Some(t) = any.downcast_mut::<Tensor<(usize, usize), f32, Cpu>>() else {
        let t = any
            .downcast_mut::<Tensor<(usize, usize), f32, D>>()
            .expect("same type");
        return t.copy_from(src);
    };
    let n = t.shape().num_elements();
    assert_eq!(src.len(), n, "copied values");
    if n == 0 {
        return;
    }
    // checks contiguity and bounds (shares the buffer only for this check)
    drop(values(t));
    // unique buffer (IndexMut makes it so), standard strides (checked):
    // the n values are one run from the first
    let first = SyncPtr(&mut t[[0, 0]] as *mut f32);
    src.par_chunks(CHUNK * 16).enumerate().for_each(|(i, c)| {
        // SAFETY: chunk i of the n values, written by this task only
        unsafe {
            std::ptr::copy_nonoverlapping(c.as_ptr(), first.get().add(i * CHUNK * 16), c.len())
        }
    });
}

/// Moves a value to the concrete type `U` if it is that type.
fn cast<A: 'static, U: 'static>(a: A) -> Result<U, A> {
    let b: Box<dyn Any> = Box::new(a);
    match b.downcast::<U>() {
        Ok(u) => Ok(*u),
        Err(b) => Err(*b.downcast::<A>().expect("same type")),
    }
}

type Cpu3<T> = Tensor<(usize, usize, usize), f32, Cpu, T>;

/// In a function of two tensors `$a`, `$b` of shape `$s` (generic over
/// device and tape `D`, `T`): returns `$kernel` (of the CPU tensors `$ac`,
/// `$bc`) when they are CPU tensors and the fused kernels are on.
macro_rules! on_cpu_pair {
    ($a:ident, $b:ident, $s:ty, |$ac:ident, $bc:ident| $kernel:expr) => {
        macro_rules! on_cpu {
            ($tape:ty) => {{
                let $ac = cast::<_, Tensor<$s, f32, Cpu, $tape>>($a)
                    .ok()
                    .expect("checked type");
                let $bc = cast::<_, Tensor<$s, f32, Cpu, $tape>>($b)
                    .ok()
                    .expect("same device and tape");
                return cast($kernel).ok().expect("same type");
            }};
        }
        on_cpu_tapes!($s, Tensor<$s, f32, D, T>, on_cpu);
    };
}

type Cpu2<T> = Tensor<(usize, usize), f32, Cpu, T>;
type T2<D, T> = Tensor<(usize, usize), f32, D, T>;

/// A raw pointer that may cross threads: every task writes a disjoint part.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A new buffer of `n` values filled by `fill(i, chunk i)` over chunks of
/// `chunk` values in parallel: each chunk is cleared just before `fill`
/// writes it (in cache, on the task's core), not the whole buffer by
/// `calloc` on the calling thread first.
fn written(n: usize, chunk: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    written_with(n, chunk, |i, c| fill(i, zeroed(c)))
}

/// A new buffer of `n` values written by `fill(i, chunk i)` over chunks of
/// `chunk` values in parallel; `fill` must initialise all of its chunk (by
/// [`init_with`]), which it gets uninitialised.
fn written_with(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: `fill` initialised every chunk
    unsafe { out.set_len(n) };
    out
}

/// `c[j] = f(j)` for every `j`, as initialised values.
#[inline(always)]
fn init_with(c: &mut [std::mem::MaybeUninit<f32>], f: impl Fn(usize) -> f32) -> &mut [f32] {
    for (j, x) in c.iter_mut().enumerate() {
        x.write(f(j));
    }
    // SAFETY: every value of `c` was just initialised
    unsafe { &mut *(c as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
}

/// `c` zero-filled, as initialised values: a single vectorised pass over
/// memory the caller then overwrites (it keeps the writer on initialised
/// values), in cache when the writer follows at once.
fn zeroed(c: &mut [std::mem::MaybeUninit<f32>]) -> &mut [f32] {
    init_with(c, |_| 0.0)
}

mod attention;
mod elementwise;
mod lanes;
mod loss;
mod norm;
mod products;

pub(crate) use attention::mm;
pub use attention::{attention_cpu, AttnInputs};
pub use elementwise::{activation, add, gated_gelu, mul_mask};
pub use lanes::exp_fast;
pub(crate) use lanes::*;
pub(crate) use loss::LossRule;
pub use loss::{logits_loss_cpu, row_loss_cpu, Logits, RowLoss};
pub use norm::rms_norm_cpu;
pub(crate) use norm::NORM_ROWS;
#[cfg(t5mix_openblas)]
use products::blas;
pub use products::{feed_forward_cpu, matmul_nt, uses_openblas, FfInputs};
