//! The flat step on the GPU: every buffer on the device, our kernels for
//! the memory-bound operations, cuBLAS for the products (TF32 or bf16
//! tensor cores as [`Precision`] says). Nothing goes to the host during a
//! step but the loss's per-row values it logs.

use super::attention::{AttnShape, DeviceAttention, ScoresGrad};
use super::backend::{
    At, AtMut, Backend, HeadsShape, Operand, Product, Readers, TokenIndex, Written,
};
use super::elementwise::DeviceElementwise;
use super::loss::{DeviceLoss, LossSettings};
use super::norm::{weight_blocks, DeviceNorm};
use super::products::{DeviceProducts, GemmShape, Precision};
use super::profile::Profile;
use super::{gpu_error, memory_error, Bf16Copy};
use crate::model::{Batch, MaskDraw};
use crate::{Result, TrainError};
use cudarc::driver::{CudaSlice, CudaStream, CudaView, DriverError};
use std::cell::RefCell;
use std::sync::Arc;

/// For the error messages.
const PART: &str = "step";

/// The GPU's kernels and cuBLAS on one stream.
pub struct CudaBackend {
    stream: Arc<CudaStream>,
    ew: DeviceElementwise,
    att: DeviceAttention,
    norm: DeviceNorm,
    loss: DeviceLoss,
    blas: DeviceProducts,
    precision: Precision,
    flush_denormals: bool,
    /// In bf16: whether activations' bf16 copies are kept for their
    /// products ([`Backend::ready`], [`Backend::ready_output`]), or every
    /// product rounds its operands itself ([`CudaBackend::keeping_copies`]).
    keep_copies: bool,
    /// In bf16: the parameters of the current pass rounded to bf16 once
    /// ([`Backend::begin_pass`]), with the address of their f32 buffer:
    /// products that read a parameter read it here.
    bf16_params: RefCell<Option<(usize, CudaSlice<u16>)>>,
    /// The operations' GPU time, when profiling ([`super::profile`]).
    pub(crate) profile: Profile,
}

/// The rows of a gated activation: `ab` rows of `2f` values, the hidden
/// rows (and the mask) `f`; or an error.
fn gated_rows(
    ab: &CudaSlice<f32>,
    f: usize,
    hidden: usize,
    mask: Option<&CudaSlice<f32>>,
) -> Result<usize> {
    let rows = hidden / f.max(1);
    let fits = rows * f == hidden && ab.len() == 2 * hidden;
    if !fits || mask.is_some_and(|m| m.len() != hidden) {
        let e = format!("{} values as rows of 2 x {f}, hidden {hidden}", ab.len());
        return Err(gpu_error(PART, "gated GELU", e));
    }
    Ok(rows)
}

impl CudaBackend {
    /// Every kernel compiled for `stream`'s GPU and loaded there, a cuBLAS
    /// handle on it.
    pub fn new(
        stream: Arc<CudaStream>,
        precision: Precision,
        flush_denormals: bool,
    ) -> Result<Self> {
        Ok(CudaBackend {
            ew: DeviceElementwise::new(stream.clone(), flush_denormals)?,
            att: DeviceAttention::new(stream.clone(), flush_denormals)?,
            norm: DeviceNorm::new(stream.clone(), flush_denormals)?,
            loss: DeviceLoss::new(stream.clone(), flush_denormals)?,
            blas: DeviceProducts::new(stream.clone())?,
            profile: Profile::from_env(stream.clone()),
            stream,
            precision,
            flush_denormals,
            keep_copies: true,
            bf16_params: RefCell::new(None),
        })
    }

    /// In bf16, whether activations' bf16 copies are kept (the default:
    /// made once, by the kernel that writes the activation) or every
    /// product rounds its operands itself. Both give the same bits (a test
    /// holds them to it); the second only costs time.
    pub fn keeping_copies(mut self, keep: bool) -> Self {
        self.keep_copies = keep;
        self
    }

    /// Profiling on or off, whatever `T5MIX_GPU_PROFILE` says (a test's
    /// counts of operations: [`Profile::calls`]).
    pub fn profiling(mut self, on: bool) -> Self {
        self.profile = Profile::new(self.stream.clone(), on);
        self
    }

