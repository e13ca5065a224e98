//! Training a unigram SentencePiece model with T5's settings, through a small
//! C ABI shim over the SentencePiece C++ trainer (`spm_shim/trainer.cc`,
//! built when the library is installed; see `pipeline/build.rs`).

use std::path::{Path, PathBuf};

use super::VocabError;

/// T5's trainer settings (seqio/T5 vocabularies: unigram, `nmt_nfkc`,
/// character coverage 0.9995, pad 0, eos 1, unk 2, no bos).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Pieces in the model (T5: 32000).
    pub vocab_size: u32,
    /// Sentences sampled for training (0: all).
    pub input_sentence_size: u64,
    /// Share of characters covered by pieces.
    pub character_coverage: f64,
    /// Trainer threads.
    pub num_threads: usize,
    /// Seed of the trainer's random generator (sentence sampling).
    pub seed: u32,
    /// Longest sentence kept, in bytes.
    pub max_sentence_length: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            vocab_size: 32000,
            input_sentence_size: 10_000_000,
            character_coverage: 0.9995,
            num_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            seed: 0,
            max_sentence_length: 1 << 20,
        }
    }
}

/// Whether this build has the SentencePiece trainer.
pub fn trainer_available() -> bool {
    cfg!(spm_trainer)
}

#[cfg(spm_trainer)]
mod ffi {
    use std::os::raw::{c_char, c_int, c_long, c_uint, c_void};
    extern "C" {
        pub fn t5mix_spm_train(
            keys: *const *const c_char,
            values: *const *const c_char,
            n: usize,
            seed: c_uint,
        ) -> *mut c_char;
        pub fn t5mix_spm_free(p: *mut c_char);
        pub fn t5mix_spm_load(model: *const c_char) -> *mut c_void;
        pub fn t5mix_spm_encode(
            h: *mut c_void,
            text: *const c_char,
            len: usize,
            out: *mut c_int,
            cap: usize,
        ) -> c_long;
        pub fn t5mix_spm_unload(h: *mut c_void);
    }
}

#[cfg(spm_trainer)]
fn cstring(s: &str) -> Result<std::ffi::CString, VocabError> {
    std::ffi::CString::new(s)
        .map_err(|_| VocabError::Train(format!("argument {s:?} holds a NUL byte")))
}

/// Trains on a text file (one sentence per line) and writes
/// `<model_prefix>.model` and `<model_prefix>.vocab`. Returns the model path.
pub fn train_from_text_file(
    input: &Path,
    model_prefix: &Path,
    opts: &TrainOptions,
) -> Result<PathBuf, VocabError> {
    let flags: Vec<(&str, String)> = vec![
        ("input", input.display().to_string()),
        ("model_prefix", model_prefix.display().to_string()),
        ("model_type", "unigram".into()),
        ("vocab_size", opts.vocab_size.to_string()),
        ("character_coverage", opts.character_coverage.to_string()),
        ("normalization_rule_name", "nmt_nfkc".into()),
        ("pad_id", "0".into()),
        ("eos_id", "1".into()),
        ("unk_id", "2".into()),
        ("bos_id", "-1".into()),
        ("input_sentence_size", opts.input_sentence_size.to_string()),
        ("shuffle_input_sentence", "true".into()),
        ("num_threads", opts.num_threads.max(1).to_string()),
        ("max_sentence_length", opts.max_sentence_length.to_string()),
        ("minloglevel", "1".into()),
    ];
    train_with_flags(&flags, opts.seed)?;
    Ok(PathBuf::from(format!("{}.model", model_prefix.display())))
}

