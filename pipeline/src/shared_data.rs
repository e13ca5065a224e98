//! Locating the real third-party data in `../shared/data` for tests and
//! benchmarks: `T5MIX_SHARED_DATA` if set, else `shared/data` next to the
//! workspace. The data is never copied into the project.

use std::path::PathBuf;

/// The shared data folder, if it exists.
pub fn shared_data_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("T5MIX_SHARED_DATA") {
        let p = PathBuf::from(p);
        return p.is_dir().then_some(p);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = workspace.join("../shared/data");
    p.is_dir().then(|| p.canonicalize().unwrap_or(p))
}

/// A file or folder inside the shared data, if the folder is present. A
/// file missing from a present folder is a panic, not a skip: the tests
/// that need the data are marked `#[cfg_attr(not(t5mix_shared_data),
/// ignore)]` (the build scripts set the cfg when the folder is there), so
/// without the folder they are reported as ignored, and with it they check
/// everything or fail.
pub fn shared_path(rel: &str) -> Option<PathBuf> {
    let dir = shared_data_dir()?;
    let p = dir.join(rel);
    assert!(
        p.exists(),
        "the shared data at {} has no {rel}: it is incomplete",
        dir.display()
    );
    Some(p)
}

/// A file or folder of the shared data, for tests: they carry
/// `#[cfg_attr(not(t5mix_shared_data), ignore = "…")]`, so without the data
/// they are reported as ignored and never get here; run anyway
/// (`--include-ignored`), this panics rather than pass having checked
/// nothing.
pub fn shared_file(rel: &str) -> PathBuf {
    shared_path(rel).unwrap_or_else(|| {
        panic!("needs the shared data ({rel}): set T5MIX_SHARED_DATA or put it at ../shared/data")
    })
}

/// The rows of a JSON Lines file of the shared data, for tests (as
/// [`shared_file`]). Panics on a malformed row: the reference files are
/// fixed inputs.
pub fn shared_jsonl(rel: &str) -> Vec<serde_json::Value> {
    read_jsonl(&shared_file(rel))
}

/// Like [`shared_path`], printing a skip notice when the data is missing:
/// for benchmarks, which skip what they cannot measure (tests use
/// [`shared_file`]).
pub fn shared_or_skip(rel: &str, test: &str) -> Option<PathBuf> {
    let p = shared_path(rel);
    if p.is_none() {
        eprintln!(
            "SKIP {test}: shared data {rel} not found (set T5MIX_SHARED_DATA or put it at ../shared/data)"
        );
    }
    p
}

/// The rows of a JSON Lines file.
pub fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// A JSON array of token ids.
pub fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array of ids: {v}"))
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}
