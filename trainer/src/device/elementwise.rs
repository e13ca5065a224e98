//! The feed-forward's activations and the dropout masks on the GPU
//! (`trainer/cuda/elementwise.cu`): the activations as the CPU's fused
//! feed-forward computes them ([`crate::kernels::activation`]), bit for
//! bit, and the masks from the same ChaCha8 stream as the CPU's
//! ([`MaskDraw`]), so a GPU run drops the values a CPU run drops. The
//! kernels' block function is here in Rust too ([`chacha8_block`]), tied to
//! the CPU's masks by a test.

use super::backend::HeadsShape;
use super::{
    arg_or_null, copy_arg, grid_for, grid_rows, launched, load, out_args, writes_values, Bf16Copy,
    CHAIN_THREADS, ELEMENTWISE,
};
use crate::model::MaskDraw;
use crate::Result;
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, PushKernelArg};
use std::sync::Arc;

/// For the error messages.
const PART: &str = "feed-forward";

/// Threads per block of the element-wise kernels.
const THREADS: usize = 256;

/// The element-wise kernels on one GPU stream.
pub struct DeviceElementwise {
    stream: Arc<CudaStream>,
    gated_fwd: CudaFunction,
    gated_bwd: CudaFunction,
    relu_fwd: CudaFunction,
    relu_bwd: CudaFunction,
    dropout_mask: CudaFunction,
    to_bf16: CudaFunction,
    residual: CudaFunction,
    heads_layout: CudaFunction,
    mul_masked: CudaFunction,
    scale: CudaFunction,
    embed: CudaFunction,
    embed_grad: CudaFunction,
}

impl DeviceElementwise {
    /// The kernels compiled for `stream`'s GPU and loaded there.
    pub fn new(stream: Arc<CudaStream>, flush_denormals: bool) -> Result<Self> {
        let [gated_fwd, gated_bwd, relu_fwd, relu_bwd, dropout_mask, to_bf16, residual, heads_layout, mul_masked, scale, embed, embed_grad] =
            load(&stream, ELEMENTWISE, flush_denormals)?;
        Ok(DeviceElementwise {
            stream,
            gated_fwd,
            gated_bwd,
            relu_fwd,
            relu_bwd,
            dropout_mask,
            to_bf16,
            residual,
            heads_layout,
            mul_masked,
            scale,
            embed,
            embed_grad,
        })
    }

    /// `h = gelu_new(a) · b`, times the mask (`rows` rows of `f` values;
    /// `ab`'s rows a row of `a` and then one of `b`); `h`'s bf16 copy in
    /// `copy` too, when given (then `h` unwritten when only products read
    /// it).
    pub fn gated_forward(
        &self,
        ab: &CudaSlice<f32>,
        mask: Option<&CudaSlice<f32>>,
        (h, copy): (&mut CudaSlice<f32>, Option<&mut Bf16Copy>),
        (rows, f): (usize, usize),
    ) -> Result<()> {
        let (rows64, f_u32) = (rows as u64, f as u32);
        let mut l = self.stream.launch_builder(&self.gated_fwd);
        l.arg(ab);
        arg_or_null(&mut l, mask);
        out_args(&mut l, h, copy, rows * f, PART)?;
        l.arg(&rows64).arg(&f_u32);
        // SAFETY: ab holds 2 rows f values, the others rows f (an output
        // only copied is a null pointer: out_args).
        launched(
            PART,
            unsafe { l.launch(grid_for(rows * f, THREADS)) },
            "gated GELU",
        )
    }

    /// The gated activation's backward: `g` (the hidden gradient) through
    /// the mask, then `dab`: `g · gelu_new'(a) · b` and `g · gelu_new(a)`,
    /// rows as `ab`'s (its bf16 copy in `copy` too, when given; then `dab`
    /// unwritten when only products read it).
    pub fn gated_backward(
        &self,
        g: &CudaSlice<f32>,
        ab: &CudaSlice<f32>,
        mask: Option<&CudaSlice<f32>>,
        (dab, copy): (&mut CudaSlice<f32>, Option<&mut Bf16Copy>),
        (rows, f): (usize, usize),
    ) -> Result<()> {
        let (rows64, f_u32) = (rows as u64, f as u32);
        let mut l = self.stream.launch_builder(&self.gated_bwd);
        l.arg(g).arg(ab);
        arg_or_null(&mut l, mask);
        out_args(&mut l, dab, copy, 2 * rows * f, PART)?;
        l.arg(&rows64).arg(&f_u32);
        // SAFETY: ab and dab hold 2 rows f values, the others rows f (an
        // output only copied is a null pointer: out_args).
        launched(
            PART,
            unsafe { l.launch(grid_for(rows * f, THREADS)) },
            "gated GELU backward",
        )
    }

