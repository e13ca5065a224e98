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

/// Switches the fused CPU kernels on or off (on by default). Off, the CPU
/// runs the same dfdx compositions as other devices: tests compare the two.
pub fn set_fused_kernels(on: bool) {
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

/// `e^x` without a libm call, so that loops over it vectorise: `x = k·ln 2
/// + r` with `|r| ≤ ln 2 / 2`, `e^r` by its degree-6 Taylor polynomial
/// (truncation < 1.3e-7 relative), `2^k` from the exponent bits. Within
/// 3 ulp of `f32::exp` on `[-87.3, 88.3]` (tested); inputs are clamped to
/// that range, so e.g. `exp_fast(-200.0)` is 1.2e-38 rather than 0.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // round to nearest by the 1.5·2^23 trick (no libm `roundf`)
    const SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.376_26);
    let t = x * LOG2E + SHIFT;
    let k = t - SHIFT;
    // k as an integer from the low mantissa bits of t (no float → int cast)
    let ki = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((ki + 127) << 23) as u32)
}

/// The element-wise loops of the fused kernels, compiled for each SIMD
/// level (AVX-512, AVX2 + FMA, …) and picked at run time: the default
/// x86-64 target has only SSE2 (a `-C target-cpu=native` build of the tiny
/// step was 7% faster on one thread). No value depends on the level: the
/// loops are the same IEEE operations in the same order, only wider.
mod simd {
    use super::{exp_fast, gelu_and_grad, lane_dot, lane_sum, row_max, sum_exp, LANES};

    simd_fns! {
        /// `o = gelu_new(x) · y`.
        pub(super) fn gelu_gate(o: &mut [f32], x: &[f32], y: &[f32]) {
            let n = o.len();
            let (x, y) = (&x[..n], &y[..n]);
            for i in 0..n {
                o[i] = gelu_and_grad(x[i]).0 * y[i];
            }
        }

        /// `d += g · gelu_new'(x) · y`.
        pub(super) fn gelu_gate_grad_a(d: &mut [f32], x: &[f32], y: &[f32], g: &[f32]) {
            let n = d.len();
            let (x, y, g) = (&x[..n], &y[..n], &g[..n]);
            for i in 0..n {
                d[i] += g[i] * gelu_and_grad(x[i]).1 * y[i];
            }
        }

        /// `d += g · gelu_new(x)`.
        pub(super) fn gelu_gate_grad_b(d: &mut [f32], x: &[f32], g: &[f32]) {
            let n = d.len();
            let (x, g) = (&x[..n], &g[..n]);
            for i in 0..n {
                d[i] += g[i] * gelu_and_grad(x[i]).0;
            }
        }

        /// The gated activation's backward, assigned: from `g` (the
        /// gradient of `gelu_new(a) · b`), `g ← g · gelu_new'(a) · b`
        /// and `gb = g · gelu_new(a)`.
        pub(super) fn gelu_gate_grads(g: &mut [f32], gb: &mut [f32], a: &[f32], b: &[f32]) {
            let n = g.len();
            let (gb, a, b) = (&mut gb[..n], &a[..n], &b[..n]);
            for i in 0..n {
                let (v, dv) = gelu_and_grad(a[i]);
                gb[i] = g[i] * v;
                g[i] = g[i] * dv * b[i];
            }
        }

        /// ReLU's backward from its output `h`, in place: `g` where `h > 0`.
        pub(super) fn relu_grad(g: &mut [f32], h: &[f32]) {
            let h = &h[..g.len()];
            for i in 0..g.len() {
                g[i] = if h[i] > 0.0 { g[i] } else { 0.0 };
            }
        }

        /// RMS norm of rows of `w.len()` values: `o = x · inv · w`, `inv` per row.
        pub(super) fn norm_rows(o: &mut [f32], x: &[f32], inv: &mut [f32], w: &[f32], eps: f32) {
            let d = w.len();
            for ((o, x), i) in o.chunks_mut(d).zip(x.chunks(d)).zip(inv.iter_mut()) {
                let ms = lane_dot(x, x) / d as f32;
                *i = 1.0 / (ms + eps).sqrt();
                for j in 0..d {
                    o[j] = x[j] * *i * w[j];
                }
            }
        }

        /// The norm's backward over rows: `dx = i·w·g − x·i³/d·Σₖ gₖwₖxₖ` added,
        /// and the weight gradient's `Σ g·x·i` added to `gw`.
        pub(super) fn norm_rows_grad(
            dx: &mut [f32],
            x: &[f32],
            g: &[f32],
            inv: &[f32],
            w: &[f32],
            gw: &mut [f32],
        ) {
            let d = w.len();
            for (((dx, x), g), &i) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)).zip(inv) {
                // Σ g·w·x in lanes, as `lane_dot`
                let mut acc = [0f32; LANES];
                let lanes = g
                    .chunks_exact(LANES)
                    .zip(x.chunks_exact(LANES))
                    .zip(w.chunks_exact(LANES))
                    .zip(gw.chunks_exact_mut(LANES));
                for (((g, x), w), gw) in lanes {
                    for l in 0..LANES {
                        acc[l] += g[l] * w[l] * x[l];
                        gw[l] += g[l] * x[l] * i;
                    }
                }
                let mut dot: f32 = acc.iter().sum();
                for j in d - d % LANES..d {
                    dot += g[j] * w[j] * x[j];
                    gw[j] += g[j] * x[j] * i;
                }
                let c = dot * i * i * i / d as f32;
                for j in 0..d {
                    dx[j] += i * w[j] * g[j] - x[j] * c;
                }
            }
        }

        /// Softmax of each row of `s` values, in place.
        pub(super) fn softmax_rows(p: &mut [f32], s: usize) {
            for row in p.chunks_mut(s) {
                let m = row_max(row);
                row.iter_mut().for_each(|x| *x = exp_fast(*x - m));
                let inv = 1.0 / lane_sum(row);
                row.iter_mut().for_each(|x| *x *= inv);
            }
        }

        /// Softmax backward over rows: `p ← p ⊙ (dp − rowsum(dp ⊙ p))`.
        pub(super) fn softmax_grad_rows(p: &mut [f32], dp: &[f32], s: usize) {
            for (drow, prow) in dp.chunks(s).zip(p.chunks_mut(s)) {
                let dot = lane_dot(drow, prow);
                for j in 0..s {
                    prow[j] *= drow[j] - dot;
                }
            }
        }

        /// A row's max and `Σ exp(x − max)` (in f64).
        pub(super) fn max_and_sum_exp(row: &[f32]) -> (f32, f64) {
            let m = row_max(row);
            (m, sum_exp(row, m))
        }

        /// `d += scale · e^(x − lse) − shift`.
        pub(super) fn add_loss_grad(d: &mut [f32], x: &[f32], scale: f32, shift: f32, lse: f32) {
            let x = &x[..d.len()];
            for j in 0..d.len() {
                d[j] += scale * exp_fast(x[j] - lse) - shift;
            }
        }

        /// `x ← scale · e^(x − lse) − shift`.
        pub(super) fn loss_grad_in_place(x: &mut [f32], scale: f32, shift: f32, lse: f32) {
            for v in x.iter_mut() {
                *v = scale * exp_fast(*v - lse) - shift;
            }
        }
    }
}

/// Lanes of the vectorised reductions below.
const LANES: usize = 16;

/// `max(x)` (`-inf` for an empty slice) in independent lanes, so that it
/// vectorises (a plain fold is a serial chain).
#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    acc.iter().fold(tail, |a, &b| a.max(b))
}