    /// How many operations named `name` (the profile's names: "bf16
    /// operands", "products (cuBLAS)", …) ran since the last report, when
    /// profiling.
    pub fn profiled_calls(&self, name: &str) -> usize {
        self.profile.calls(name)
    }

    /// Whether activations' bf16 copies are kept ([`Self::keeping_copies`]).
    fn keeps_copies(&self) -> bool {
        self.precision == Precision::Bf16 && self.keep_copies
    }

    /// The products' precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Whether the kernels flush subnormals to zero.
    pub fn flush_denormals(&self) -> bool {
        self.flush_denormals
    }

    /// The stream the step runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn alloc<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros::<T>(n.max(1))
            .map_err(|e| self.memory_error::<T>("allocating", n, e))
    }

    /// `n` values not zeroed, for a kernel that writes them all before any
    /// is read (the contract of `Backend::output`).
    fn alloc_output<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>> {
        // SAFETY: T is valid for any bits (ValidAsZeroBits stands for plain
        // numbers here: f32, u16), and the callers write every value first.
        unsafe { self.stream.alloc::<T>(n.max(1)) }
            .map_err(|e| self.memory_error::<T>("allocating", n, e))
    }

    /// The error of an allocation (or upload: `what`) of `n` values of T.
    fn memory_error<T>(&self, what: &str, n: usize, e: DriverError) -> TrainError {
        let what = format!("{what} {n} values");
        memory_error(PART, &what, n * std::mem::size_of::<T>(), &self.stream, e)
    }
}

/// How many values an output holds: its copy's where only the copy is
/// written ([`Backend::output_for`]), else its own.
fn written_len(values: &CudaSlice<f32>, ready: &Option<&mut Bf16Copy>) -> usize {
    match ready {
        Some(c) if !c.values_read => c.bits.len(),
        _ => values.len(),
    }
}

/// Operands rounded for one call of `gemms`, by [`operand_key`].
type Rounded = Vec<((usize, usize, usize), CudaSlice<u16>)>;

/// An operand's values as `gemms` tells them apart: (its buffer's address,
/// offset, values).
fn operand_key((x, o): At<CudaSlice<f32>>, len: usize) -> (usize, usize, usize) {
    (x as *const CudaSlice<f32> as usize, o, len)
}

/// The bf16 values of a product's operand (checked against its buffer
/// before): made ready, the pass's parameters, or rounded for the call.
fn bf16_view<'v>(
    x: Operand<'v, CudaSlice<f32>, Bf16Copy>,
    len: usize,
    params: Option<(usize, &'v CudaSlice<u16>)>,
    rounded: &'v Rounded,
) -> CudaView<'v, u16> {
    let (k, o) = (operand_key(x.at, len), x.at.1);
    match (x.ready, params) {
        (Some(r), _) => r.bits.slice(o..o + len),
        (None, Some((cached, b))) if cached == k.0 => b.slice(o..o + len),
        _ => match rounded.iter().find(|(r, _)| *r == k) {
            Some((_, h)) => h.slice(..),
            None => unreachable!("every operand rounded or cached before"),
        },
    }
}

/// A product's operand `len` values from `o` on, or an error past its end.
fn operand<'a>(
    sh: &GemmShape,
    (x, o): At<'a, CudaSlice<f32>>,
    len: usize,
) -> Result<CudaView<'a, f32>> {
    x.try_slice(o..o + len).ok_or_else(|| {
        gpu_error(
            PART,
            "product",
            format!("{sh:?} at {o} past {} values", x.len()),
        )
    })
}

/// A product's result from its offset on, or an error past its end.
fn result<'a>(
    sh: &GemmShape,
    (c, o): AtMut<'a, CudaSlice<f32>>,
) -> Result<cudarc::driver::CudaViewMut<'a, f32>> {
    let len = c.len();
    c.try_slice_mut(o..)
        .ok_or_else(|| gpu_error(PART, "product", format!("{sh:?} at {o} past {len} values")))
}

impl Backend for CudaBackend {
    type Buf = CudaSlice<f32>;
    type Ids = CudaSlice<u32>;
    type Ready = Bf16Copy;