    /// ReLU in place, times the mask (the bf16 copy in `copy` too, when
    /// given; `h` is written in any case).
    pub fn relu_forward(
        &self,
        (h, copy): (&mut CudaSlice<f32>, Option<&mut Bf16Copy>),
        mask: Option<&CudaSlice<f32>>,
        n: usize,
    ) -> Result<()> {
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&self.relu_fwd);
        l.arg(h);
        arg_or_null(&mut l, mask);
        copy_arg(&mut l, copy, n, PART)?;
        l.arg(&n64);
        // SAFETY: every buffer holds n values.
        launched(PART, unsafe { l.launch(grid_for(n, THREADS)) }, "ReLU")
    }

    /// ReLU's backward in place from the hidden activation `h` (after the
    /// mask), then through the mask (the bf16 copy in `copy` too, when
    /// given; `g` is written in any case).
    pub fn relu_backward(
        &self,
        (g, copy): (&mut CudaSlice<f32>, Option<&mut Bf16Copy>),
        h: &CudaSlice<f32>,
        mask: Option<&CudaSlice<f32>>,
        n: usize,
    ) -> Result<()> {
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&self.relu_bwd);
        l.arg(g).arg(h);
        arg_or_null(&mut l, mask);
        copy_arg(&mut l, copy, n, PART)?;
        l.arg(&n64);
        // SAFETY: every buffer holds n values.
        launched(
            PART,
            unsafe { l.launch(grid_for(n, THREADS)) },
            "ReLU backward",
        )
    }

    /// `n` values as bf16 bits, rounded to nearest even (`half`'s
    /// `bf16::from_f32`): the operands of the bf16 products.
    pub fn to_bf16(&self, x: &impl DevicePtr<f32>, y: &mut CudaSlice<u16>, n: usize) -> Result<()> {
        let n64 = n as u64;
        let (x, _x) = x.device_ptr(&self.stream);
        let mut l = self.stream.launch_builder(&self.to_bf16);
        l.arg(&x).arg(y).arg(&n64);
        // SAFETY: x and y hold n values.
        launched(PART, unsafe { l.launch(grid_for(n, THREADS)) }, "bf16")
    }

    /// `out = x + y · mask` (`n` values).
    pub fn residual(
        &self,
        out: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        y: &CudaSlice<f32>,
        mask: Option<&CudaSlice<f32>>,
        n: usize,
    ) -> Result<()> {
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&self.residual);
        l.arg(out).arg(x).arg(y);
        arg_or_null(&mut l, mask);
        l.arg(&n64);
        // SAFETY: every buffer holds n values.
        launched(PART, unsafe { l.launch(grid_for(n, THREADS)) }, "residual")
    }

    /// An attention's projections as heads of rows, in `out` (see
    /// [`crate::device::backend::Backend::to_heads`]; its bf16 copy in
    /// `copy` too, when given: then `out` unwritten when only products read
    /// it).
    pub fn to_heads(
        &self,
        x: &CudaSlice<f32>,
        (out, copy): (&mut CudaSlice<f32>, Option<&mut Bf16Copy>),
        sh: HeadsShape,
    ) -> Result<()> {
        let (x, _x) = x.device_ptr(&self.stream);
        let (out, _out) = out.device_ptr_mut(&self.stream);
        // the heads one part after the other from `out`
        let out = if writes_values(&copy) { out } else { 0 };
        self.heads_layout([x, out, 0, 0], copy, sh, false)
    }

    /// The parts, heads of rows each, back as rows in `out` (see
    /// [`crate::device::backend::Backend::to_rows`]; 1 to 3 parts; its
    /// bf16 copy in `copy` too, when given: then `out` unwritten when only
    /// products read it).
    pub fn to_rows(
        &self,
        parts: &[&CudaSlice<f32>],
        (out, copy): (&mut CudaSlice<f32>, Option<&mut Bf16Copy>),
        sh: HeadsShape,
    ) -> Result<()> {
        if !(1..=3).contains(&parts.len()) {
            let e = format!("{} parts", parts.len());
            return Err(super::gpu_error(PART, "heads layout", e));
        }
        let (out, _out) = out.device_ptr_mut(&self.stream);
        let parts: Vec<_> = parts.iter().map(|p| p.device_ptr(&self.stream)).collect();
        let mut ptrs = [out, 0, 0, 0];
        for (at, (p, _)) in ptrs[1..].iter_mut().zip(&parts) {
            *at = *p;
        }
        if !writes_values(&copy) {
            ptrs[0] = 0;
        }
        self.heads_layout(ptrs, copy, sh, true)
    }

    /// The kernel `heads_layout` on the rows and the heads' parts (device
    /// addresses; 0: none), the bf16 copy of what it writes in `copy`.
    fn heads_layout(
        &self,
        ptrs: [u64; 4],
        copy: Option<&mut Bf16Copy>,
        sh: HeadsShape,
        back: bool,
    ) -> Result<()> {
        let (b, back) = (sh.b as u64, back as i32);
        let dims = [sh.rows, sh.parts, sh.heads, sh.d].map(|v| v as u32);
        let mut l = self.stream.launch_builder(&self.heads_layout);
        for p in &ptrs {
            l.arg(p);
        }
        copy_arg(&mut l, copy, sh.values(), PART)?;
        l.arg(&b);
        for v in &dims {
            l.arg(v);
        }
        l.arg(&back);
        // blocks over a row's values, the rows along y
        let grid = grid_rows(sh.parts * sh.heads * sh.d, sh.b * sh.rows, THREADS);
        // SAFETY: the callers' buffers: the rows hold sh.values() values,
        // the parts as many in all.
        launched(PART, unsafe { l.launch(grid) }, "heads layout")
    }

    /// `out = x · mask` (a copy without a mask).
    pub fn mul_masked(
        &self,
        out: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        mask: Option<&CudaSlice<f32>>,
        n: usize,
    ) -> Result<()> {
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&self.mul_masked);
        l.arg(out).arg(x);
        arg_or_null(&mut l, mask);
        l.arg(&n64);
        // SAFETY: every buffer holds n values.
        launched(PART, unsafe { l.launch(grid_for(n, THREADS)) }, "dropout")
    }

    /// `x ·= s`.
    pub fn scale(&self, x: &mut CudaSlice<f32>, s: f32, n: usize) -> Result<()> {
        let n64 = n as u64;
        let mut l = self.stream.launch_builder(&self.scale);
        l.arg(x).arg(&s).arg(&n64);
        // SAFETY: x holds n values.
        launched(PART, unsafe { l.launch(grid_for(n, THREADS)) }, "scale")
    }

    /// Rows of `d` values: `x[i] = table[ids[i]]` (`table` a view, say).
    pub fn embed(
        &self,
        table: &impl DevicePtr<f32>,
        ids: &CudaSlice<u32>,
        x: &mut CudaSlice<f32>,
        d: usize,
    ) -> Result<()> {
        let (rows, d32) = (ids.len() as u64, d as u32);
        let (table, _t) = table.device_ptr(&self.stream);
        let mut l = self.stream.launch_builder(&self.embed);
        l.arg(&table).arg(ids).arg(x).arg(&rows).arg(&d32);
        // SAFETY: x holds rows·d values; every id is a row of the table
        // (Batch::check_ids).
        launched(
            PART,
            unsafe { l.launch(grid_for(ids.len() * d, THREADS)) },
            "embedding",
        )
    }

    /// The embedding's gradient added to `dtable` (a view, say), each
    /// token's rows in row order ([`super::backend::TokenRows`]).
    pub fn embed_grad(
        &self,
        dx: &CudaSlice<f32>,
        (tokens, starts, positions): (&CudaSlice<u32>, &CudaSlice<u32>, &CudaSlice<u32>),
        dtable: &mut impl DevicePtrMut<f32>,
        d: usize,
    ) -> Result<()> {
        let (ntok, d32) = (tokens.len() as u64, d as u32);
        let (dtable, _t) = dtable.device_ptr_mut(&self.stream);
        let mut l = self.stream.launch_builder(&self.embed_grad);
        l.arg(dx)
            .arg(tokens)
            .arg(starts)
            .arg(positions)
            .arg(&ntok)
            .arg(&d32)
            .arg(&dtable);
        // SAFETY: starts holds ntok + 1 offsets into positions, rows of dx.
        launched(
            PART,
            unsafe { l.launch(grid_for(tokens.len() * d, CHAIN_THREADS)) },
            "embedding gradient",
        )
    }

    /// The mask values of `draw` into `mask` (`draw.n` values).
    pub fn dropout_mask(&self, draw: &MaskDraw, mask: &mut CudaSlice<f32>) -> Result<()> {
        let keys = seed_words(&draw.seed);
        // a stream's position past 2^64 words would take centuries to draw
        let start = u64::try_from(draw.start)
            .map_err(|_| super::gpu_error(PART, "dropout", "stream position past 2^64 words"))?;
        let n64 = draw.n as u64;
        let blocks = (draw.start as usize % 16 + draw.n).div_ceil(16);
        let mut l = self.stream.launch_builder(&self.dropout_mask);
        l.arg(&keys[0]).arg(&keys[1]).arg(&keys[2]).arg(&keys[3]);
        l.arg(&start)
            .arg(&n64)
            .arg(&draw.threshold)
            .arg(&draw.scale)
            .arg(mask);
        // SAFETY: mask holds draw.n values.
        launched(
            PART,
            unsafe { l.launch(grid_for(blocks, THREADS)) },
            "dropout mask",
        )
    }
}