/// `Σ x` in f32 lanes.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `Σ a·b` in f32 lanes (a plain `sum` of products is one serial chain of
/// additions: ~4 cycles per element).
#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let b = &b[..a.len()];
    let mut acc = [0f32; LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ exp(x − m)` with the exponentials in f32 lanes and the sum in f64.
#[inline(always)]
fn sum_exp(x: &[f32], m: f32) -> f64 {
    let mut acc = [0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            acc[l] += exp_fast(c[l] - m) as f64;
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&a| exp_fast(a - m) as f64)
        .sum();
    acc.iter().sum::<f64>() + tail
}

/// `tanh` from one `exp`: accurate to a few ulp, much faster than libm's `tanhf`.
#[inline(always)]
fn tanh_fast(x: f32) -> f32 {
    // tanh(±9) rounds to ±1 in f32: clamping (no branch) keeps e finite
    let x = x.clamp(-9.0, 9.0);
    let e = exp_fast(2.0 * x);
    (e - 1.0) / (e + 1.0)
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044715;

/// HF's `gelu_new` and its derivative.
#[inline(always)]
fn gelu_and_grad(x: f32) -> (f32, f32) {
    let inner = SQRT_2_OVER_PI * (x + GELU_C * x * x * x);
    let t = tanh_fast(inner);
    let y = 0.5 * x * (1.0 + t);
    let dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
    let dy = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner;
    (y, dy)
}

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

/// `a + b` (the residual connections): dfdx's add runs forward and backward
/// on one thread, ~1% of a t5-v1_0-small step's CPU time with the other core idle.
pub fn add<D: Device<f32>, T: Tape<f32, D> + 'static>(
    a: Tensor<(usize, usize, usize), f32, D, T>,
    b: Tensor<(usize, usize, usize), f32, D, T>,
) -> Tensor<(usize, usize, usize), f32, D, T> {
    on_cpu_pair!(a, b, (usize, usize, usize), |a, b| add_cpu(a, b));
    a + b
}

fn add_cpu<T: Tape<f32, Cpu>>(a: Cpu3<T>, b: Cpu3<T>) -> Cpu3<T> {
    assert_eq!(a.shape(), b.shape(), "added tensors' shapes");
    let (a, ta) = a.contiguous().split_tape();
    let (b, tb) = b.contiguous().split_tape();
    let mut tape = ta.merge(tb);
    let (av, bv) = (values(&a), values(&b));
    let out = written(av.len(), CHUNK, |i, o| {
        let (x, y) = (&av[i * CHUNK..], &bv[i * CHUNK..]);
        for j in 0..o.len() {
            o[j] = x[j] + y[j];
        }
    });
    let out = a.device().tensor_from_vec(out, *a.shape());
    if T::OWNS_TAPE {
        let (ga, gb, go) = (a.ghost(), b.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g_out = output_grad!(grads, &go, [&ga, &gb]);
            // one input at a time: `a` and `b` may be the same tensor
            for g in [&ga, &gb] {
                grads
                    .get_or_alloc_mut(g)?
                    .par_chunks_mut(CHUNK)
                    .zip(g_out.par_chunks(CHUNK))
                    .for_each(|(d, g)| d.iter_mut().zip(g).for_each(|(d, g)| *d += g));
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// `x ⊙ mask` for a constant mask of `x`'s size in standard order (dropout):
/// one parallel pass each way on the CPU, dfdx's multiply elsewhere.
pub fn mul_mask<S: Shape, D: Device<f32>, T: Tape<f32, D> + 'static>(
    x: Tensor<S, f32, D, T>,
    mask: Vec<f32>,
) -> Tensor<S, f32, D, T> {
    macro_rules! on_cpu {
        ($tape:ty) => {{
            let xc = cast::<_, Tensor<S, f32, Cpu, $tape>>(x)
                .ok()
                .expect("checked type");
            return cast(mul_mask_cpu(xc, mask)).ok().expect("same type");
        }};
    }
    on_cpu_tapes!(S, Tensor<S, f32, D, T>, on_cpu);
    let shape = *x.shape();
    let m = x.device().tensor_from_vec(mask, shape);
    x * m
}

fn mul_mask_cpu<S: Shape, T: Tape<f32, Cpu>>(
    x: Tensor<S, f32, Cpu, T>,
    mask: Vec<f32>,
) -> Tensor<S, f32, Cpu, T> {
    let (x, mut tape) = x.contiguous().split_tape();
    let xv = values(&x);
    assert_eq!(xv.len(), mask.len(), "mask size");
    let out = written(xv.len(), CHUNK, |i, o| {
        let (x, m) = (&xv[i * CHUNK..], &mask[i * CHUNK..]);
        for j in 0..o.len() {
            o[j] = x[j] * m[j];
        }
    });
    let out = x.device().tensor_from_vec(out, *x.shape());
    if T::OWNS_TAPE {
        let (gx, go) = (x.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g_out = output_grad!(grads, &go, [&gx]);
            grads
                .get_or_alloc_mut(&gx)?
                .par_chunks_mut(CHUNK)
                .zip(g_out.par_chunks(CHUNK))
                .zip(mask.par_chunks(CHUNK))
                .for_each(|((d, g), m)| {
                    for j in 0..d.len() {
                        d[j] += g[j] * m[j];
                    }
                });
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// `gelu_new(a) · b`, the gated feed-forward's hidden activation.
pub fn gated_gelu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    a: Tensor<(usize, usize, usize), f32, D, T>,
    b: Tensor<(usize, usize, usize), f32, D, T>,
) -> Tensor<(usize, usize, usize), f32, D, T> {
    on_cpu_pair!(a, b, (usize, usize, usize), |a, b| gated_gelu_cpu(a, b));
    a.fast_gelu() * b
}

fn gated_gelu_cpu<T: Tape<f32, Cpu>>(a: Cpu3<T>, b: Cpu3<T>) -> Cpu3<T> {
    let (a, ta) = a.contiguous().split_tape();
    let (b, tb) = b.contiguous().split_tape();
    let mut tape = ta.merge(tb);
    let av = values(&a);
    let bv = values(&b);
    let out = written(av.len(), CHUNK, |i, o| {
        simd::gelu_gate(o, &av[i * CHUNK..], &bv[i * CHUNK..])
    });
    let out = a.device().tensor_from_vec(out, *a.shape());
    if T::OWNS_TAPE {
        let (ga, gb, go) = (a.ghost(), b.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g_out = output_grad!(grads, &go, [&ga, &gb]);
            let da = grads.get_or_alloc_mut(&ga)?;
            da.par_chunks_mut(CHUNK)
                .zip(av.par_chunks(CHUNK))
                .zip(bv.par_chunks(CHUNK))
                .zip(g_out.par_chunks(CHUNK))
                .for_each(|(((d, x), y), g)| simd::gelu_gate_grad_a(d, x, y, g));
            let db = grads.get_or_alloc_mut(&gb)?;
            db.par_chunks_mut(CHUNK)
                .zip(av.par_chunks(CHUNK))
                .zip(g_out.par_chunks(CHUNK))
                .for_each(|((d, x), g)| simd::gelu_gate_grad_b(d, x, g));
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// `x · wᵀ` for `x: [m, k]` and a weight stored `[n, k]` (dense layers, the
/// output layer). On the CPU, when the build found OpenBLAS, one `sgemm`
/// forward and two backward (OpenBLAS's AVX-512 kernels run the tiny model's
/// shapes at 150–183 GFLOP/s on 2 threads here, dfdx's `gemm` crate at
/// 113–143); otherwise dfdx's product.
pub fn matmul_nt<D: Device<f32>, T: Tape<f32, D> + 'static>(
    x: Tensor<(usize, usize), f32, D, T>,
    w: Tensor<(usize, usize), f32, D, T>,
) -> Tensor<(usize, usize), f32, D, T> {
    #[cfg(t5mix_openblas)]
    {
        on_cpu_pair!(x, w, (usize, usize), |x, w| blas::matmul_nt(x, w));
    }
    x.matmul(w.permute::<_, Axes2<1, 0>>())
}

type T2<D, T> = Tensor<(usize, usize), f32, D, T>;
/// The inputs handed back when the fused feed-forward does not apply.
pub type FfInputs<D, T> = Box<(T2<D, T>, Vec<T2<D, T>>, T2<D, T>, Option<Vec<f32>>)>;

/// The feed-forward `act(x · wiᵀ) ⊙ dropout · woᵀ` for `x: [m, d]`, `wi`
/// one weight `[f, d]` (ReLU, v1.0) or two (`gelu_new(x · wi₀ᵀ) ⊙ x · wi₁ᵀ`,
/// v1.1), `wo: [d, f]` and an optional dropout mask `[m, f]` on the hidden
/// activation. On the CPU with OpenBLAS, one kernel whose backward keeps the
/// hidden gradient in a private buffer, written once by its product (a
/// dfdx tensor's gradient is zero-filled, then added into, then masked
/// into another buffer: three extra passes over the step's largest
/// activations). Otherwise the inputs come back for the composition.
pub fn feed_forward_cpu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    x: T2<D, T>,
    wi: Vec<T2<D, T>>,
    wo: T2<D, T>,
    dropout: Option<Vec<f32>>,
) -> Result<T2<D, T>, FfInputs<D, T>> {
    #[cfg(t5mix_openblas)]
    {
        macro_rules! on_cpu {
            ($tape:ty) => {{
                let x = cast::<_, Cpu2<$tape>>(x).ok().expect("checked type");
                let wi = wi
                    .into_iter()
                    .map(|w| cast::<_, Cpu2<$tape>>(w).ok().expect("same type"))
                    .collect();
                let wo = cast::<_, Cpu2<$tape>>(wo).ok().expect("same type");
                return Ok(cast(blas::feed_forward(x, wi, wo, dropout))
                    .ok()
                    .expect("same type"));
            }};
        }
        on_cpu_tapes!((usize, usize), T2<D, T>, on_cpu);
    }
    Err(Box::new((x, wi, wo, dropout)))
}

/// Whether the CPU matrix products run in OpenBLAS (found at build time).
pub fn uses_openblas() -> bool {
    cfg!(t5mix_openblas)
}

#[cfg(t5mix_openblas)]
mod blas {
    use super::{Cpu2, SyncPtr as Ptr};
    use dfdx::prelude::*;
    use rayon::prelude::*;
    use std::os::raw::c_int;

    const ROW_MAJOR: c_int = 101;
    const NO_TRANS: c_int = 111;
    const TRANS: c_int = 112;

    extern "C" {
        fn cblas_sgemm(
            order: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
        fn openblas_set_num_threads(n: c_int);
    }

    /// The backward of `y = x · wᵀ` (`x: [m, k]`, `w: [n, k]`) from `g = dy`
    /// `[m, n]`: `dx += g·w`, `dw += gᵀ·x`, into the gradients of the ghosts
    /// (in a backward op: `?` on errors). A macro: dfdx's ghost type and its
    /// trait are private to it.
    macro_rules! nt_backward {
        ($grads:ident, $g:expr, ($m:expr, $n:expr, $k:expr), ($x:expr, $gx:expr), ($w:expr, $gw:expr)) => {
            let (m, n, k) = ($m, $n, $k);
            sgemm(
                false,
                false,
                (m, k, n),
                $g,
                $w,
                1.0,
                $grads.get_or_alloc_mut($gx)?,
            );
            sgemm(
                true,
                false,
                (n, k, m),
                $g,
                $x,
                1.0,
                $grads.get_or_alloc_mut($gw)?,
            );
        };
    }

    /// Blocks of an inner-dimension split.
    const KSPLIT: usize = 2;
    static ONE_THREAD: std::sync::Once = std::sync::Once::new();

    /// One single-threaded row-major `C = op(A)·op(B) + beta·C` call.
    ///
    /// # Safety
    /// The pointers address matrices of the given sizes and leading dimensions.
    #[allow(clippy::too_many_arguments)]
    unsafe fn call(
        (ta, tb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        beta: f32,
        c: *mut f32,
        ldc: usize,
    ) {
        let t = |x: bool| if x { TRANS } else { NO_TRANS };
        cblas_sgemm(
            ROW_MAJOR,
            t(ta),
            t(tb),
            m as c_int,
            n as c_int,
            k as c_int,
            1.0,
            a,
            lda as c_int,
            b,
            ldb as c_int,
            beta,
            c,
            ldc as c_int,
        )
    }

    /// Row-major `C = op(A)·op(B) + beta·C` with `C: [m, n]`, `op(A): [m, k]`,
    /// `op(B): [k, n]`, one block per rayon thread, each one single-threaded
    /// OpenBLAS call (OpenBLAS's own threads would spin between calls and
    /// take cores from the rayon kernels). Each call packs its whole share of
    /// A and B, so the blocks split the dimension that repacks the least:
    /// C's rows (B packed once per block), C's columns (A packed once per
    /// block; the logits' 32128-row weight), or the inner dimension when it
    /// dwarfs both (partial products summed in block order: the result does
    /// not depend on the thread count, since the blocks are fixed by shape).
    pub(super) fn sgemm(
        ta: bool,
        tb: bool,
        dims: (usize, usize, usize),
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: &mut [f32],
    ) {
        assert!(c.len() >= dims.0 * dims.1);
        // SAFETY: `c` holds m·n values.
        unsafe { sgemm_raw(ta, tb, dims, a, b, beta, c.as_mut_ptr()) }
    }

    /// `op(A)·op(B)` into a new buffer (written once: no zero-filling).
    pub(super) fn sgemm_new(
        ta: bool,
        tb: bool,
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        b: &[f32],
    ) -> Vec<f32> {
        if k == 0 {
            return vec![0f32; m * n];
        }
        let mut c = Vec::with_capacity(m * n);
        // SAFETY: `c` has room for m·n values; with beta 0 and k ≥ 1,
        // OpenBLAS writes each of them (and reads none before writing).
        unsafe {
            sgemm_raw(ta, tb, (m, n, k), a, b, 0.0, c.as_mut_ptr());
            c.set_len(m * n);
        }
        c
    }

    /// [`sgemm`] into `c`, which must hold m·n values (readable unless beta
    /// is 0).
    unsafe fn sgemm_raw(
        ta: bool,
        tb: bool,
        (m, n, k): (usize, usize, usize),
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: *mut f32,
    ) {
        assert!(a.len() >= m * k && b.len() >= k * n);
        ONE_THREAD.call_once(|| {
            // SAFETY: sets OpenBLAS's thread count.
            unsafe { openblas_set_num_threads(1) }
        });
        let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
        let p = rayon::current_num_threads().max(1);
        // values packed when q blocks split C's rows (A once, B q times) or
        // its columns (A q times, B once)
        let packed = |q: usize| (m * k + q * k * n, q * m * k + k * n);
        let (by_rows, by_cols) = packed(p);
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), Ptr(c));
        let (ap, bp) = (Ptr(ap as *mut f32), Ptr(bp as *mut f32));
        // split the inner dimension into KSPLIT blocks (fixed, so that the
        // rounding does not depend on the thread count): A and B packed
        // once, plus the partial products written and summed
        let by_inner = m * k + k * n + 2 * KSPLIT * m * n;
        let (rows_k, cols_k) = packed(KSPLIT);
        if by_inner < rows_k.min(cols_k) {
            let kb = k.div_ceil(KSPLIT);
            // written with beta 0 by their blocks
            let mut parts = Vec::with_capacity((KSPLIT - 1) * m * n);
            let pp = Ptr(parts.as_mut_ptr());
            (0..KSPLIT).into_par_iter().for_each(|i| {
                let (ap, bp, cp, pp) = (ap, bp, cp, pp);
                let k0 = (i * kb).min(k);
                let kk = kb.min(k - k0);
                // op(A)'s columns k0.. and op(B)'s rows k0..
                let a0 = if ta { k0 * lda } else { k0 };
                let b0 = if tb { k0 } else { k0 * ldb };
                // block 0 adds into C, the others write their own partial C
                let (out, beta) = match i {
                    0 => (cp.0, beta),
                    // SAFETY: part i − 1 of `parts`, m·n values
                    _ => (unsafe { pp.0.add((i - 1) * m * n) }, 0.0),
                };
                // SAFETY: the blocks read inside the sizes checked above and
                // write distinct m × n outputs.
                unsafe {
                    call(
                        (ta, tb),
                        (m, n, kk),
                        ap.0.add(a0),
                        lda,
                        bp.0.add(b0),
                        ldb,
                        beta,
                        out,
                        n,
                    )
                }
            });
            // SAFETY: every block wrote its m·n values
            let c = unsafe {
                parts.set_len((KSPLIT - 1) * m * n);
                std::slice::from_raw_parts_mut(c, m * n)
            };
            for part in parts.chunks(m * n) {
                c.par_chunks_mut(super::CHUNK)
                    .zip(part.par_chunks(super::CHUNK))
                    .for_each(|(c, p)| c.iter_mut().zip(p).for_each(|(c, p)| *c += p));
            }
            return;
        }
        if by_rows <= by_cols {
            let rows = m.div_ceil(p).next_multiple_of(16).max(16);
            (0..m.div_ceil(rows)).into_par_iter().for_each(|i| {
                let (ap, bp, cp) = (ap, bp, cp);
                let r0 = i * rows;
                let mb = rows.min(m - r0);
                // op(A)'s rows r0.. : A's rows (no transpose) or columns
                let a0 = if ta { r0 } else { r0 * lda };
                // SAFETY: block i covers C's rows r0..r0+mb, inside the sizes checked above.
                unsafe {
                    call(
                        (ta, tb),
                        (mb, n, k),
                        ap.0.add(a0),
                        lda,
                        bp.0,
                        ldb,
                        beta,
                        cp.0.add(r0 * n),
                        n,
                    )
                }
            });
        } else {
            let cols = n.div_ceil(p).next_multiple_of(16).max(16);
            (0..n.div_ceil(cols)).into_par_iter().for_each(|j| {
                let (ap, bp, cp) = (ap, bp, cp);
                let c0 = j * cols;
                let nb = cols.min(n - c0);
                // op(B)'s columns c0.. : B's columns (no transpose) or rows
                let b0 = if tb { c0 * ldb } else { c0 };
                // SAFETY: block j covers C's columns c0..c0+nb, inside the sizes checked above.
                unsafe {
                    call(
                        (ta, tb),
                        (m, nb, k),
                        ap.0,
                        lda,
                        bp.0.add(b0),
                        ldb,
                        beta,
                        cp.0.add(c0),
                        n,
                    )
                }
            });
        }
    }

    /// `x · wᵀ`.
    pub(super) fn matmul_nt<T: Tape<f32, Cpu>>(x: Cpu2<T>, w: Cpu2<T>) -> Cpu2<T> {
        let (x, tx) = x.contiguous().split_tape();
        let (w, tw) = w.contiguous().split_tape();
        let mut tape = tx.merge(tw);
        let ((m, k), n) = (*x.shape(), w.shape().0);
        assert_eq!(w.shape().1, k, "inner sizes");
        let (xv, wv) = (super::values(&x), super::values(&w));
        let out = sgemm_new(false, true, (m, n, k), &xv, &wv);
        let out = x.device().tensor_from_vec(out, (m, n));
        if T::OWNS_TAPE {
            let (gx, gw, go) = (x.ghost(), w.ghost(), out.ghost());
            tape.add_backward_op(move |grads| {
                let g_out = output_grad!(grads, &go, [&gx, &gw]);
                nt_backward!(grads, g_out, (m, n, k), (&xv, &gx), (&wv, &gw));
                Ok(())
            });
        }
        out.put_tape(tape)
    }

    /// See [`super::feed_forward_cpu`].
    pub(super) fn feed_forward<T: Tape<f32, Cpu>>(
        x: Cpu2<T>,
        wi: Vec<Cpu2<T>>,
        wo: Cpu2<T>,
        dropout: Option<Vec<f32>>,
    ) -> Cpu2<T> {
        assert!(matches!(wi.len(), 1 | 2), "one or two input weights");
        let gated = wi.len() == 2;
        let (x, mut tape) = x.contiguous().split_tape();
        let mut wis = Vec::with_capacity(wi.len());
        for w in wi {
            let (w, t) = w.contiguous().split_tape();
            tape = tape.merge(t);
            wis.push(w);
        }
        let (wo, t) = wo.contiguous().split_tape();
        let mut tape = tape.merge(t);
        let ((m, d), f) = (*x.shape(), wis[0].shape().0);
        for w in &wis {
            assert_eq!(*w.shape(), (f, d), "feed-forward input weight");
        }
        assert_eq!(*wo.shape(), (d, f), "feed-forward output weight");
        if let Some(mask) = &dropout {
            assert_eq!(mask.len(), m * f, "dropout mask size");
        }
        let xv = super::values(&x);
        let wiv: Vec<_> = wis.iter().map(super::values).collect();
        let wov = super::values(&wo);
        // Gated: both pre-activations are kept for the backward. ReLU: none;
        // its gradient passes where the hidden activation is positive
        // (dropout scales kept values by 1/keep > 0, and dropped ones have
        // no gradient either way).
        let pre: Vec<Vec<f32>> = if gated {
            wiv.iter()
                .map(|w| sgemm_new(false, true, (m, f, d), &xv, w))
                .collect()
        } else {
            Vec::new()
        };
        let hidden = if gated {
            super::written(m * f, super::CHUNK, |i, h| {
                let o = i * super::CHUNK;
                super::simd::gelu_gate(h, &pre[0][o..], &pre[1][o..]);
                if let Some(mask) = &dropout {
                    h.iter_mut().zip(&mask[o..]).for_each(|(h, k)| *h *= k);
                }
            })
        } else {
            let mut h = sgemm_new(false, true, (m, f, d), &xv, &wiv[0]);
            h.par_chunks_mut(super::CHUNK)
                .enumerate()
                .for_each(|(i, h)| match &dropout {
                    None => h.iter_mut().for_each(|h| *h = h.max(0.0)),
                    Some(mask) => {
                        let mask = &mask[i * super::CHUNK..];
                        h.iter_mut()
                            .zip(mask)
                            .for_each(|(h, k)| *h = h.max(0.0) * k)
                    }
                });
            h
        };
        let out = sgemm_new(false, true, (m, d, f), &hidden, &wov);
        let out = x.device().tensor_from_vec(out, (m, d));
        if T::OWNS_TAPE {
            let (gx, go, gwo) = (x.ghost(), out.ghost(), wo.ghost());
            let gwi: Vec<_> = wis.iter().map(|w| w.ghost()).collect();
            tape.add_backward_op(move |grads| {
                for w in &gwi {
                    grads.try_alloc_for(w)?;
                }
                let g_out = output_grad!(grads, &go, [&gx, &gwo]);
                // dwo += gᵀ·hidden
                let gw = grads.get_or_alloc_mut(&gwo)?;
                sgemm(true, false, (d, f, m), g_out, &hidden, 1.0, gw);
                // the hidden activation's gradient g·wo, then back through
                // dropout and the activation, in place (gated: the gate's
                // part in place, the linear part into `g_lin`)
                let mut g_hid = sgemm_new(false, false, (m, f, d), g_out, &wov);
                let mut g_lin = Vec::new();
                if gated {
                    g_lin.reserve_exact(m * f);
                    g_hid
                        .par_chunks_mut(super::CHUNK)
                        .zip(g_lin.spare_capacity_mut()[..m * f].par_chunks_mut(super::CHUNK))
                        .enumerate()
                        .for_each(|(i, (g, gl))| {
                            let o = i * super::CHUNK;
                            let gl = super::zeroed(gl);
                            if let Some(mask) = &dropout {
                                g.iter_mut().zip(&mask[o..]).for_each(|(g, k)| *g *= k);
                            }
                            super::simd::gelu_gate_grads(g, gl, &pre[0][o..], &pre[1][o..]);
                        });
                    // SAFETY: every chunk of the m·f values was initialised above
                    unsafe { g_lin.set_len(m * f) };
                } else {
                    g_hid
                        .par_chunks_mut(super::CHUNK)
                        .zip(hidden.par_chunks(super::CHUNK))
                        .enumerate()
                        .for_each(|(i, (g, h))| {
                            super::simd::relu_grad(g, h);
                            if let Some(mask) = &dropout {
                                let mask = &mask[i * super::CHUNK..];
                                g.iter_mut().zip(mask).for_each(|(g, k)| *g *= k);
                            }
                        });
                }
                // dx += Σ gᵢ·wiᵢ, dwiᵢ += gᵢᵀ·x
                for (g, (w, gw)) in [&g_hid, &g_lin].into_iter().zip(wiv.iter().zip(&gwi)) {
                    nt_backward!(grads, g, (m, f, d), (&xv, &gx), (w, gw));
                }
                Ok(())
            });
        }
        out.put_tape(tape)
    }

    /// See [`super::logits_loss_cpu`].
    pub(super) fn logits_loss<T: Tape<f32, Cpu>>(
        h: Cpu2<T>,
        w: Cpu2<T>,
        targets: &[usize],
        weights: &[f32],
        rule: super::LossRule,
    ) -> super::RowLoss<Cpu, T> {
        let (h, th) = h.contiguous().split_tape();
        let (w, tw) = w.contiguous().split_tape();
        let mut tape = th.merge(tw);
        let ((n, d), v) = (*h.shape(), w.shape().0);
        assert_eq!(w.shape().1, d, "inner sizes");
        let (hv, wv) = (super::values(&h), super::values(&w));
        let mut logits = sgemm_new(false, true, (n, v, d), &hv, &wv);
        let rows = rule.rows(&logits, v, targets, weights);
        let (losses, cross_entropy, z_loss) = super::LossRule::totals(&rows);
        let out = h.device().tensor_from_vec(losses, (n,));
        if T::OWNS_TAPE {
            let (gh, gw, go) = (h.ghost(), w.ghost(), out.ghost());
            let targets = targets.to_vec();
            let weights = weights.to_vec();
            tape.add_backward_op(move |grads| {
                let g_out = output_grad!(grads, &go, [&gh, &gw]);
                // the logits become their gradient, row by row
                logits.par_chunks_mut(v).enumerate().for_each(|(i, row)| {
                    let Some((scale, shift, target, l)) =
                        rule.grad(g_out[i] * weights[i], &rows[i])
                    else {
                        row.fill(0.0);
                        return;
                    };
                    super::simd::loss_grad_in_place(row, scale, shift, l);
                    row[targets[i]] -= target;
                });
                // dh += dlogits·w, dw += dlogitsᵀ·h
                nt_backward!(grads, &logits, (n, v, d), (&hv, &gh), (&wv, &gw));
                Ok(())
            });
        }
        super::RowLoss {
            loss: out.put_tape(tape),
            cross_entropy,
            z_loss,
        }
    }
}

/// T5's RMS norm over the last axis, `x · w / sqrt(mean(x²) + eps)`, for
/// `x: [b, s, d]` and the weight `w` stored `[d, 1]` or `[1, d]`; `Err`
/// gives the inputs back on other devices (the caller composes dfdx
/// primitives there). dfdx's composition is ~9 one-thread passes forward
/// and ~15 backward, each allocating its output.
#[allow(clippy::type_complexity)]
pub fn rms_norm_cpu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    x: Tensor<(usize, usize, usize), f32, D, T>,
    w: Tensor<(usize, usize), f32, D, T>,
    eps: f32,
) -> Result<
    Tensor<(usize, usize, usize), f32, D, T>,
    (
        Tensor<(usize, usize, usize), f32, D, T>,
        Tensor<(usize, usize), f32, D, T>,
    ),
> {
    macro_rules! on_cpu {
        ($tape:ty) => {{
            let xc = cast::<_, Cpu3<$tape>>(x).ok().expect("checked type");
            let wc = cast::<_, Cpu2<$tape>>(w)
                .ok()
                .expect("same device and tape");
            return Ok(cast(rms_norm_impl(xc, wc, eps)).ok().expect("same type"));
        }};
    }
    on_cpu_tapes!((usize, usize, usize), Tensor<(usize, usize, usize), f32, D, T>, on_cpu);
    Err((x, w))
}

/// Rows per rayon task in the norm.
const NORM_ROWS: usize = 64;

fn rms_norm_impl<T: Tape<f32, Cpu>>(x: Cpu3<T>, w: Cpu2<T>, eps: f32) -> Cpu3<T> {
    let (x, tx) = x.contiguous().split_tape();
    let (w, tw) = w.contiguous().split_tape();
    let mut tape = tx.merge(tw);
    let d = x.shape().2;
    let xv = values(&x);
    let wv = values(&w);
    assert_eq!(wv.len(), d, "norm weight size");
    let rows = xv.len() / d.max(1);
    let mut inv = vec![0f32; rows];
    let mut out = vec![0f32; xv.len()];
    out.par_chunks_mut(d * NORM_ROWS)
        .zip(xv.par_chunks(d * NORM_ROWS))
        .zip(inv.par_chunks_mut(NORM_ROWS))
        .for_each(|((o, x), iv)| {
            simd::norm_rows(o, x, iv, &wv, eps);
        });
    let out = x.device().tensor_from_vec(out, *x.shape());
    if T::OWNS_TAPE {
        let (gx, gw, go) = (x.ghost(), w.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g_out = output_grad!(grads, &go, [&gx, &gw]);
            let dx = grads.get_or_alloc_mut(&gx)?;
            // dx = i·w·g − x·i³/d·Σₖ gₖwₖxₖ; per block, the weight gradient's
            // partial sums Σ g·x·i (added in block order: deterministic)
            let partial: Vec<Vec<f32>> = dx
                .par_chunks_mut(d * NORM_ROWS)
                .zip(xv.par_chunks(d * NORM_ROWS))
                .zip(g_out.par_chunks(d * NORM_ROWS))
                .zip(inv.par_chunks(NORM_ROWS))
                .map(|(((dx, x), g), iv)| {
                    let mut gw = vec![0f32; d];
                    simd::norm_rows_grad(dx, x, g, iv, &wv, &mut gw);
                    gw
                })
                .collect();
            let dw = grads.get_or_alloc_mut(&gw)?;
            for p in partial {
                for (a, b) in dw.iter_mut().zip(&p) {
                    *a += b;
                }
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// Per-row loss of logits `[n, v]`: `w·(CE + z·lse²)` with t5x's label
/// smoothing, and the per-row (cross-entropy, z-loss) parts for logging.
pub struct RowLoss<D: Device<f32>, T> {
    /// `[n]` weighted per-row loss, on the tape.
    pub loss: Tensor<(usize,), f32, D, T>,
    /// Σ weighted cross-entropy.
    pub cross_entropy: f64,
    /// Σ weighted z-loss.
    pub z_loss: f64,
}

/// Logits `[n, vocab]`.
pub type Logits<D, T> = Tensor<(usize, usize), f32, D, T>;

type Cpu2<T> = Tensor<(usize, usize), f32, Cpu, T>;

/// The fused loss on the CPU; `None` on other devices (the caller composes
/// dfdx primitives there).
pub fn row_loss_cpu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    logits: Tensor<(usize, usize), f32, D, T>,
    targets: &[usize],
    weights: &[f32],
    z_loss: f32,
    smoothing: f32,
) -> Result<RowLoss<D, T>, Logits<D, T>> {
    macro_rules! on_cpu {
        ($tape:ty) => {{
            let l = cast::<_, Cpu2<$tape>>(logits).ok().expect("checked type");
            let r = row_loss_impl(l, targets, weights, z_loss, smoothing);
            return Ok(RowLoss {
                loss: cast(r.loss).ok().expect("same type"),
                cross_entropy: r.cross_entropy,
                z_loss: r.z_loss,
            });
        }};
    }
    on_cpu_tapes!((usize, usize), Tensor<(usize, usize), f32, D, T>, on_cpu);
    Err(logits)
}

/// The output layer and the loss in one kernel: logits `h · wᵀ` (`h:
/// [n, d]`, `w: [vocab, d]`) and their [`row_loss_cpu`], on the CPU with
/// OpenBLAS; `Err` gives `(h, w)` back otherwise. The logits never become
/// a tensor: the backward pass turns them into their gradient in place and
/// multiplies it out (dfdx would zero-fill a gradient buffer of the
/// logits' size, 65 MB for the tiny config's batch, and add into it).
#[allow(clippy::type_complexity)]
pub fn logits_loss_cpu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    h: Tensor<(usize, usize), f32, D, T>,
    w: Tensor<(usize, usize), f32, D, T>,
    targets: &[usize],
    weights: &[f32],
    z_loss: f32,
    smoothing: f32,
) -> Result<RowLoss<D, T>, (Logits<D, T>, Logits<D, T>)> {
    #[cfg(t5mix_openblas)]
    {
        macro_rules! on_cpu {
            ($tape:ty) => {{
                let hc = cast::<_, Cpu2<$tape>>(h).ok().expect("checked type");
                let wc = cast::<_, Cpu2<$tape>>(w)
                    .ok()
                    .expect("same device and tape");
                let rule = LossRule::new(z_loss, smoothing, wc.shape().0);
                let r = blas::logits_loss(hc, wc, targets, weights, rule);
                return Ok(RowLoss {
                    loss: cast(r.loss).ok().expect("same type"),
                    cross_entropy: r.cross_entropy,
                    z_loss: r.z_loss,
                });
            }};
        }
        on_cpu_tapes!((usize, usize), Tensor<(usize, usize), f32, D, T>, on_cpu);
    }
    let _ = (targets, weights, z_loss, smoothing);
    Err((h, w))
}

