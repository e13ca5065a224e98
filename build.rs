//! Sets `cfg(t5mix_shared_data)`, `cfg(t5mix_py_*)` (pyarrow, moto),
//! `cfg(t5mix_slurm)`, `cfg(t5mix_spm_trainer)` and `cfg(t5mix_gpu)` for the
//! end-to-end tests (build/shared_data.rs).
include!("build/shared_data.rs");

fn main() {
    shared_data_cfg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    python_module_cfg("t5mix_py_pyarrow", "pyarrow", None);
    python_module_cfg("t5mix_py_moto", "moto", None);
    slurm_cfg();
    spm_trainer_cfg();
    gpu_cfg();
}