/// The seed as the kernel takes it: four little-endian 64-bit words.
fn seed_words(seed: &[u8; 32]) -> [u64; 4] {
    std::array::from_fn(|i| u64::from_le_bytes(seed[8 * i..8 * i + 8].try_into().expect("8 bytes")))
}

/// ChaCha8's block `counter` of the stream of `seed` (stream 0), as the
/// kernel computes it: 4 double rounds, plus the input state.
pub fn chacha8_block(seed: &[u8; 32], counter: u64) -> [u32; 16] {
    let mut s = [0u32; 16];
    s[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    for (k, w) in s[4..12].iter_mut().enumerate() {
        *w = u32::from_le_bytes(seed[4 * k..4 * k + 4].try_into().expect("4 bytes"));
    }
    s[12] = counter as u32;
    s[13] = (counter >> 32) as u32;
    let mut x = s;
    fn quarter(x: &mut [u32; 16], [a, b, c, d]: [usize; 4]) {
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(16);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(12);
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(8);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(7);
    }
    for _ in 0..4 {
        for q in [
            [0, 4, 8, 12],
            [1, 5, 9, 13],
            [2, 6, 10, 14],
            [3, 7, 11, 15],
            [0, 5, 10, 15],
            [1, 6, 11, 12],
            [2, 7, 8, 13],
            [3, 4, 9, 14],
        ] {
            quarter(&mut x, q);
        }
    }
    std::array::from_fn(|k| x[k].wrapping_add(s[k]))
}

/// The mask of `draw` as the kernel makes it, block by block.
pub fn twin_mask(draw: &MaskDraw) -> Vec<f32> {
    let start = draw.start as u64;
    (start..start + draw.n as u64)
        .map(|w| {
            let word = chacha8_block(&draw.seed, w / 16)[(w % 16) as usize];
            if word <= draw.threshold {
                draw.scale
            } else {
                0.0
            }
        })
        .collect()
}

/// The `to_bf16` kernel's rounding, in Rust: rounded to nearest even, NaN
/// kept quiet.
pub fn twin_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    let h = (u >> 16) as u16;
    if u & 0x7fff_ffff > 0x7f80_0000 {
        h | 0x0040
    } else if u & 0x8000 != 0 && u & (3 * 0x8000 - 1) != 0 {
        h + 1
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dropout;

    /// The kernel's rounding to bf16 is the `half` crate's, on the values
    /// where rounding decides (ties both ways, the largest finite values,
    /// subnormals, infinities, NaNs) and on a million others.
    #[test]
    fn the_kernels_bf16_rounding_is_halfs() {
        let mut bits: Vec<u32> = vec![
            0,
            0x8000_0000,
            0x3f80_8000,
            0x3f81_8000,
            0x3f80_8001,
            0x3f80_7fff,
            0x7f7f_ffff,
            0x7f7f_8000,
            0x7f80_0000,
            0xff80_0000,
            0x7f80_0001,
            0xffc0_0000,
            0x0000_8000,
            0x0001_8000,
            0x807f_ffff,
        ];
        let mut x = 1u64;
        bits.extend((0..1_000_000).map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 32) as u32
        }));
        for b in bits {
            let v = f32::from_bits(b);
            assert_eq!(twin_bf16(v), half::bf16::from_f32(v).to_bits(), "{b:#010x}");
        }
    }

    /// The kernel's block function gives the CPU's masks: from the start
    /// of a stream, from inside a block, across many blocks.
    #[test]
    fn the_kernels_chacha_gives_the_cpus_masks() {
        let mut d = Dropout::new(0.1, 42, 7, 3);
        for n in [5, 16, 1000, 37, 70_001] {
            let draw = d.draw(n);
            let want = draw.values();
            assert_eq!(twin_mask(&draw), want, "n {n} from word {}", draw.start);
            if n >= 1000 {
                let dropped = want.iter().filter(|&&x| x == 0.0).count();
                assert!(n / 20 < dropped && dropped < n * 3 / 20, "{dropped} of {n}");
            }
        }
        // another seed, step and rate give other masks
        let a = Dropout::new(0.5, 1, 0, 0).draw(64);
        let b = Dropout::new(0.5, 1, 1, 0).draw(64);
        assert_ne!(twin_mask(&a), twin_mask(&b));
    }
}