    fn zeros(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.alloc(n)
    }
    fn output(&self, n: usize) -> Result<CudaSlice<f32>> {
        // (the CPU's NaN-filled outputs test that every value is written)
        self.alloc_output(n)
    }
    fn upload(&self, v: &[f32]) -> Result<CudaSlice<f32>> {
        self.profile.time("upload", || {
            self.stream
                .clone_htod(v)
                .map_err(|e| self.memory_error::<f32>("uploading", v.len(), e))
        })
    }
    fn upload_ids(&self, v: &[u32]) -> Result<CudaSlice<u32>> {
        self.profile.time("upload", || {
            self.stream
                .clone_htod(v)
                .map_err(|e| self.memory_error::<u32>("uploading", v.len(), e))
        })
    }
    fn download(&self, b: &CudaSlice<f32>) -> Result<Vec<f32>> {
        self.profile.time("download (waits)", || {
            self.stream
                .clone_dtoh(b)
                .map_err(|e| gpu_error(PART, "download", e))
        })
    }
    fn attention_masks(&self, batch: &Batch) -> Result<[CudaSlice<f32>; 3]> {
        self.profile.time("attention masks", || {
            use crate::model::MaskKind;
            let (b, s, t) = (batch.batch, batch.enc_len, batch.dec_len);
            let eseg = self.upload_ids(&batch.enc_segments)?;
            let dseg = match &batch.dec_segments {
                Some(d) => Some(self.upload_ids(d)?),
                None => None,
            };
            let mask = |kind: MaskKind, n: usize| -> Result<CudaSlice<f32>> {
                let mut m = self.alloc_output::<f32>(b * n)?;
                self.att
                    .mask(kind, (&eseg, dseg.as_ref()), (b, s, t), &mut m)?;
                Ok(m)
            };
            Ok([
                mask(MaskKind::Encoder, s * s)?,
                mask(MaskKind::DecoderSelf, t * t)?,
                mask(MaskKind::Cross, t * s)?,
            ])
        })
    }
    fn masked_copy(
        &self,
        x: &CudaSlice<f32>,
        mask: Option<&CudaSlice<f32>>,
    ) -> Result<CudaSlice<f32>> {
        self.profile.time("dropout (copy)", || {
            let mut out = self.alloc_output(x.len())?;
            self.ew.mul_masked(&mut out, x, mask, x.len())?;
            Ok(out)
        })
    }

    fn begin_pass(&self, params: &CudaSlice<f32>) -> Result<()> {
        self.profile.time("bf16 parameters", || {
            if self.precision != Precision::Bf16 {
                return Ok(());
            }
            let mut cache = self.bf16_params.borrow_mut();
            let n = params.len();
            let mut buf = match cache.take() {
                Some((_, b)) if b.len() >= n => b,
                _ => self.alloc::<u16>(n)?,
            };
            self.ew.to_bf16(params, &mut buf, n)?;
            *cache = Some((params as *const CudaSlice<f32> as usize, buf));
            Ok(())
        })
    }

    fn ready(&self, x: &CudaSlice<f32>) -> Result<Option<Bf16Copy>> {
        if !self.keeps_copies() {
            return Ok(None);
        }
        self.profile.time("bf16 operands", || {
            let mut bits = self.alloc_output::<u16>(x.len())?;
            self.ew.to_bf16(x, &mut bits, x.len())?;
            Ok(Some(Bf16Copy {
                bits,
                values_read: true,
            }))
        })
    }
    fn ready_output(&self, n: usize, readers: Readers) -> Result<Option<Bf16Copy>> {
        if !self.keeps_copies() {
            return Ok(None);
        }
        Ok(Some(Bf16Copy {
            bits: self.alloc_output(n)?,
            values_read: readers == Readers::Any,
        }))
    }

    fn output_for(&self, n: usize, ready: Option<&Bf16Copy>) -> Result<CudaSlice<f32>> {
        match ready {
            // (the kernels take a null pointer for these values: out_args)
            Some(c) if !c.values_read => self.alloc_output(1),
            _ => self.output(n),
        }
    }

