//! `t5mix clean` over object storage and HTTP, offline: a local S3 server
//! (moto, from PyPI) and Python's HTTP server on 127.0.0.1. Inputs listed
//! under an `s3://` prefix, named by a Common Crawl style `wet.paths.gz`
//! list, or served over HTTP give the shards of the local-file run, and
//! shards written to `s3://` are those bytes.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use common::shard_bytes;

/// A child process killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(args: &[&str], port: u16, dir: &Path) -> Server {
    let child = Command::new("python3")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed().as_secs() < 30, "{args:?} did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Server(child)
}

const S3_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_ALLOW_HTTP", "true"),
];

/// Runs python with boto3 against the local S3 server.
fn boto(endpoint: &str, code: &str) -> String {
    let script = format!(
        "import boto3, gzip, sys\ns3 = boto3.client('s3', endpoint_url='{endpoint}', \
         aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n{code}"
    );
    let o = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Downloads every object under `prefix` of the bucket `crawl` into `dir`.
fn download(endpoint: &str, prefix: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    boto(
        endpoint,
        &format!(
            "for o in s3.list_objects_v2(Bucket='crawl', Prefix='{prefix}')['Contents']:\n    \
             s3.download_file('crawl', o['Key'], '{}/' + o['Key'].split('/')[-1])",
            dir.display()
        ),
    );
}

fn t5mix_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_t5mix"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn ok_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let o = t5mix_env(args, env);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
#[cfg_attr(
    not(t5mix_py_moto),
    ignore = "needs python3 with moto[server] (a local S3 server)"
)]
fn clean_reads_and_writes_object_storage_and_http() {
    let crawl = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/crawl");
    let tmp = tempfile::tempdir().unwrap();
    let p = |s: &str| tmp.path().join(s);
    let args = |input: &str, out: &str| -> Vec<String> {
        ["clean", input, "--out", out, "-q", "--pages-per-shard", "7"]
            .map(String::from)
            .to_vec()
    };
    let run = |a: Vec<String>, env: &[(&str, &str)]| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        ok_env(&a, env)
    };
    run(
        args(crawl.to_str().unwrap(), p("local").to_str().unwrap()),
        &[],
    );
    let want = shard_bytes(&p("local"));
    assert_eq!(want.len(), 5);

    // S3: inputs under a prefix, and a wet.paths.gz list relative to a base
    let port = free_port();
    let _s3 = serve(
        &[
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ],
        port,
        tmp.path(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    boto(
        &endpoint,
        &format!(
            "s3.create_bucket(Bucket='crawl')\n\
             for f in ['sample.jsonl', 'sample.warc.wet.gz']:\n    s3.upload_file('{d}/' + f, 'crawl', 'in/' + f)\n\
             s3.put_object(Bucket='crawl', Key='wet.paths.gz', Body=gzip.compress(b'in/sample.jsonl\\nin/sample.warc.wet.gz\\n'))\n",
            d = crawl.display()
        ),
    );
    let mut env: Vec<(&str, &str)> = S3_ENV.to_vec();
    env.push(("AWS_ENDPOINT_URL", &endpoint));
    run(args("s3://crawl/in/", "s3://crawl/clean"), &env);
    let listed = boto(
        &endpoint,
        "for o in s3.list_objects_v2(Bucket='crawl', Prefix='clean/')['Contents']:\n    print(o['Key'])",
    );
    let keys: Vec<&str> = listed.lines().collect();
    assert_eq!(keys.len(), 6, "5 shards and the manifest: {keys:?}");
    let down = p("down");
    download(&endpoint, "clean/", &down);
    assert_eq!(shard_bytes(&down), want, "shards written to s3://");
    // a staged run uploads its shards from its write tasks, the manifest
    // at --finish; tasks share --work-dir
    let work = p("work");
    run(
        [
            args("s3://crawl/in/", "s3://crawl/staged"),
            ["--num-tasks", "2", "--buckets", "2", "--local-workers", "2"]
                .map(String::from)
                .to_vec(),
            vec!["--work-dir".into(), work.display().to_string()],
        ]
        .concat(),
        &env,
    );
    let staged = p("staged");
    download(&endpoint, "staged/", &staged);
    assert_eq!(shard_bytes(&staged), want, "staged shards written to s3://");
    assert!(staged.join("manifest.json").exists());
    assert!(
        !work.join(".t5mix-staged").exists() && shard_bytes(&work).is_empty(),
        "work folder emptied"
    );
    let e = t5mix_env(
        &[
            "clean",
            "s3://crawl/in/",
            "--out",
            "s3://crawl/x",
            "-q",
            "--num-tasks",
            "2",
        ],
        &env,
    );
    assert!(
        !e.status.success() && String::from_utf8_lossy(&e.stderr).contains("--work-dir"),
        "{}",
        String::from_utf8_lossy(&e.stderr)
    );
    let mut env_paths = env.clone();
    env_paths.push(("T5MIX_PATHS_BASE", "s3://crawl/"));
    run(
        args("s3://crawl/wet.paths.gz", p("from-paths").to_str().unwrap()),
        &env_paths,
    );
    assert_eq!(
        shard_bytes(&p("from-paths")),
        want,
        "inputs from wet.paths.gz"
    );
    // a missing object is an error naming it
    let e = t5mix_env(
        &[
            "clean",
            "s3://crawl/in/nothing.jsonl",
            "--out",
            p("x").to_str().unwrap(),
            "-q",
        ],
        &env,
    );
    assert!(
        !e.status.success()
            && String::from_utf8_lossy(&e.stderr).contains("s3://crawl/in/nothing.jsonl"),
        "{}",
        String::from_utf8_lossy(&e.stderr)
    );

    // HTTP
    let hport = free_port();
    let _http = serve(
        &[
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &hport.to_string(),
        ],
        hport,
        &crawl,
    );
    let base = format!("http://127.0.0.1:{hport}");
    let out = p("from-http");
    let o = out.to_str().unwrap();
    ok_env(
        &[
            "clean",
            &format!("{base}/sample.jsonl"),
            &format!("{base}/sample.warc.wet.gz"),
            "--out",
            o,
            "-q",
            "--pages-per-shard",
            "7",
        ],
        &[],
    );
    assert_eq!(shard_bytes(&out), want, "inputs over HTTP");

    // injected failures, from a server that answers `/flaky/NAME` with 503
    // twice and then cuts the body short once, `/down/NAME` always with 503
    let served = p("served");
    std::fs::create_dir_all(&served).unwrap();
    for f in ["sample.jsonl", "sample.warc.wet.gz"] {
        std::fs::copy(crawl.join(f), served.join(f)).unwrap();
    }
    let gz = std::fs::read(crawl.join("sample.warc.wet.gz")).unwrap();
    std::fs::write(served.join("cut.warc.wet.gz"), &gz[..gz.len() / 2]).unwrap();
    let fport = free_port();
    let _flaky = serve(&["-c", FLAKY_SERVER, &fport.to_string()], fport, &served);
    let base = format!("http://127.0.0.1:{fport}");
    let out = p("from-flaky");
    ok_env(
        &[
            "clean",
            &format!("{base}/flaky/sample.jsonl"),
            &format!("{base}/flaky/sample.warc.wet.gz"),
            "--out",
            out.to_str().unwrap(),
            "-q",
            "--pages-per-shard",
            "7",
        ],
        &[],
    );
    assert_eq!(shard_bytes(&out), want, "retried after 503s and a cut body");
    let down = format!("{base}/down/sample.jsonl");
    let x = p("x");
    let x = x.to_str().unwrap();
    for (retries, says) in [
        ("1", down.as_str()),
        ("101", "T5MIX_RETRIES"),
        ("many", "T5MIX_RETRIES"),
    ] {
        let e = t5mix_env(
            &["clean", &down, "--out", x, "-q", "--overwrite"],
            &[("T5MIX_RETRIES", retries)],
        );
        let stderr = String::from_utf8_lossy(&e.stderr);
        assert!(
            !e.status.success() && stderr.contains(says),
            "{retries}: {stderr}"
        );
    }
    // a bad remote file is named by its URL, not by its local copy
    let cut = format!("{base}/ok/cut.warc.wet.gz");
    let e = t5mix_env(
        &["clean", &cut, "--out", x, "-q", "--strict", "--overwrite"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&e.stderr);
    assert!(!e.status.success() && stderr.contains(&cut), "{stderr}");
    let out = p("from-cut");
    ok_env(&["clean", &cut, "--out", out.to_str().unwrap(), "-q"], &[]);
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(
        manifest.contains(&format!("\"{cut}\"")) && !manifest.contains("-cut.warc.wet.gz"),
        "{manifest}"
    );
}

/// An HTTP server (Python's standard library) with ETags and range
/// requests, failing on purpose: `/flaky/NAME` answers 503 twice, then
/// sends half the body and closes, then serves; `/down/NAME` always 503;
/// `/ok/NAME` serves.
const FLAKY_SERVER: &str = r#"
import http.server, socket, sys
seen = {}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        kind, _, name = self.path.lstrip('/').partition('/')
        n = seen.get(self.path, 0)
        seen[self.path] = n + 1
        if kind == 'down' or (kind == 'flaky' and n < 2):
            self.send_response(503)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        data = open(name, 'rb').read()
        start, end = 0, len(data)
        rng = self.headers.get('Range')
        if rng:
            a, b = rng.split('=')[1].split('-')
            start, end = int(a), (int(b) + 1 if b else len(data))
            self.send_response(206)
            self.send_header('Content-Range', 'bytes %d-%d/%d' % (start, end - 1, len(data)))
        else:
            self.send_response(200)
        self.send_header('Content-Length', str(end - start))
        self.send_header('ETag', '"v1"')
        self.end_headers()
        body = data[start:end]
        if kind == 'flaky' and n == 2:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"#;
