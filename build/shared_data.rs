// Included by the crates' build scripts (one home for the rule): sets the
// cfg `t5mix_shared_data` when the shared third-party data is there —
// `T5MIX_SHARED_DATA`, else `shared/data` beside the workspace — so tests
// that need it run, and are reported as ignored without it. With
// `T5MIX_REQUIRE_SHARED_DATA=1` (CI) missing data fails the build instead.
fn shared_data_cfg(workspace: &std::path::Path) {
    println!("cargo:rustc-check-cfg=cfg(t5mix_shared_data)");
    println!("cargo:rerun-if-env-changed=T5MIX_SHARED_DATA");
    println!("cargo:rerun-if-env-changed=T5MIX_REQUIRE_SHARED_DATA");
    let dir = match std::env::var_os("T5MIX_SHARED_DATA") {
        Some(p) => std::path::PathBuf::from(p),
        None => workspace.join("../shared/data"),
    };
    println!("cargo:rerun-if-changed={}", dir.display());
    if dir.is_dir() {
        println!("cargo:rustc-cfg=t5mix_shared_data");
    } else if std::env::var_os("T5MIX_REQUIRE_SHARED_DATA").is_some_and(|v| v == "1") {
        panic!(
            "T5MIX_REQUIRE_SHARED_DATA=1 but the shared data is not at {} (set T5MIX_SHARED_DATA)",
            dir.display()
        );
    }
}

// Sets the cfg `name` when `python3` imports `module` (at `version`, if
// given): a package that tests compute their reference with at test time
// (sentencepiece, pyarrow, tensorboard). Those tests carry
// `#[cfg_attr(not(name), ignore = "…")]`, so they are reported as ignored
// without it; `T5MIX_REQUIRE_PYTHON_REFERENCES=1` (CI, which installs
// them) makes a missing one a build failure. Installing a package reruns
// this (the site-packages folder changes).
#[allow(dead_code)]
fn python_module_cfg(name: &str, module: &str, version: Option<&str>) {
    println!("cargo:rustc-check-cfg=cfg({name})");
    println!("cargo:rerun-if-env-changed=T5MIX_REQUIRE_PYTHON_REFERENCES");
    println!("cargo:rerun-if-env-changed=PATH");
    let run = |code: &str| {
        std::process::Command::new("python3")
            .args(["-c", code])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(dirs) = run("import site; print('\\n'.join(site.getsitepackages()))") {
        for d in dirs.lines() {
            println!("cargo:rerun-if-changed={d}");
        }
    }
    let found = run(&format!("import {module}; print({module}.__version__)"));
    let ok = match (&found, version) {
        (Some(v), Some(want)) => v == want,
        (found, _) => found.is_some(),
    };
    if ok {
        println!("cargo:rustc-cfg={name}");
    } else if std::env::var_os("T5MIX_REQUIRE_PYTHON_REFERENCES").is_some_and(|v| v == "1") {
        panic!(
            "T5MIX_REQUIRE_PYTHON_REFERENCES=1 but python3 has no {module}{} (found: {found:?}); \
             pip install {module}{}",
            version.map(|v| format!(" {v}")).unwrap_or_default(),
            version.map(|v| format!("=={v}")).unwrap_or_default()
        );
    }
}

// Sets the cfg `t5mix_slurm` when a Slurm cluster answers here (`sinfo`
// lists an idle or busy node; scripts/slurm-single-node.sh starts one), for
// the test that submits a staged clean's job arrays. With
// `T5MIX_REQUIRE_SLURM=1` (CI, which starts the cluster) a missing one is a
// build failure.
#[allow(dead_code)]
fn slurm_cfg() {
    println!("cargo:rustc-check-cfg=cfg(t5mix_slurm)");
    println!("cargo:rerun-if-env-changed=T5MIX_REQUIRE_SLURM");
    let up = std::process::Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| {
            let s = String::from_utf8_lossy(&o.stdout);
            ["idle", "mix", "alloc"].iter().any(|k| s.contains(k))
        });
    if up {
        println!("cargo:rustc-cfg=t5mix_slurm");
    } else if std::env::var_os("T5MIX_REQUIRE_SLURM").is_some_and(|v| v == "1") {
        panic!("T5MIX_REQUIRE_SLURM=1 but no Slurm cluster answers (sinfo); start one with scripts/slurm-single-node.sh");
    }
}

// Sets the cfg `t5mix_spm_trainer` when pkg-config finds the SentencePiece
// C++ library that pipeline/build.rs builds `t5mix vocab train` against (and
// T5MIX_NO_SPM_TRAINER does not turn it off), for the end-to-end tests that
// train a vocabulary: without it they are reported as ignored.
#[allow(dead_code)]
fn spm_trainer_cfg() {
    println!("cargo:rustc-check-cfg=cfg(t5mix_spm_trainer)");
    println!("cargo:rerun-if-env-changed=T5MIX_NO_SPM_TRAINER");
    let found = std::env::var_os("T5MIX_NO_SPM_TRAINER").is_none()
        && std::process::Command::new("pkg-config")
            .args(["--exists", "sentencepiece"])
            .status()
            .is_ok_and(|s| s.success());
    if found {
        println!("cargo:rustc-cfg=t5mix_spm_trainer");
    }
}

// Sets the cfg `t5mix_nvrtc` when NVRTC is there for the test that compiles
// the CUDA kernels without a GPU: `T5MIX_NVRTC` (the library file), else the
// CUDA 13 wheel in python3's site-packages (`pip install
// nvidia-cuda-nvrtc==13.0.88`) — the places trainer::device::nvrtc_path
// looks at run time. `T5MIX_REQUIRE_PYTHON_REFERENCES=1` (CI, which
// installs the wheel) makes a missing one a build failure.
#[allow(dead_code)]
fn nvrtc_cfg() {
    println!("cargo:rustc-check-cfg=cfg(t5mix_nvrtc)");
    println!("cargo:rerun-if-env-changed=T5MIX_NVRTC");
    let found = match std::env::var_os("T5MIX_NVRTC") {
        Some(p) => std::path::Path::new(&p).is_file(),
        None => std::process::Command::new("python3")
            .args([
                "-c",
                "import site, os, sys; sys.exit(not any(os.path.isfile(os.path.join(d, 'nvidia/cu13/lib/libnvrtc.so.13')) for d in site.getsitepackages() + [site.getusersitepackages()]))",
            ])
            .status()
            .is_ok_and(|s| s.success()),
    };
    if found {
        println!("cargo:rustc-cfg=t5mix_nvrtc");
    } else if std::env::var_os("T5MIX_REQUIRE_PYTHON_REFERENCES").is_some_and(|v| v == "1") {
        panic!(
            "T5MIX_REQUIRE_PYTHON_REFERENCES=1 but NVRTC is not there: \
             pip install nvidia-cuda-nvrtc==13.0.88 (or set T5MIX_NVRTC)"
        );
    }
}

// Sets the cfg `t5mix_gpu` when `nvidia-smi -L` lists a GPU, for the tests
// that run our CUDA kernels: without one they are reported as ignored (a
// test binary built here and run on the device machine runs them with
// `--include-ignored`: scripts/gpu-check.sh).
#[allow(dead_code)]
fn gpu_cfg() {
    println!("cargo:rustc-check-cfg=cfg(t5mix_gpu)");
    let gpu = std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains("GPU"));
    if gpu {
        println!("cargo:rustc-cfg=t5mix_gpu");
    }
}
