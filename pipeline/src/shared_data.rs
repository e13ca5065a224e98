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

/// A file or folder inside the shared data, if the folder is present.
/// Tests print why they skip when this is `None`.
pub fn shared_path(rel: &str) -> Option<PathBuf> {
    let p = shared_data_dir()?.join(rel);
    p.exists().then_some(p)
}

/// Like [`shared_path`], printing a skip notice when the data is missing.
pub fn shared_or_skip(rel: &str, test: &str) -> Option<PathBuf> {
    let p = shared_path(rel);
    if p.is_none() {
        eprintln!(
            "SKIP {test}: shared data {rel} not found (set T5MIX_SHARED_DATA or put it at ../shared/data)"
        );
    }
    p
}
