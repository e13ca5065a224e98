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