/// t5x's per-row loss over logits: cross-entropy against the smoothed
/// target distribution plus the z-loss, weighted.
struct LossRule {
    z: f32,
    smoothing: f32,
    confidence: f32,
    /// The probability of each non-target class.
    low: f32,
    /// Minus the entropy of the smoothed target distribution.
    constant: f32,
}

impl LossRule {
    fn new(z: f32, smoothing: f32, v: usize) -> Self {
        let confidence = 1.0 - smoothing;
        let low = if v > 1 {
            smoothing / (v as f32 - 1.0)
        } else {
            0.0
        };
        let constant = if smoothing > 0.0 {
            -(confidence * confidence.ln() + (v as f32 - 1.0) * low * (low + 1e-20).ln())
        } else {
            0.0
        };
        LossRule {
            z,
            smoothing,
            confidence,
            low,
            constant,
        }
    }

    /// Per row of `x` (`[n, v]`): (weighted loss, weighted cross-entropy,
    /// weighted z-loss, log-sum-exp).
    fn rows(&self, x: &[f32], v: usize, targets: &[usize], weights: &[f32]) -> Vec<[f32; 4]> {
        x.par_chunks(v)
            .enumerate()
            .map(|(i, row)| {
                let (m, s) = simd::max_and_sum_exp(row);
                let lse = m + s.ln() as f32;
                let t = targets[i];
                let mut ce = lse - row[t];
                if self.smoothing > 0.0 {
                    let sum: f64 = row.iter().map(|&a| a as f64).sum();
                    ce = lse
                        - (self.confidence - self.low) * row[t]
                        - self.low * sum as f32
                        - self.constant;
                }
                let w = weights[i];
                let zl = self.z * lse * lse;
                [w * (ce + zl), w * ce, w * zl, lse]
            })
            .collect()
    }

