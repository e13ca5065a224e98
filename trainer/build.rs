//! Links OpenBLAS for the CPU matrix products when pkg-config finds it
//! (Debian/Ubuntu: `apt install libopenblas-dev pkg-config`); without it
//! the products run in dfdx's own GEMM (the `gemm` crate). Set
//! `T5MIX_NO_OPENBLAS=1` to build without it.
include!("../build/shared_data.rs");

fn main() {
    shared_data_cfg(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    python_module_cfg("t5mix_py_tensorboard", "tensorboard", None);
    // the gradient parity tests' reference (scripts/t5_grads_reference.py)
    python_module_cfg("t5mix_py_torch", "torch", None);
    python_module_cfg("t5mix_py_transformers", "transformers", Some("5.24.0"));
    nvrtc_cfg();
    gpu_cfg();
    println!("cargo:rustc-check-cfg=cfg(t5mix_openblas)");
    println!("cargo:rerun-if-env-changed=T5MIX_NO_OPENBLAS");
    if std::env::var_os("T5MIX_NO_OPENBLAS").is_some() {
        return;
    }
    // CUDA builds keep every product on the GPU.
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        return;
    }
    match pkg_config::Config::new().probe("openblas") {
        Ok(_) => println!("cargo:rustc-cfg=t5mix_openblas"),
        Err(e) => println!(
            "cargo:warning=OpenBLAS not found ({e}); the CPU trainer uses dfdx's GEMM \
             (slower). Install libopenblas-dev and pkg-config to use it."
        ),
    }
}
