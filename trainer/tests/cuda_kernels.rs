//! The CUDA kernels compile with NVRTC on any machine (no GPU needed), so
//! a kernel that does not compile fails here, in CI. Running them and
//! checking them against their CPU twin (`trainer::device::twin`) needs the
//! device machine.

use t5mix_trainer::device::{compile, compile_optimizer, OPTIMIZER_KERNELS};

#[test]
#[cfg_attr(
    not(t5mix_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.88"
)]
fn optimizer_kernels_compile_with_nvrtc_for_sm90() {
    for flush_denormals in [true, false] {
        let c = compile_optimizer("sm_90", flush_denormals).unwrap();
        assert!(c.cubin.starts_with(b"\x7fELF"), "a CUBIN is an ELF file");
        assert!(c.ptx.contains(".target sm_90"), "{}", &c.ptx[..400]);
        // every entry point listed, and only those
        for k in OPTIMIZER_KERNELS {
            assert!(c.ptx.contains(&format!(".entry {k}(")), "{k} missing");
        }
        assert_eq!(c.ptx.matches(".entry ").count(), OPTIMIZER_KERNELS.len());
        // products and sums round as on the CPU: no fused multiply-add
        assert!(!c.ptx.contains("fma.rn"), "fused multiply-add in the PTX");
        assert_eq!(c.ptx.contains(".ftz"), flush_denormals);
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