    /// The per-row losses and the sums of the weighted cross-entropy and
    /// z-loss, from [`LossRule::rows`].
    fn totals(rows: &[[f32; 4]]) -> (Vec<f32>, f64, f64) {
        let cross_entropy = rows.iter().map(|r| r[1] as f64).sum();
        let z_loss = rows.iter().map(|r| r[2] as f64).sum();
        (rows.iter().map(|r| r[0]).collect(), cross_entropy, z_loss)
    }

    /// The gradient of a row's loss (its [`LossRule::rows`] values) with
    /// upstream gradient `g` (weight included): `d_j = scale·e^(x_j − lse)
    /// − shift`, and the target's entry less `target`, as (scale, shift,
    /// target, lse); `None` when `g` is 0 (the row has no gradient).
    fn grad(&self, g: f32, row: &[f32; 4]) -> Option<(f32, f32, f32, f32)> {
        if g == 0.0 {
            return None;
        }
        let lse = row[3];
        // d/dx_j [lse − (c−low)·x_t − low·Σx + z·lse²]
        let scale = g * (1.0 + 2.0 * self.z * lse);
        Some((scale, g * self.low, g * (self.confidence - self.low), lse))
    }
}

fn row_loss_impl<T: Tape<f32, Cpu>>(
    logits: Cpu2<T>,
    targets: &[usize],
    weights: &[f32],
    z: f32,
    smoothing: f32,
) -> RowLoss<Cpu, T> {
    let (x, mut tape) = logits.contiguous().split_tape();
    let (n, v) = *x.shape();
    let xv = values(&x);
    let rule = LossRule::new(z, smoothing, v);
    let rows = rule.rows(&xv, v, targets, weights);
    let (losses, cross_entropy, z_loss) = LossRule::totals(&rows);
    let out = x.device().tensor_from_vec(losses, (n,));
    if T::OWNS_TAPE {
        let (gx, go) = (x.ghost(), out.ghost());
        let targets = targets.to_vec();
        let weights = weights.to_vec();
        tape.add_backward_op(move |grads| {
            let g_out = output_grad!(grads, &go, [&gx]);
            let dx = grads.get_or_alloc_mut(&gx)?;
            dx.par_chunks_mut(v)
                .zip(xv.par_chunks(v))
                .enumerate()
                .for_each(|(i, (d, row))| {
                    let Some((scale, shift, target, l)) =
                        rule.grad(g_out[i] * weights[i], &rows[i])
                    else {
                        return;
                    };
                    simd::add_loss_grad(d, row, scale, shift, l);
                    d[targets[i]] -= target;
                });
            Ok(())
        });
    }
    RowLoss {
        loss: out.put_tape(tape),
        cross_entropy,
        z_loss,
    }
}