    fn gemms(&self, products: Vec<Product<'_, CudaSlice<f32>, Bf16Copy>>) -> Result<()> {
        // (profiled per cuBLAS call, and the bf16 roundings apart)
        const PRODUCT: &str = "products (cuBLAS)";
        type P<'p> = Product<'p, CudaSlice<f32>, Bf16Copy>;
        let beta = |p: &P<'_>| if p.accumulate { 1.0 } else { 0.0 };
        if self.precision != Precision::Bf16 {
            let tf32 = self.precision == Precision::Tf32;
            for p in products {
                let (la, lb, _) = p.shape.spans();
                let av = operand(&p.shape, p.a.at, la)?;
                let bv = operand(&p.shape, p.b.at, lb)?;
                let (sh, beta) = (p.shape, beta(&p));
                let mut cv = result(&sh, p.c)?;
                self.profile.time(PRODUCT, || {
                    self.blas.gemm(&sh, &av, &bv, &mut cv, (1.0, beta), tf32)
                })?;
            }
            return Ok(());
        }
        // bf16: a parameter from the pass's bf16 copy, an operand made ready
        // from its copy; anything else rounded here, once for all the
        // products that read it
        let cache = self.bf16_params.borrow();
        let params = cache.as_ref().map(|(addr, buf)| (*addr, buf));
        let mut rounded = Rounded::new();
        for p in &products {
            let (la, lb, _) = p.shape.spans();
            for (x, len) in [(&p.a, la), (&p.b, lb)] {
                if let Some(r) = x.ready {
                    // the copy holds the span (and all the values, where
                    // they were written too)
                    let (o, values) = (x.at.1, x.at.0.len());
                    if o + len > r.bits.len() || (r.values_read && r.bits.len() != values) {
                        let e = format!("{} values ready for {values} at {o}", r.bits.len());
                        return Err(gpu_error(PART, "product", e));
                    }
                    continue;
                }
                // (the f32 view checks the span against the buffer)
                let v = operand(&p.shape, x.at, len)?;
                let k = operand_key(x.at, len);
                let ready = params.is_some_and(|(addr, _)| addr == k.0)
                    || rounded.iter().any(|(r, _)| *r == k);
                if !ready {
                    let h = self.profile.time("bf16 operands", || {
                        let mut h = self.alloc_output::<u16>(len)?;
                        self.ew.to_bf16(&v, &mut h, len)?;
                        Ok(h)
                    })?;
                    rounded.push((k, h));
                }
            }
        }
        for p in products {
            let (la, lb, _) = p.shape.spans();
            let (sh, beta) = (p.shape, beta(&p));
            let va = bf16_view(p.a, la, params, &rounded);
            let vb = bf16_view(p.b, lb, params, &rounded);
            let mut cv = result(&sh, p.c)?;
            self.profile.time(PRODUCT, || {
                self.blas.gemm(&sh, &va, &vb, &mut cv, (1.0, beta), false)
            })?;
        }
        Ok(())
    }

    fn embed(
        &self,
        (t, o): At<CudaSlice<f32>>,
        ids: &CudaSlice<u32>,
        x: &mut CudaSlice<f32>,
        d: usize,
    ) -> Result<()> {
        self.profile
            .time("embedding", || self.ew.embed(&t.slice(o..), ids, x, d))
    }
    fn embed_grad(
        &self,
        dx: &CudaSlice<f32>,
        rows: &TokenIndex<CudaSlice<u32>>,
        (dt, o): AtMut<CudaSlice<f32>>,
        d: usize,
    ) -> Result<()> {
        self.profile.time("embedding grad", || {
            if rows.host.tokens.is_empty() {
                return Ok(());
            }
            self.ew.embed_grad(
                dx,
                (&rows.tokens, &rows.starts, &rows.positions),
                &mut dt.slice_mut(o..),
                d,
            )
        })
    }

    fn rms_norm(
        &self,
        x: &CudaSlice<f32>,
        (w, wo): At<CudaSlice<f32>>,
        o: Written<CudaSlice<f32>, Bf16Copy>,
        inv: &mut CudaSlice<f32>,
        rows: usize,
        d: usize,
        eps: f32,
    ) -> Result<()> {
        self.profile.time("rms norm", || {
            self.norm
                .forward(x, &w.slice(wo..wo + d), o, inv, rows, d, eps)
        })
    }
    fn rms_norm_grad(
        &self,
        x: &CudaSlice<f32>,
        g: &CudaSlice<f32>,
        inv: &CudaSlice<f32>,
        (w, wo): At<CudaSlice<f32>>,
        dx: Written<CudaSlice<f32>, Bf16Copy>,
        (dw, dwo): AtMut<CudaSlice<f32>>,
        rows: usize,
        d: usize,
    ) -> Result<()> {
        self.profile.time("rms norm grad", || {
            let mut partials = self.alloc(weight_blocks(rows) * d)?;
            self.norm.backward(
                x,
                g,
                inv,
                &w.slice(wo..wo + d),
                dx,
                (&mut dw.slice_mut(dwo..dwo + d), &mut partials),
                rows,
                d,
            )
        })
    }

