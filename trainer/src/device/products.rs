//! The products on the GPU through cuBLAS (cudarc; the library loaded at
//! run time, as PyTorch's environment installs it), with tensor cores: f32
//! with or without TF32, and bf16 operands with f32 accumulation and an f32
//! result (`--precision bf16`: f32 master weights, bf16 products, as t5x).
//! dfdx keeps its cuBLAS handle private, so this is a handle of our own on
//! the same primary context.
//!
//! Shapes are row-major, as the trainer stores its tensors: `c[m×n] = α ·
//! op(a) · op(b) + β · c`, batched at fixed strides ([`GemmShape`]).
//! cuBLAS is column-major: the call computes `cᵀ = op(b)ᵀ · op(a)ᵀ`.

use super::gpu_error;
use crate::Result;
use cudarc::cublas::{result, sys, CudaBlas};
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;

/// For the error messages.
const PART: &str = "products";

/// The products' number format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 products, IEEE (TF32 off).
    F32,
    /// f32 operands on TF32 tensor cores (10-bit mantissa products, f32
    /// sums): the default on the GPU.
    #[default]
    Tf32,
    /// bf16 operands, f32 sums and result.
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("precision {s:?}: one of f32, tf32, bf16")),
        }
    }
}

/// A row-major product `c[m×n] = α · op(a) · op(b) + β · c`, `a` stored
/// `[m×k]` (`[k×m]` when `ta`), `b` `[k×n]` (`[n×k]` when `tb`), each with
/// its row stride (`ld*`), `batch` times at the given strides (elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmShape {
    /// Rows of c.
    pub m: usize,
    /// Columns of c.
    pub n: usize,
    /// The summed dimension.
    pub k: usize,
    /// a transposed.
    pub ta: bool,
    /// b transposed.
    pub tb: bool,
    /// Row strides of a, b, c.
    pub ld: (usize, usize, usize),
    /// Products in the batch.
    pub batch: usize,
    /// Strides between the batch's a, b, c.
    pub strides: (usize, usize, usize),
}

impl GemmShape {
    /// One product of dense matrices, `a` and `b` transposed or not.
    pub fn dense((m, n, k): (usize, usize, usize), ta: bool, tb: bool) -> Self {
        GemmShape {
            m,
            n,
            k,
            ta,
            tb,
            ld: (if ta { m } else { k }, if tb { k } else { n }, n),
            batch: 1,
            strides: (m * k, k * n, m * n),
        }
    }