#[cfg(test)]
mod simd_tests {
    use super::{exp_fast, gelu_and_grad, lane_dot, lane_sum, row_max, simd, sum_exp};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) * 0.0071)
            .collect()
    }

    /// The loops picked at run time (AVX-512 or AVX2 where the CPU has them)
    /// give exactly the values of the same loops compiled for baseline x86-64.
    #[test]
    fn simd_levels_give_the_baseline_values() {
        let n = 1000;
        let (x, y, g) = (values(n, 1), values(n, 2), values(n, 3));
        let mut o = vec![0f32; n];
        simd::gelu_gate(&mut o, &x, &y);
        let want: Vec<f32> = (0..n).map(|i| gelu_and_grad(x[i]).0 * y[i]).collect();
        assert_eq!(o, want);
        let mut d = g.clone();
        simd::gelu_gate_grad_a(&mut d, &x, &y, &g);
        let want: Vec<f32> = (0..n)
            .map(|i| g[i] + g[i] * gelu_and_grad(x[i]).1 * y[i])
            .collect();
        assert_eq!(d, want);
        // softmax over rows of 100
        let mut p = x.clone();
        simd::softmax_rows(&mut p, 100);
        for (row, got) in x.chunks(100).zip(p.chunks(100)) {
            let m = row_max(row);
            let e: Vec<f32> = row.iter().map(|v| exp_fast(v - m)).collect();
            let inv = 1.0 / lane_sum(&e);
            let want: Vec<f32> = e.iter().map(|v| v * inv).collect();
            assert_eq!(got, &want[..]);
        }
        let mut q = p.clone();
        simd::softmax_grad_rows(&mut q, &g, 100);
        for ((prow, grow), got) in p.chunks(100).zip(g.chunks(100)).zip(q.chunks(100)) {
            let dot = lane_dot(grow, prow);
            let want: Vec<f32> = prow.iter().zip(grow).map(|(p, g)| p * (g - dot)).collect();
            assert_eq!(got, &want[..]);
        }
        let (m, s) = simd::max_and_sum_exp(&x);
        assert_eq!((m, s), (row_max(&x), sum_exp(&x, row_max(&x))));
        // norm over rows of 50
        let w = values(50, 4);
        let mut inv = vec![0f32; n / 50];
        simd::norm_rows(&mut o, &x, &mut inv, &w, 1e-6);
        for (r, row) in x.chunks(50).enumerate() {
            let ms = lane_dot(row, row) / 50.0;
            let i = 1.0 / (ms + 1e-6f32).sqrt();
            assert_eq!(inv[r], i);
            for j in 0..50 {
                assert_eq!(o[r * 50 + j], row[j] * i * w[j]);
            }
        }
        let mut z = x.clone();
        simd::loss_grad_in_place(&mut z, 0.7, 0.01, 2.5);
        let want: Vec<f32> = x.iter().map(|v| 0.7 * exp_fast(v - 2.5) - 0.01).collect();
        assert_eq!(z, want);
    }
}