#[cfg(spm_trainer)]
fn train_with_flags(flags: &[(&str, String)], seed: u32) -> Result<(), VocabError> {
    let keys: Vec<std::ffi::CString> = flags
        .iter()
        .map(|(k, _)| cstring(k))
        .collect::<Result<_, _>>()?;
    let values: Vec<std::ffi::CString> = flags
        .iter()
        .map(|(_, v)| cstring(v))
        .collect::<Result<_, _>>()?;
    let kp: Vec<*const std::os::raw::c_char> = keys.iter().map(|c| c.as_ptr()).collect();
    let vp: Vec<*const std::os::raw::c_char> = values.iter().map(|c| c.as_ptr()).collect();
    // SAFETY: the pointers live until the call returns; the shim copies them.
    let err = unsafe { ffi::t5mix_spm_train(kp.as_ptr(), vp.as_ptr(), kp.len(), seed) };
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a NUL-terminated string from the shim, released right after.
    let msg = unsafe { std::ffi::CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { ffi::t5mix_spm_free(err) };
    Err(VocabError::Train(msg))
}

#[cfg(not(spm_trainer))]
fn train_with_flags(_: &[(&str, String)], _: u32) -> Result<(), VocabError> {
    Err(VocabError::TrainerUnavailable)
}

/// The SentencePiece C++ encoder, to check the Rust one against it.
#[cfg(spm_trainer)]
pub struct ReferenceEncoder {
    handle: *mut std::os::raw::c_void,
}

#[cfg(spm_trainer)]
impl ReferenceEncoder {
    /// Loads a model with the C++ library.
    pub fn load(model: &Path) -> Result<Self, VocabError> {
        let c = cstring(&model.display().to_string())?;
        // SAFETY: a valid C string; NULL is checked.
        let handle = unsafe { ffi::t5mix_spm_load(c.as_ptr()) };
        if handle.is_null() {
            return Err(VocabError::Invalid {
                path: model.to_path_buf(),
                message: "the SentencePiece C++ library cannot load it".into(),
            });
        }
        Ok(ReferenceEncoder { handle })
    }

    /// Ids of `text`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = vec![0i32; text.len() + 8];
        // SAFETY: `out` has room for `cap` ids; the handle is live.
        let n = unsafe {
            ffi::t5mix_spm_encode(
                self.handle,
                text.as_ptr().cast(),
                text.len(),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        out.truncate(n.max(0) as usize);
        out.into_iter().map(|x| x as u32).collect()
    }
}

#[cfg(spm_trainer)]
impl Drop for ReferenceEncoder {
    fn drop(&mut self) {
        // SAFETY: loaded by t5mix_spm_load, released once.
        unsafe { ffi::t5mix_spm_unload(self.handle) }
    }
}

/// Removes a file when dropped (the trainer's sentence file).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What [`train_from_inputs`] did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Input files read.
    pub files: usize,
    /// Non-empty lines given to the trainer.
    pub lines: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The model written.
    pub model: PathBuf,
    /// Pieces in it.
    pub pieces: u32,
    /// Seconds the trainer took.
    pub seconds: f64,
}

impl std::fmt::Display for TrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vocab train: {} lines ({:.1} MB) from {} file(s) -> {} ({} pieces) in {:.1} s",
            self.lines,
            self.bytes as f64 / 1e6,
            self.files,
            self.model.display(),
            self.pieces,
            self.seconds
        )
    }
}

/// Trains on every non-empty line of the documents of `inputs` (clean
/// shards, JSONL, WET, text: files, folders, globs) and writes
/// `<model_prefix>.model` / `.vocab`.
pub fn train_from_inputs(
    inputs: &[String],
    model_prefix: &Path,
    opts: &TrainOptions,
) -> Result<TrainReport, VocabError> {
    use std::io::Write;
    if !trainer_available() {
        return Err(VocabError::TrainerUnavailable);
    }
    let err = |e: &dyn std::fmt::Display| VocabError::Train(e.to_string());
    let files = crate::readers::expand_inputs(inputs).map_err(|e| err(&e))?;
    // The sentences go beside the output (not in a random temporary folder)
    // because the trainer records their path in the model: the same command
    // then writes the same bytes.
    if let Some(dir) = model_prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(&crate::PipelineError::io(dir, e)))?;
    }
    let text_path = PathBuf::from(format!("{}.sentences.tmp", model_prefix.display()));
    let _remove = RemoveOnDrop(text_path.clone());
    let file = std::fs::File::create(&text_path).map_err(|e| err(&e))?;
    let mut w = std::io::BufWriter::new(file);
    let (mut lines, mut bytes) = (0u64, 0u64);
    let read = crate::readers::ReadOptions::default();
    for f in &files {
        crate::readers::read_file(f, &read, &mut |d| {
            for l in d.text.split('\n').filter(|l| !l.trim().is_empty()) {
                lines += 1;
                bytes += l.len() as u64;
                w.write_all(l.as_bytes())
                    .and_then(|_| w.write_all(b"\n"))
                    .map_err(|e| crate::PipelineError::io(&text_path, e))?;
            }
            Ok(())
        })
        .map_err(|e| err(&e))?;
    }
    w.flush().map_err(|e| err(&e))?;
    drop(w);
    let t = std::time::Instant::now();
    // Trained under `<prefix>.part`, checked, then renamed: an interrupted
    // run leaves no `.model` behind.
    let part = PathBuf::from(format!("{}.part", model_prefix.display()));
    let part_model = train_from_text_file(&text_path, &part, opts)?;
    let pieces = super::Vocabulary::load(&part_model, 0)?.vocab_size();
    let model = PathBuf::from(format!("{}.model", model_prefix.display()));
    for (from, to) in [
        (part_model, model.clone()),
        (
            PathBuf::from(format!("{}.vocab", part.display())),
            PathBuf::from(format!("{}.vocab", model_prefix.display())),
        ),
    ] {
        std::fs::rename(&from, &to).map_err(|e| err(&crate::PipelineError::io(&to, e)))?;
    }
    Ok(TrainReport {
        files: files.len(),
        lines,
        bytes,
        model,
        pieces,
        seconds: t.elapsed().as_secs_f64(),
    })
}
