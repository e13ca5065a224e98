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
    cuda_standin();
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

/// Builds the CPU stand-in of the CUDA driver, NVRTC and cuBLAS
/// (`trainer/cuda/standin/`) with the C++ compiler into
/// `$OUT_DIR/cuda-standin`, for the GPU tests on machines without a GPU:
/// sets the cfg `t5mix_cuda_standin` and `T5MIX_CUDA_STANDIN_DIR` (the
/// folder) when it built, and passes the folder on to the t5mix binary's
/// build script (`DEP_T5MIX_TRAINER_STANDIN_DIR`). Where it does not
/// build, those tests are ignored, or with
/// `T5MIX_REQUIRE_PYTHON_REFERENCES=1` (CI) the build fails; on processors
/// other than x86-64 they are ignored.
fn cuda_standin() {
    println!("cargo:rustc-check-cfg=cfg(t5mix_cuda_standin)");
    // its kernels' threads switch stacks in x86-64 assembly
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("x86_64") {
        println!(
            "cargo:warning=the CPU stand-in of CUDA runs on x86-64 only: the GPU tests are ignored"
        );
        return;
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda/standin");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=CXX");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"))
        .join("cuda-standin");
    std::fs::create_dir_all(&out).expect("OUT_DIR is writable");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let prelude = src.join("kernel_host.h");
    let mut failed = Vec::new();
    for (file, lib, extra) in [
        ("driver.cpp", "libcuda.so", &["-ldl"][..]),
        ("nvrtc.cpp", "libnvrtc.so", &["-ldl"][..]),
        ("cublas.cpp", "libcublas.so", &[][..]),
    ] {
        let built = std::process::Command::new(&cxx)
            .args(["-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Werror"])
            .arg(format!("-DT5EMU_PRELUDE=\"{}\"", prelude.display()))
            .arg(format!("-Wl,-soname,{lib}"))
            .arg("-o")
            .arg(out.join(lib))
            .arg(src.join(file))
            .args(extra)
            .output();
        match built {
            Ok(o) if o.status.success() => {}
            Ok(o) => failed.push(format!("{file}: {}", String::from_utf8_lossy(&o.stderr))),
            Err(e) => failed.push(format!("{file}: {cxx}: {e}")),
        }
    }
    if failed.is_empty() {
        println!("cargo:rustc-cfg=t5mix_cuda_standin");
        println!("cargo:rustc-env=T5MIX_CUDA_STANDIN_DIR={}", out.display());
        // for the binary's build script (`links`)
        println!("cargo:standin_dir={}", out.display());
    } else if std::env::var_os("T5MIX_REQUIRE_PYTHON_REFERENCES").is_some_and(|v| v == "1") {
        panic!(
            "the CPU stand-in of CUDA did not build: {}",
            failed.join("\n")
        );
    } else {
        println!(
            "cargo:warning=the CPU stand-in of CUDA did not build (the GPU tests are ignored): {}",
            failed.join("; ")
        );
    }
}