#[cfg(test)]
mod exp_tests {
    use super::{exp_fast, lane_dot, lane_sum, row_max, sum_exp, tanh_fast};

    #[test]
    fn lane_reductions_and_tanh() {
        let x: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 * 0.1 - 3.0)
            .collect();
        for n in [0, 1, 15, 16, 17, 37] {
            let v = &x[..n];
            let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(row_max(v), m);
            let s: f64 = v.iter().map(|&a| ((a - 1.0) as f64).exp()).sum();
            assert!((sum_exp(v, 1.0) - s).abs() <= 1e-6 * s.max(1.0), "{n}");
            let t: f32 = v.iter().sum();
            assert!((lane_sum(v) - t).abs() <= 1e-5 * t.abs().max(1.0), "{n}");
            let w = &x[37 - n..];
            let t: f32 = v.iter().zip(w).map(|(a, b)| a * b).sum();
            assert!((lane_dot(v, w) - t).abs() <= 1e-5 * t.abs().max(1.0), "{n}");
        }
        assert_eq!(tanh_fast(9.0), 1.0);
        assert_eq!(tanh_fast(50.0), 1.0);
        assert_eq!(tanh_fast(-50.0), -1.0);
        assert!((tanh_fast(0.5) - 0.5f32.tanh()).abs() < 1e-6);
    }

    #[test]
    fn exp_fast_is_within_three_ulp() {
        let mut worst = 0u32;
        let mut x = -87.3f32;
        while x < 88.3 {
            let (a, b) = (exp_fast(x), x.exp());
            let ulp = (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32;
            assert!(ulp <= 3, "exp_fast({x}) = {a}, exp = {b}");
            worst = worst.max(ulp);
            x += 0.000_731;
        }
        assert!(worst >= 1, "compared against something other than exp");
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(-200.0) < 1.3e-38);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way `sgemm` splits a product (C's rows, C's columns, the inner
    /// dimension), each transpose, beta 0 and 1, and a fresh output, against
    /// a product in f64.
    #[cfg(t5mix_openblas)]
    #[test]
    fn blas_products_split_three_ways() {
        // the split depends on the thread count: two, as on CI
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(blas_products_split_three_ways_on_two_threads);
    }

    #[cfg(t5mix_openblas)]
    fn blas_products_split_three_ways_on_two_threads() {
        let val = |i: usize| ((i * 7919) % 23) as f32 * 0.125 - 1.4;
        // (m, n, k): rows (tall C), columns (wide C), inner (long k)
        for (m, n, k) in [(67, 5, 9), (6, 1043, 9), (7, 5, 903), (1, 1, 1)] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let a: Vec<f32> = (0..m * k).map(val).collect();
                let b: Vec<f32> = (0..k * n).map(|i| val(i + 5)).collect();
                let at = |i: usize, l: usize| if ta { a[l * m + i] } else { a[i * k + l] };
                let bt = |l: usize, j: usize| if tb { b[j * k + l] } else { b[l * n + j] };
                let c0: Vec<f32> = (0..m * n).map(|i| val(i + 11)).collect();
                let fresh = blas::sgemm_new(ta, tb, (m, n, k), &a, &b);
                for beta in [0.0f32, 1.0] {
                    let mut c = c0.clone();
                    blas::sgemm(ta, tb, (m, n, k), &a, &b, beta, &mut c);
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 = (0..k).map(|l| at(i, l) as f64 * bt(l, j) as f64).sum();
                            let want = dot + beta as f64 * c0[i * n + j] as f64;
                            let tol = 1e-4 * (k as f64).sqrt();
                            let got = c[i * n + j] as f64;
                            assert!(
                                (got - want).abs() < tol,
                                "{m}x{n}x{k} {ta} {tb} beta {beta}: {got} vs {want}"
                            );
                            if beta == 0.0 {
                                assert_eq!(fresh[i * n + j], c[i * n + j]);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fused_loss_matches_the_definition() {
        let dev = Cpu::default();
        let v = 5;
        let x = vec![0.5f32, -1.0, 2.0, 0.0, 0.25, 1.5, 1.5, -0.5, 0.0, 3.0];
        let t = dev.tensor_from_vec(x.clone(), (2, v));
        for (z, s) in [(0.0f32, 0.0f32), (1e-4, 0.0), (1e-4, 0.1)] {
            let r = row_loss_cpu(t.clone(), &[2, 4], &[1.0, 0.5], z, s)
                .ok()
                .unwrap();
            let got = r.loss.as_vec();
            for (i, row) in x.chunks(v).enumerate() {
                let lse = row.iter().map(|a| (*a as f64).exp()).sum::<f64>().ln();
                let target = [2, 4][i];
                let c = 1.0 - s as f64;
                let low = s as f64 / (v as f64 - 1.0);
                // −Σ q_j log p_j minus the entropy of q (t5x's normalising constant)
                let mut ce = 0.0;
                let mut ent = 0.0;
                for (j, a) in row.iter().enumerate() {
                    let q = if j == target { c } else { low };
                    ce -= q * (*a as f64 - lse);
                    if q > 0.0 {
                        ent -= q * q.ln();
                    }
                }
                let want = [1.0, 0.5][i] * (ce - ent + z as f64 * lse * lse);
                assert!(
                    (got[i] as f64 - want).abs() < 1e-5,
                    "row {i} z {z} s {s}: {} vs {want}",
                    got[i]
                );
            }
        }
    }

    #[test]
    fn parallel_copy_sets_every_value_of_its_own_buffer() {
        let dev = Cpu::default();
        let mut t = dev.tensor_from_vec(vec![0f32; 3 * 70_000], (3, 70_000));
        let before = t.clone();
        let src: Vec<f32> = (0..3 * 70_000).map(|i| i as f32).collect();
        copy_from(&mut t, &src);
        assert_eq!(t.as_vec(), src);
        assert!(before.as_vec().iter().all(|&x| x == 0.0), "a clone changed");
    }

    #[test]
    fn gated_gelu_matches_dfdx() {
        let dev = Cpu::default();
        let a: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) * 0.37).collect();
        let b: Vec<f32> = (0..24).map(|i| 1.0 + i as f32 * 0.1).collect();
        let ta = dev.tensor_from_vec(a, (2, 3, 4));
        let tb = dev.tensor_from_vec(b, (2, 3, 4));
        let fused = gated_gelu(ta.clone(), tb.clone()).as_vec();
        let plain = (ta.fast_gelu() * tb).as_vec();
        for (f, p) in fused.iter().zip(&plain) {
            assert!((f - p).abs() < 1e-5 * p.abs().max(1.0), "{f} vs {p}");
        }
    }
}

type Attn3<D, T> = Tensor<(usize, usize, usize), f32, D, T>;
/// The inputs handed back when the fused kernel does not apply.
pub type AttnInputs<D, T> = Box<(
    Attn3<D, T>,
    Attn3<D, T>,
    Attn3<D, T>,
    Option<Attn3<D, T>>,
    Option<Vec<f32>>,
)>;

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

/// `c[m×n] (+)= a[m×k] · b[k×n]`; each matrix as (pointer, row stride,
/// column stride). One thread: the callers parallelise over heads.
#[allow(clippy::too_many_arguments)]
unsafe fn mm(
    (m, n, k): (usize, usize, usize),
    c: *mut f32,
    (c_rs, c_cs): (usize, usize),
    accumulate: bool,
    a: *const f32,
    (a_rs, a_cs): (usize, usize),
    b: *const f32,
    (b_rs, b_cs): (usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        c,
        c_cs as isize,
        c_rs as isize,
        accumulate,
        a,
        a_cs as isize,
        a_rs as isize,
        b,
        b_cs as isize,
        b_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Multi-head attention `softmax(q·kᵀ + pos + mask)·v` from the un-split
/// projections `q [b, t, h·dk]`, `k`, `v [b, s, h·dk]`, a position bias
/// `pos [h, t, s]` shared by the batch rows (none for cross-attention) and
/// a mask `[b, t, s]` shared by the heads (0 or a large negative value,
/// no gradient), to `[b, t, h·dk]`: one fused kernel per (row, head),
/// parallel over them, with its backward. `dropout` is an optional mask
/// `[b, h, t, s]` (0 or 1 / keep) on the probabilities. `Err` gives the
/// inputs back on devices other than the CPU.
pub fn attention_cpu<D: Device<f32>, T: Tape<f32, D> + 'static>(
    q: Attn3<D, T>,
    k: Attn3<D, T>,
    v: Attn3<D, T>,
    pos: Option<Attn3<D, T>>,
    mask: &[f32],
    dropout: Option<Vec<f32>>,
    heads: usize,
) -> Result<Attn3<D, T>, AttnInputs<D, T>> {
    macro_rules! on_cpu {
        ($tape:ty) => {{
            let q = cast::<_, Cpu3<$tape>>(q).ok().expect("checked type");
            let k = cast::<_, Cpu3<$tape>>(k).ok().expect("same type");
            let v = cast::<_, Cpu3<$tape>>(v).ok().expect("same type");
            let pos = pos.map(|p| cast::<_, Cpu3<$tape>>(p).ok().expect("same type"));
            return Ok(cast(attention_impl(q, k, v, pos, mask, dropout, heads))
                .ok()
                .expect("same type"));
        }};
    }
    on_cpu_tapes!((usize, usize, usize), Attn3<D, T>, on_cpu);
    Err(Box::new((q, k, v, pos, dropout)))
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

/// The probabilities `p` of (row, head) `bh` as multiplied by v: after
/// dropout (written to `scratch`) when there is a mask.
fn dropped(dropout: &Option<Vec<f32>>, bh: usize, p: &[f32], scratch: &mut Vec<f32>) -> *const f32 {
    match dropout {
        None => p.as_ptr(),
        Some(d) => {
            let m = &d[bh * p.len()..(bh + 1) * p.len()];
            scratch.clear();
            scratch.extend(p.iter().zip(m).map(|(p, m)| p * m));
            scratch.as_ptr()
        }
    }
}

fn attention_impl<T: Tape<f32, Cpu>>(
    q: Cpu3<T>,
    k: Cpu3<T>,
    v: Cpu3<T>,
    pos: Option<Cpu3<T>>,
    mask: &[f32],
    dropout: Option<Vec<f32>>,
    heads: usize,
) -> Cpu3<T> {
    let (q, tq) = q.contiguous().split_tape();
    let (k, tk) = k.contiguous().split_tape();
    let (v, tv) = v.contiguous().split_tape();
    let mut tape = tq.merge(tk).merge(tv);
    let pos = pos.map(|p| {
        let (p, tp) = p.contiguous().split_tape();
        tape = std::mem::take(&mut tape).merge(tp);
        p
    });
    let (b, t, inner) = *q.shape();
    let s = k.shape().1;
    let dk = inner / heads;
    assert_eq!(mask.len(), b * t * s, "mask size");
    if let Some(d) = &dropout {
        assert_eq!(d.len(), b * heads * t * s, "dropout mask size");
    }

    let (qv, kv, vv) = (values(&q), values(&k), values(&v));
    let posv = pos.as_ref().map(values);
    if let Some(p) = &posv {
        assert_eq!(p.len(), heads * t * s, "position bias size");
    }
    // probabilities [b, h, t, s], kept for the backward pass
    let probs = written_with(b * heads * t * s, t * s, |bh, p| {
        let (bi, h) = (bh / heads, bh % heads);
        // p = mask + pos + q·kᵀ
        let m = &mask[bi * t * s..(bi + 1) * t * s];
        let p = match &posv {
            Some(pos) => {
                let pos = &pos[h * t * s..(h + 1) * t * s];
                init_with(p, |j| m[j] + pos[j])
            }
            None => init_with(p, |j| m[j]),
        };
        unsafe {
            mm(
                (t, s, dk),
                p.as_mut_ptr(),
                (s, 1),
                true,
                qv.as_ptr().add(bi * t * inner + h * dk),
                (inner, 1),
                kv.as_ptr().add(bi * s * inner + h * dk),
                (1, inner),
            );
        }
        simd::softmax_rows(p, s);
    });
    // every value is written by one (row, head) task below (no zero-filling)
    let mut out: Vec<f32> = Vec::with_capacity(b * t * inner);
    let op = SyncPtr(out.as_mut_ptr());
    (0..b * heads).into_par_iter().for_each(|bh| {
        let (bi, h) = (bh / heads, bh % heads);
        let mut scratch = Vec::new();
        let p = dropped(
            &dropout,
            bh,
            &probs[bh * t * s..(bh + 1) * t * s],
            &mut scratch,
        );
        unsafe {
            mm(
                (t, dk, s),
                op.get().add(bi * t * inner + h * dk),
                (inner, 1),
                false,
                p,
                (s, 1),
                vv.as_ptr().add(bi * s * inner + h * dk),
                (inner, 1),
            );
        }
    });
    // SAFETY: the tasks wrote all b·t·inner values (each its rows' head columns)
    unsafe { out.set_len(b * t * inner) };
    let out = q.device().tensor_from_vec(out, (b, t, inner));
    if T::OWNS_TAPE {
        let (gq, gk, gv, go) = (q.ghost(), k.ghost(), v.ghost(), out.ghost());
        let gp = pos.as_ref().map(|p| p.ghost());
        let mut probs = probs;
        tape.add_backward_op(move |grads| {
            if let Some(gp) = &gp {
                grads.try_alloc_for(gp)?;
            }
            let g_out = output_grad!(grads, &go, [&gq, &gk, &gv]);
            // SAFETY: three distinct buffers, none reallocated while in use;
            // each (row, head) task writes its own part of dq, dk, dv.
            let dq = SyncPtr(grads.get_or_alloc_mut(&gq)?.as_mut_ptr());
            let dkp = SyncPtr(grads.get_or_alloc_mut(&gk)?.as_mut_ptr());
            let dv = SyncPtr(grads.get_or_alloc_mut(&gv)?.as_mut_ptr());
            // each task turns its probabilities into the scores' gradient dS
            probs.par_chunks_mut(t * s).enumerate().for_each(|(bh, p)| {
                let (bi, h) = (bh / heads, bh % heads);
                let (dq, dkp, dv) = (dq, dkp, dv);
                let qo = bi * t * inner + h * dk;
                let ko = bi * s * inner + h * dk;
                // written by the first product (no zero-filling: 1 MB per task at 512 × 512)
                let mut ds: Vec<f32> = Vec::with_capacity(t * s);
                let mut scratch = Vec::new();
                let pd = dropped(&dropout, bh, p, &mut scratch);
                unsafe {
                    // dP = dO · vᵀ
                    mm(
                        (t, s, dk),
                        ds.as_mut_ptr(),
                        (s, 1),
                        false,
                        g_out.as_ptr().add(qo),
                        (inner, 1),
                        vv.as_ptr().add(ko),
                        (1, inner),
                    );
                    ds.set_len(t * s);
                    // dV += Pᵀ · dO (P after dropout)
                    mm(
                        (s, dk, t),
                        dv.0.add(ko),
                        (inner, 1),
                        true,
                        pd,
                        (1, s),
                        g_out.as_ptr().add(qo),
                        (inner, 1),
                    );
                }
                // through the dropout: dP ⊙ mask
                if let Some(d) = &dropout {
                    let m = &d[bh * t * s..(bh + 1) * t * s];
                    ds.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
                }
                // dS = P ⊙ (dP − rowsum(dP ⊙ P)), over P
                simd::softmax_grad_rows(p, &ds, s);
                unsafe {
                    // dQ += dS · k
                    mm(
                        (t, dk, s),
                        dq.0.add(qo),
                        (inner, 1),
                        true,
                        p.as_ptr(),
                        (s, 1),
                        kv.as_ptr().add(ko),
                        (inner, 1),
                    );
                    // dK += dSᵀ · q
                    mm(
                        (s, dk, t),
                        dkp.0.add(ko),
                        (inner, 1),
                        true,
                        p.as_ptr(),
                        (1, s),
                        qv.as_ptr().add(qo),
                        (inner, 1),
                    );
                }
            });
            // the position bias gets dS summed over the batch rows (in row order)
            if let Some(gp) = &gp {
                let dpos = grads.get_or_alloc_mut(gp)?;
                dpos.par_chunks_mut(s).enumerate().for_each(|(hr, d)| {
                    let (h, r) = (hr / t, hr % t);
                    for bi in 0..b {
                        let o = ((bi * heads + h) * t + r) * s;
                        for (x, y) in d.iter_mut().zip(&probs[o..o + s]) {
                            *x += y;
                        }
                    }
                });
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}
