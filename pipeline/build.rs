//! Builds the optional C++ shim over the SentencePiece library (trainer and
//! reference encoder) when pkg-config finds it (Debian/Ubuntu:
//! `apt install libsentencepiece-dev pkg-config`). Without it, everything
//! else builds and `t5mix vocab train` says how to enable it.
include!("../build/shared_data.rs");

fn main() {
    shared_data_cfg(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    python_module_cfg("t5mix_py_sentencepiece", "sentencepiece", Some("0.2.3"));
    python_module_cfg("t5mix_py_trafilatura", "trafilatura", Some("2.3.1"));
    println!("cargo:rustc-check-cfg=cfg(spm_trainer)");
    println!("cargo:rerun-if-changed=spm_shim/trainer.cc");
    println!("cargo:rerun-if-env-changed=T5MIX_NO_SPM_TRAINER");
    if std::env::var_os("T5MIX_NO_SPM_TRAINER").is_some() {
        return;
    }
    match pkg_config::Config::new().probe("sentencepiece") {
        Ok(lib) => {
            let mut b = cc::Build::new();
            b.cpp(true)
                .file("spm_shim/trainer.cc")
                .flag_if_supported("-std=c++17");
            for p in &lib.include_paths {
                b.include(p);
            }
            b.compile("t5mix_spm_shim");
            // pkg-config already linked sentencepiece and sentencepiece_train.
            println!("cargo:rustc-cfg=spm_trainer");
        }
        Err(e) => {
            println!(
                "cargo:warning=SentencePiece C++ library not found ({e}); `t5mix vocab train` is disabled. \
                 Install libsentencepiece-dev and pkg-config to enable it."
            );
        }
    }
}