    /// The values each operand spans: (a, b, c).
    pub fn spans(&self) -> (usize, usize, usize) {
        let span = |rows: usize, cols: usize, ld: usize, stride: usize| {
            if rows == 0 || cols == 0 || self.batch == 0 {
                0
            } else {
                (self.batch - 1) * stride + (rows - 1) * ld + cols
            }
        };
        let (ar, ac) = if self.ta {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (br, bc) = if self.tb {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        (
            span(ar, ac, self.ld.0, self.strides.0),
            span(br, bc, self.ld.1, self.strides.1),
            span(self.m, self.n, self.ld.2, self.strides.2),
        )
    }

    /// Checks that the shape fits cuBLAS's 32-bit sizes and the buffers.
    fn check(&self, lens: (usize, usize, usize)) -> Result<()> {
        let spans = self.spans();
        let small = [
            self.m, self.n, self.k, self.ld.0, self.ld.1, self.ld.2, self.batch,
        ]
        .iter()
        .all(|&x| x <= i32::MAX as usize);
        let rows_fit = self.ld.2 >= self.n
            && self.ld.0 >= if self.ta { self.m } else { self.k }
            && self.ld.1 >= if self.tb { self.k } else { self.n };
        if !small || !rows_fit || spans.0 > lens.0 || spans.1 > lens.1 || spans.2 > lens.2 {
            return Err(gpu_error(
                PART,
                "shape",
                format!("{self:?} spans {spans:?}, buffers hold {lens:?}"),
            ));
        }
        Ok(())
    }
}

/// An operand's element type as cuBLAS names it: f32, or bf16 stored as
/// its bits (`u16`, made by `DeviceElementwise::to_bf16`).
pub trait Operand {
    /// cuBLAS's name of the type.
    const TYPE: sys::cudaDataType;
}
impl Operand for f32 {
    const TYPE: sys::cudaDataType = sys::cudaDataType::CUDA_R_32F;
}
impl Operand for u16 {
    const TYPE: sys::cudaDataType = sys::cudaDataType::CUDA_R_16BF;
}

/// cuBLAS on one stream.
pub struct DeviceProducts {
    blas: CudaBlas,
    stream: Arc<CudaStream>,
}

impl DeviceProducts {
    /// A cuBLAS handle on `stream`.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        super::load_cublas()?;
        let blas =
            CudaBlas::new(stream.clone()).map_err(|e| gpu_error(PART, "cuBLAS handle", e))?;
        Ok(DeviceProducts { blas, stream })
    }

    /// `c = α · op(a) · op(b) + β · c` (f32 result) with `a` and `b` of
    /// type `T` (f32, or bf16 bits); f32 operands use TF32 tensor cores
    /// when `tf32`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm<T: Operand, A: DevicePtr<T>, B: DevicePtr<T>, C: DevicePtrMut<f32>>(
        &self,
        sh: &GemmShape,
        a: &A,
        b: &B,
        c: &mut C,
        (alpha, beta): (f32, f32),
        tf32: bool,
    ) -> Result<()> {
        sh.check((a.len(), b.len(), c.len()))?;
        if sh.m == 0 || sh.n == 0 || sh.batch == 0 {
            return Ok(());
        }
        let op = |t: bool| {
            if t {
                sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let compute = if tf32 && T::TYPE == sys::cudaDataType::CUDA_R_32F {
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
        };
        let (pa, _ra) = a.device_ptr(&self.stream);
        let (pb, _rb) = b.device_ptr(&self.stream);
        let (pc, _rc) = c.device_ptr_mut(&self.stream);
        // SAFETY: `check` found the operands within their buffers; alpha
        // and beta are host values alive through the call.
        unsafe {
            result::gemm_strided_batched_ex(
                *self.blas.handle(),
                op(sh.tb),
                op(sh.ta),
                sh.n as i32,
                sh.m as i32,
                sh.k as i32,
                (&alpha as *const f32).cast(),
                pb as *const _,
                T::TYPE,
                sh.ld.1 as i32,
                sh.strides.1 as i64,
                pa as *const _,
                T::TYPE,
                sh.ld.0 as i32,
                sh.strides.0 as i64,
                (&beta as *const f32).cast(),
                pc as *mut _,
                sys::cudaDataType::CUDA_R_32F,
                sh.ld.2 as i32,
                sh.strides.2 as i64,
                sh.batch as i32,
                compute,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| gpu_error(PART, &format!("{sh:?}"), e))
    }
}

/// The CPU's value of a product (f64 sums), for the checks on the device.
pub fn cpu_gemm(sh: &GemmShape, a: &[f32], b: &[f32], c: &mut [f32], (alpha, beta): (f32, f32)) {
    for p in 0..sh.batch {
        let (a, b) = (&a[p * sh.strides.0..], &b[p * sh.strides.1..]);
        let c = &mut c[p * sh.strides.2..];
        for i in 0..sh.m {
            for j in 0..sh.n {
                let mut s = 0f64;
                for l in 0..sh.k {
                    let x = if sh.ta {
                        a[l * sh.ld.0 + i]
                    } else {
                        a[i * sh.ld.0 + l]
                    };
                    let y = if sh.tb {
                        b[j * sh.ld.1 + l]
                    } else {
                        b[l * sh.ld.1 + j]
                    };
                    s += x as f64 * y as f64;
                }
                let o = &mut c[i * sh.ld.2 + j];
                *o = (alpha as f64 * s + beta as f64 * *o as f64) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_checks() {
        let sh = GemmShape::dense((3, 4, 5), false, true);
        assert_eq!(sh.ld, (5, 5, 4));
        assert_eq!(sh.spans(), (15, 20, 12));
        assert!(sh.check((15, 20, 12)).is_ok());
        let err = sh.check((15, 19, 12)).unwrap_err().to_string();
        assert!(err.contains("buffers hold (15, 19, 12)"), "{err}");
        // a head of attention: rows of q [t, h·dk] at a stride, two heads
        let heads = GemmShape {
            ld: (12, 12, 7),
            batch: 2,
            strides: (6, 6, 21),
            ..GemmShape::dense((3, 7, 6), false, true)
        };
        assert_eq!(
            heads.spans(),
            (6 + 2 * 12 + 6, 6 + 6 * 12 + 6, 21 + 2 * 7 + 7)
        );
        let bad = GemmShape {
            ld: (5, 5, 3),
            ..sh
        };
        assert!(bad.check((100, 100, 100)).is_err(), "rows of c overlap");
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("fp16"
            .parse::<Precision>()
            .unwrap_err()
            .contains("f32, tf32, bf16"));
    }

    #[test]
    fn the_cpu_product_follows_the_shape() {
        // [[1, 2], [3, 4]] · [[5, 6], [7, 8]]ᵀ (b transposed) = [[17, 23], [39, 53]]
        let sh = GemmShape::dense((2, 2, 2), false, true);
        let mut c = vec![1.0; 4];
        cpu_gemm(
            &sh,
            &[1., 2., 3., 4.],
            &[5., 6., 7., 8.],
            &mut c,
            (1.0, 1.0),
        );
        assert_eq!(c, [18., 24., 40., 54.]);
        let sh = GemmShape::dense((2, 2, 2), true, false);
        let mut c = vec![0.0; 4];
        cpu_gemm(
            &sh,
            &[1., 2., 3., 4.],
            &[5., 6., 7., 8.],
            &mut c,
            (2.0, 0.0),
        );
        // aᵀ = [[1, 3], [2, 4]]: aᵀ·b = [[26, 30], [38, 44]]
        assert_eq!(c, [52., 60., 76., 88.]);
    }
}
