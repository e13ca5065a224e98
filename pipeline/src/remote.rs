//! Inputs and outputs in object storage (`s3://`, `gs://`, `az://`) and
//! over HTTP(S), through the `object_store` crate: streaming downloads,
//! multipart uploads, listings, and retries with exponential backoff on
//! server errors, throttling and connections or bodies cut short (the
//! crate's `RetryConfig`: at most [`DEFAULT_RETRIES`] retries of a request
//! within three minutes, or `T5MIX_RETRIES`).
//!
//! Credentials and endpoints come from the environment as each store reads
//! them (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`,
//! `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, …).
//!
//! A remote input is kept as a `PathBuf` holding its URL; the cleaner
//! downloads one file at a time next to its spill files ([`Download`]) and
//! reads it there, so local disk holds the files being read, not the
//! corpus.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::error::{PipelineError, Result};

/// URL schemes read and written through `object_store`.
const SCHEMES: [&str; 7] = [
    "s3://", "gs://", "az://", "azure://", "abfss://", "http://", "https://",
];

/// Whether an input or output names object storage or an HTTP URL.
pub fn is_remote(s: &str) -> bool {
    SCHEMES.iter().any(|p| s.starts_with(p))
}

/// Whether a path holds a URL (see [`is_remote`]).
pub fn is_remote_path(p: &Path) -> bool {
    p.to_str().is_some_and(is_remote)
}

fn err(url: &str, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Config {
        what: url.to_string(),
        message: e.to_string(),
    }
}

/// Retries of a failed request when `T5MIX_RETRIES` is not set
/// (object_store's default).
pub const DEFAULT_RETRIES: usize = 10;
/// The most retries `T5MIX_RETRIES` may ask for.
pub const MAX_RETRIES: usize = 100;
/// The environment variable setting the retries of a request.
pub const RETRIES_ENV: &str = "T5MIX_RETRIES";

/// The retry policy: [`DEFAULT_RETRIES`] or `T5MIX_RETRIES` (checked).
fn retry_config() -> Result<object_store::RetryConfig> {
    let mut retry = object_store::RetryConfig {
        max_retries: DEFAULT_RETRIES,
        ..Default::default()
    };
    if let Ok(v) = std::env::var(RETRIES_ENV) {
        retry.max_retries = v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_RETRIES)
            .ok_or_else(|| {
                err(
                    RETRIES_ENV,
                    format!("{v:?} is not a number in 0..={MAX_RETRIES}"),
                )
            })?;
    }
    Ok(retry)
}

/// The store and the object path of a URL.
fn store(url: &str) -> Result<(Arc<dyn ObjectStore>, object_store::path::Path)> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| err(url, "not a URL"))?;
    let (root, key) = rest.split_once('/').unwrap_or((rest, ""));
    let base = format!("{scheme}://{root}");
    let retry = retry_config()?;
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(&base)
                .with_retry(retry.clone())
                .build()
                .map_err(|e| err(url, e))?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(&base)
                .with_retry(retry.clone())
                .build()
                .map_err(|e| err(url, e))?,
        ),
        "az" | "azure" | "abfss" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(&base)
                .with_retry(retry.clone())
                .build()
                .map_err(|e| err(url, e))?,
        ),
        _ => Arc::new(
            object_store::http::HttpBuilder::new()
                .with_url(&base)
                .with_retry(retry.clone())
                .with_client_options(
                    object_store::ClientOptions::new().with_allow_http(scheme == "http"),
                )
                .build()
                .map_err(|e| err(url, e))?,
        ),
    };
    let path = object_store::path::Path::parse(key).map_err(|e| err(url, e))?;
    Ok((store, path))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err("tokio runtime", e))
}

/// The objects under a URL prefix, as URLs, sorted.
pub fn list(prefix: &str) -> Result<Vec<String>> {
    let (store, path) = store(prefix)?;
    let base = &prefix[..prefix.len() - path.as_ref().len() - usize::from(prefix.ends_with('/'))];
    let base = base.trim_end_matches('/');
    let metas: Vec<object_store::ObjectMeta> = runtime()?
        .block_on(async {
            store
                .list(Some(&path))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<std::result::Result<_, _>>()
        })
        .map_err(|e| err(prefix, e))?;
    let mut urls: Vec<String> = metas
        .into_iter()
        .map(|m| format!("{base}/{}", m.location))
        .collect();
    urls.sort();
    Ok(urls)
}

/// Streams an object into `dest`; returns its size.
pub fn download(url: &str, dest: &Path) -> Result<u64> {
    let (store, path) = store(url)?;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(dest).map_err(|e| PipelineError::io(dest, e))?,
    );
    let n = runtime()?.block_on(async {
        let mut stream = store
            .get(&path)
            .await
            .map_err(|e| err(url, e))?
            .into_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| err(url, e))?;
            n += chunk.len() as u64;
            f.write_all(&chunk)
                .map_err(|e| PipelineError::io(dest, e))?;
        }
        Ok::<u64, PipelineError>(n)
    })?;
    f.flush().map_err(|e| PipelineError::io(dest, e))?;
    Ok(n)
}

/// An object's bytes (small objects: path lists).
pub fn read(url: &str) -> Result<Vec<u8>> {
    let (store, path) = store(url)?;
    runtime()?
        .block_on(async { store.get(&path).await?.bytes().await })
        .map(|b| b.to_vec())
        .map_err(|e| err(url, e))
}