    fn position_bias(
        &self,
        (t, o): At<CudaSlice<f32>>,
        buckets: &CudaSlice<u32>,
        pos: &mut CudaSlice<f32>,
        heads: usize,
        tq: usize,
        tk: usize,
    ) -> Result<()> {
        self.profile.time("position bias", || {
            self.att
                .position_bias(&t.slice(o..), buckets, pos, (heads, tq, tk))
        })
    }
    fn softmax(
        &self,
        scores: &mut CudaSlice<f32>,
        pos: Option<&CudaSlice<f32>>,
        mask: &CudaSlice<f32>,
        dropout: Option<(&CudaSlice<f32>, &mut CudaSlice<f32>)>,
        ready: Option<&mut Bf16Copy>,
        sh: AttnShape,
    ) -> Result<()> {
        self.profile.time("softmax", || {
            self.att
                .softmax_forward(scores, pos, mask, dropout, ready, sh)
        })
    }
    fn softmax_grad(
        &self,
        (dp, ready): Written<CudaSlice<f32>, Bf16Copy>,
        p: &CudaSlice<f32>,
        drop: Option<&CudaSlice<f32>>,
        sh: AttnShape,
    ) -> Result<()> {
        self.profile.time("softmax grad", || {
            self.att.softmax_backward(dp, p, drop, ready, sh)
        })
    }
    fn bias_grad(
        &self,
        ds: Operand<CudaSlice<f32>, Bf16Copy>,
        dpos: &mut CudaSlice<f32>,
        sh: AttnShape,
    ) -> Result<()> {
        self.profile.time("position bias grad", || {
            let ((values, o), n) = (ds.at, sh.rows() * sh.s);
            if o != 0 || values.len() < n {
                let e = format!("dS at {o} of {} values for {n}", values.len());
                return Err(gpu_error(PART, "position bias gradient", e));
            }
            // dS as the products read it
            let read = match (self.precision, ds.ready) {
                (Precision::Bf16, Some(r)) => ScoresGrad::Bits(&r.bits),
                (Precision::Bf16, None) => ScoresGrad::Rounded,
                _ => ScoresGrad::Values,
            };
            self.att.bias_grad(values, read, dpos, sh)
        })
    }
    fn bucket_grad(
        &self,
        dpos: &CudaSlice<f32>,
        buckets: &CudaSlice<u32>,
        (dt, o): AtMut<CudaSlice<f32>>,
        (heads, t, s): (usize, usize, usize),
        nb: usize,
    ) -> Result<()> {
        self.profile.time("position bias grad", || {
            let mut partials = self.alloc(heads * t * nb)?;
            self.att.bucket_grad(
                dpos,
                buckets,
                &mut partials,
                &mut dt.slice_mut(o..o + nb * heads),
                (heads, t, s),
                nb,
            )
        })
    }

