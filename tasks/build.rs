//! Sets `cfg(t5mix_shared_data)` for the reference tests (build/shared_data.rs).
include!("../build/shared_data.rs");

fn main() {
    shared_data_cfg(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
}