/// Uploads a local file to `url` (a multipart upload, streamed): the object
/// appears whole or not at all.
pub fn upload(src: &Path, url: &str) -> Result<()> {
    use std::io::Read;
    let (store, path) = store(url)?;
    let mut f = std::fs::File::open(src).map_err(|e| PipelineError::io(src, e))?;
    runtime()?.block_on(async {
        let upload = store.put_multipart(&path).await.map_err(|e| err(url, e))?;
        let mut w = WriteMultipart::new(upload);
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| PipelineError::io(src, e))?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(4).await.map_err(|e| err(url, e))?;
            w.write(&buf[..n]);
        }
        w.finish().await.map_err(|e| err(url, e))?;
        Ok(())
    })
}

/// A remote input downloaded into a local folder for reading; the file is
/// removed when this is dropped.
pub struct Download {
    path: PathBuf,
}

impl Download {
    /// Downloads `url` into `dir`, keeping its file name (formats are
    /// detected by content, `.gz` by name).
    pub fn fetch(url: &str, dir: &Path, tag: usize) -> Result<Self> {
        let name = url
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("input");
        let path = dir.join(format!("{tag:06}-{name}"));
        download(url, &path)?;
        Ok(Download { path })
    }

    /// The local copy.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Base URL that relative lines of a `*.paths` / `*.paths.gz` list (as
/// Common Crawl publishes `wet.paths.gz`) are joined to:
/// `T5MIX_PATHS_BASE`, else Common Crawl's `https://data.commoncrawl.org/`.
pub fn paths_base() -> String {
    std::env::var("T5MIX_PATHS_BASE").unwrap_or_else(|_| "https://data.commoncrawl.org/".into())
}

/// Whether an input names a list of paths (Common Crawl's `wet.paths.gz`).
pub fn is_paths_list(spec: &str) -> bool {
    spec.ends_with(".paths") || spec.ends_with(".paths.gz")
}

/// The inputs a paths list names: each line, joined to [`paths_base`]
/// unless it is a URL or an absolute path.
pub fn read_paths_list(spec: &str) -> Result<Vec<String>> {
    let bytes = if is_remote(spec) {
        read(spec)?
    } else {
        std::fs::read(spec).map_err(|e| PipelineError::io(Path::new(spec), e))?
    };
    let text = if spec.ends_with(".gz") {
        use std::io::Read;
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut s)
            .map_err(|e| err(spec, e))?;
        s
    } else {
        String::from_utf8(bytes).map_err(|e| err(spec, e))?
    };
    let base = paths_base();
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            if is_remote(l) || l.starts_with('/') {
                l.to_string()
            } else {
                format!("{}/{}", base.trim_end_matches('/'), l)
            }
        })
        .collect())
}

/// Uploads a finished clean folder to `url`: the shards, then
/// `manifest.json` last (its presence says the upload is whole).
pub fn publish(dir: &Path, url: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| PipelineError::io(dir, e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("part-"))
        .collect();
    names.sort();
    names.push(crate::manifest::MANIFEST.to_string());
    for n in &names {
        upload_into(&dir.join(n), url)?;
    }
    Ok(names)
}

/// Uploads a local file into the folder a URL names, under its file name.
pub fn upload_into(src: &Path, folder_url: &str) -> Result<()> {
    let name = src.file_name().unwrap_or_default().to_string_lossy();
    upload(src, &format!("{}/{name}", folder_url.trim_end_matches('/')))
}

/// Where a clean run writes: a local folder as it is, or for an object
/// storage URL a local folder whose shards are uploaded — a temporary one
/// that [`Destination::publish`] uploads (manifest last), or for a staged
/// run the `--work-dir` every task sees, whose write tasks upload.
pub struct Destination {
    url: Option<String>,
    staging: Option<tempfile::TempDir>,
    dir: PathBuf,
}

impl Destination {
    /// The destination `--out` names, with the staged run's `--work-dir`
    /// (needed for an object storage `--out`, refused otherwise).
    pub fn new(out: &Path, work_dir: Option<&Path>, staged: bool) -> Result<Self> {
        let url = out.to_str().filter(|o| is_remote(o)).map(str::to_string);
        let refuse = |message: &str| PipelineError::Config {
            what: "--work-dir".into(),
            message: message.into(),
        };
        match (url, work_dir) {
            (Some(url), Some(work)) if staged => Ok(Destination {
                url: Some(url),
                staging: None,
                dir: work.to_path_buf(),
            }),
            (Some(url), None) if staged => Err(refuse(&format!(
                "--out {url}: a staged run needs --work-dir, a folder every task sees for the files between stages"
            ))),
            (_, Some(_)) => Err(refuse("it is for a staged run whose --out is object storage")),
            (Some(url), None) => {
                let staging = tempfile::tempdir().map_err(|e| err(&url, e))?;
                Ok(Destination {
                    url: Some(url),
                    dir: staging.path().to_path_buf(),
                    staging: Some(staging),
                })
            }
            (None, None) => Ok(Destination {
                url: None,
                staging: None,
                dir: out.to_path_buf(),
            }),
        }
    }

    /// The local folder to write into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The object storage URL, if the destination is one.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// Uploads what was written (for a URL); returns where it now is.
    pub fn publish(self) -> Result<String> {
        match &self.url {
            Some(url) => {
                let n = publish(&self.dir, url)?.len();
                drop(self.staging);
                Ok(format!("{url} ({n} files uploaded)"))
            }
            None => Ok(self.dir.display().to_string()),
        }
    }
}
