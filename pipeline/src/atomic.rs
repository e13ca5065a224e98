//! Files written under a temporary name and renamed into place when complete,
//! so that an interrupted run never leaves half a file under its real name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{PipelineError, Result};

/// The temporary name of `path`: `.NAME.tmp` in the same directory.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// A file that appears under its name only after [`AtomicFile::commit`].
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<BufWriter<File>>,
    committed: bool,
}

impl AtomicFile {
    /// Creates the temporary file for `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = temp_path(path);
        let file = File::create(&tmp).map_err(|e| PipelineError::io(&tmp, e))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            committed: false,
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer of the temporary file.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.file.as_mut().expect("not committed")
    }

    /// Takes the writer (for encoders that own it); give the file back to
    /// [`AtomicFile::commit_file`].
    pub fn take_writer(&mut self) -> BufWriter<File> {
        self.file.take().expect("not committed")
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> Result<PathBuf> {
        let w = self.file.take().expect("not committed");
        self.finish(w)
    }

    /// Like [`AtomicFile::commit`] for a writer taken with `take_writer`.
    pub fn commit_file(mut self, w: BufWriter<File>) -> Result<PathBuf> {
        self.finish(w)
    }

    fn finish(&mut self, w: BufWriter<File>) -> Result<PathBuf> {
        let f = w
            .into_inner()
            .map_err(|e| PipelineError::io(&self.tmp, e.into_error()))?;
        f.sync_all().map_err(|e| PipelineError::io(&self.tmp, e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| PipelineError::io(&self.path, e))?;
        self.committed = true;
        Ok(self.path.clone())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Not committed: remove the partial temporary file.
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.writer()
        .write_all(bytes)
        .map_err(|e| PipelineError::io(path, e))?;
    f.commit()?;
    Ok(())
}

/// Creates the output folder `dir` (and its parents); a file in its place is
/// named as such.
pub fn create_out_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(PipelineError::Config {
            what: dir.display().to_string(),
            message: "is a file, not a folder: choose another --out".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))
}