    fn gated(
        &self,
        ab: &CudaSlice<f32>,
        f: usize,
        mask: Option<&CudaSlice<f32>>,
        (h, ready): Written<CudaSlice<f32>, Bf16Copy>,
    ) -> Result<()> {
        self.profile.time("gated gelu", || {
            let rows = gated_rows(ab, f, written_len(h, &ready), mask)?;
            self.ew.gated_forward(ab, mask, (h, ready), (rows, f))
        })
    }
    fn gated_grad(
        &self,
        g: &CudaSlice<f32>,
        ab: &CudaSlice<f32>,
        f: usize,
        mask: Option<&CudaSlice<f32>>,
        (dab, ready): Written<CudaSlice<f32>, Bf16Copy>,
    ) -> Result<()> {
        self.profile.time("gated gelu grad", || {
            let rows = gated_rows(ab, f, g.len(), mask)?;
            let n = written_len(dab, &ready);
            if n != ab.len() {
                let e = format!("{n} gradient values for {}", ab.len());
                return Err(gpu_error(PART, "gated GELU", e));
            }
            self.ew.gated_backward(g, ab, mask, (dab, ready), (rows, f))
        })
    }
    fn relu(
        &self,
        (h, ready): Written<CudaSlice<f32>, Bf16Copy>,
        mask: Option<&CudaSlice<f32>>,
    ) -> Result<()> {
        self.profile.time("relu", || {
            let n = h.len();
            self.ew.relu_forward((h, ready), mask, n)
        })
    }
    fn relu_grad(
        &self,
        (g, ready): Written<CudaSlice<f32>, Bf16Copy>,
        h: &CudaSlice<f32>,
        mask: Option<&CudaSlice<f32>>,
    ) -> Result<()> {
        self.profile.time("relu grad", || {
            self.ew.relu_backward((g, ready), h, mask, h.len())
        })
    }
    fn dropout_mask(&self, draw: &MaskDraw) -> Result<CudaSlice<f32>> {
        self.profile.time("dropout masks", || {
            let mut m = self.alloc_output(draw.n)?;
            self.ew.dropout_mask(draw, &mut m)?;
            Ok(m)
        })
    }
    fn residual(
        &self,
        x: &CudaSlice<f32>,
        y: &CudaSlice<f32>,
        mask: Option<&CudaSlice<f32>>,
    ) -> Result<CudaSlice<f32>> {
        self.profile.time("residual add", || {
            let mut out = self.output(x.len())?;
            self.ew.residual(&mut out, x, y, mask, x.len())?;
            Ok(out)
        })
    }
    fn to_heads(
        &self,
        x: &CudaSlice<f32>,
        sh: HeadsShape,
        ready: Option<&mut Bf16Copy>,
    ) -> Result<CudaSlice<f32>> {
        self.profile.time("heads layout", || {
            if x.len() != sh.values() {
                let e = format!("{sh:?} of {} values", x.len());
                return Err(gpu_error(PART, "heads layout", e));
            }
            let mut out = self.output_for(sh.values(), ready.as_deref())?;
            self.ew.to_heads(x, (&mut out, ready), sh)?;
            Ok(out)
        })
    }
    fn to_rows(
        &self,
        parts: &[&CudaSlice<f32>],
        sh: HeadsShape,
        ready: Option<&mut Bf16Copy>,
    ) -> Result<CudaSlice<f32>> {
        self.profile.time("heads layout", || {
            let each = sh.values() / sh.parts.max(1);
            // (how many parts the kernel takes, DeviceElementwise::to_rows checks)
            if parts.len() != sh.parts || parts.iter().any(|p| p.len() != each) {
                let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
                let e = format!("{sh:?} of parts of {lens:?} values");
                return Err(gpu_error(PART, "heads layout", e));
            }
            let mut out = self.output_for(sh.values(), ready.as_deref())?;
            self.ew.to_rows(parts, (&mut out, ready), sh)?;
            Ok(out)
        })
    }
    fn scale(&self, x: &mut CudaSlice<f32>, s: f32) -> Result<()> {
        self.profile.time("scale", || {
            let n = x.len();
            self.ew.scale(x, s, n)
        })
    }

    fn loss(
        &self,
        logits: &CudaSlice<f32>,
        nv: (usize, usize),
        targets: &CudaSlice<u32>,
        weights: &CudaSlice<f32>,
        s: LossSettings,
        rows: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.profile.time("loss", || {
            self.loss.forward(logits, nv, targets, weights, s, rows)
        })
    }
    fn loss_grad(
        &self,
        (logits, ready): Written<CudaSlice<f32>, Bf16Copy>,
        nv: (usize, usize),
        targets: &CudaSlice<u32>,
        weights: &CudaSlice<f32>,
        g_out_rows: (&CudaSlice<f32>, &CudaSlice<f32>),
        s: LossSettings,
    ) -> Result<()> {
        self.profile.time("loss grad", || {
            self.loss
                .grad_in_place(logits, ready, nv, targets, weights, g_out_rows, s)
        })
    }
}
