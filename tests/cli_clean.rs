//! End-to-end tests of `t5mix clean` on the bundled crawl sample and on bad input.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{parquet_files, t5mix};

use t5mix_pipeline::readers::{read_file, ReadOptions};
use t5mix_pipeline::shared_data::shared_file;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The run's statistics, from the clean folder's manifest.
fn stats(out: &Path) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["kind"], "clean");
    m["stats"].clone()
}

/// URL → split of every page in the Parquet shards, read back with the
/// pipeline's generic Parquet reader.
fn kept_pages(out: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for s in parquet_files(out) {
        let mut texts = Vec::new();
        read_file(&s, &ReadOptions::default(), &mut |d| {
            texts.push(d);
            Ok(())
        })
        .unwrap();
        for d in texts {
            assert!(!d.text.is_empty());
            m.insert(d.url, d.timestamp);
        }
    }
    m
}

fn clean_sample(out: &Path, extra: &[&str]) -> Output {
    let sample = root().join("data/crawl");
    let mut args = vec![
        "clean",
        sample.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ];
    // a list of our own with the one word the sample's bad-words page holds
    // (the shared LDNOOBW list is tested against tfds in c4_reference.rs)
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(list.path(), "butt\n").unwrap();
    args.extend(["--badwords", list.path().to_str().unwrap()]);
    args.extend(extra);
    let o = t5mix(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

#[test]
fn bundled_sample_meets_every_rule() {
    let out = tempfile::tempdir().unwrap();
    let o = clean_sample(out.path(), &[]);
    let summary = String::from_utf8_lossy(&o.stderr);
    assert!(summary.contains("pages dropped:"), "{summary}");
    let expected: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(root().join("data/crawl-expected.json")).unwrap())
            .unwrap();
    let kept = kept_pages(out.path());
    for (url, rule) in &expected {
        let want = rule.starts_with("kept");
        assert_eq!(kept.contains_key(url), want, "{url} ({rule})");
    }
    let s = stats(out.path());
    for rule in [
        "too_long",
        "duplicate_url",
        "lorem_ipsum",
        "curly_bracket",
        "too_few_sentences",
        "dedup_empty",
        "language",
    ] {
        assert!(
            s["pages_dropped"][rule].as_u64().unwrap() >= 1,
            "page rule {rule} never fired"
        );
    }
    for rule in [
        "too_long_word",
        "no_endmark",
        "too_short",
        "javascript",
        "policy",
        "global_duplicate",
        "local_duplicate",
    ] {
        assert!(
            s["lines_dropped"][rule].as_u64().unwrap() >= 1,
            "line rule {rule} never fired"
        );
    }
    assert_eq!(s["pages_per_split"]["validation"], 1);
    assert_eq!(s["pages_in"], 38);
}

#[test]
fn output_is_identical_with_one_or_two_threads() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    clean_sample(a.path(), &["--threads", "1", "--pages-per-shard", "7"]);
    clean_sample(b.path(), &["--threads", "2", "--pages-per-shard", "7"]);
    // and with every page spilled to disk between the passes
    let c = tempfile::tempdir().unwrap();
    clean_sample(
        c.path(),
        &["--pages-per-shard", "7", "--memory-budget-mb", "0"],
    );
    let mut n = 0;
    for e in std::fs::read_dir(a.path()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        if name.to_string_lossy().starts_with("part-") {
            for other in [b.path(), c.path()] {
                assert_eq!(
                    std::fs::read(&p).unwrap(),
                    std::fs::read(other.join(name)).unwrap(),
                    "{name:?}"
                );
            }
            n += 1;
        }
    }
    assert!(n >= 4, "several shards written ({n})");
}

#[test]
fn refuses_to_mix_with_an_earlier_run_unless_overwrite() {
    let out = tempfile::tempdir().unwrap();
    clean_sample(out.path(), &[]);
    let sample = root().join("data/crawl");
    let o = t5mix(&[
        "clean",
        sample.to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "-q",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--overwrite"));
    clean_sample(out.path(), &["--overwrite"]);
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

const PAGE: &str = "The river rose slowly through the night and reached the bridge. Farmers had moved their cattle to higher ground. Nobody was hurt at all.";

fn bad_inputs(dir: &Path) -> Vec<PathBuf> {
    let good = |url: &str| {
        format!("{{\"text\": \"{PAGE}\", \"url\": \"{url}\", \"timestamp\": \"2019\"}}\n")
    };
    let malformed = dir.join("malformed.jsonl");
    std::fs::write(
        &malformed,
        format!(
            "{}{{\"text\": oops\n{}",
            good("http://a.org/1"),
            good("http://a.org/2")
        ),
    )
    .unwrap();
    let utf8 = dir.join("utf8.jsonl");
    let mut b = good("http://b.org/1").into_bytes();
    b.extend_from_slice(b"{\"text\": \"bad \xff byte\"}\n");
    b.extend_from_slice(good("http://b.org/2").as_bytes());
    std::fs::write(&utf8, b).unwrap();
    let truncated = dir.join("truncated.jsonl.gz");
    let mut body = String::new();
    for i in 0..200 {
        body.push_str(&good(&format!("http://c.org/{i}")));
    }
    let z = gz(body.as_bytes());
    std::fs::write(&truncated, &z[..z.len() / 2]).unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    vec![malformed, utf8, truncated, empty]
}

#[test]
fn bad_input_is_reported_with_file_and_offset_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let inputs = bad_inputs(dir.path());
    let mut args = vec!["clean".to_string()];
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    args.extend([
        "--out".into(),
        out.display().to_string(),
        "-q".into(),
        "--set".into(),
        "language=".into(),
        "--set".into(),
        "line_dedup=false".into(),
    ]);
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = t5mix(&args_ref);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = stats(&out);
    let issues = &s["read_issues"];
    assert_eq!(issues["malformed_record"], 1);
    assert_eq!(issues["invalid_utf8"], 1);
    assert_eq!(issues["truncated_gzip"], 1);
    assert_eq!(issues["empty_file"], 1);
    let examples = serde_json::to_string(&s["read_issue_examples"]).unwrap();
    assert!(
        examples.contains("malformed.jsonl") && examples.contains("line 2 (byte "),
        "{examples}"
    );
    assert!(examples.contains("utf8.jsonl"), "{examples}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("bad input skipped"), "{stderr}");
    let kept = kept_pages(&out);
    for u in [
        "http://a.org/1",
        "http://a.org/2",
        "http://b.org/1",
        "http://b.org/2",
        "http://c.org/0",
    ] {
        assert!(kept.contains_key(u), "{u} kept");
    }
    assert!(
        kept.len() > 10,
        "pages before the truncation point are kept"
    );

    // --strict: the first bad input is an error naming file and place.
    let out2 = dir.path().join("out2");
    let o = t5mix(&[
        "clean",
        inputs[0].to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
        "-q",
        "--strict",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("malformed.jsonl") && err.contains("line 2"),
        "{err}"
    );
    assert!(
        !out2.join("part-00000.parquet").exists(),
        "no shard after a failed run"
    );
}

#[test]
fn config_file_errors_name_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("clean.toml");
    std::fs::write(&cfg, "min_num_sentences = 5\nmin_wrds_per_line = 2\n").unwrap();
    let sample = root().join("data/crawl");
    let out = dir.path().join("out");
    let o = t5mix(&[
        "clean",
        sample.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("clean.toml") && err.contains("min_wrds_per_line") && err.contains("line 2"),
        "{err}"
    );

    std::fs::write(&cfg, "min_num_sentences = 50\n").unwrap();
    let o = t5mix(&[
        "clean",
        sample.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        stats(&out)["pages_out"],
        0,
        "a 50-sentence minimum keeps nothing"
    );
}

#[test]
fn help_lists_clean() {
    let o = t5mix(&["--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("clean"));
    let o = t5mix(&["clean", "--help"]);
    let h = String::from_utf8_lossy(&o.stdout);
    assert!(h.contains("--preset") && h.contains("--badwords") && h.contains("--strict"));
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn vocab_info_encode_decode() {
    let model = shared_file("t5-spm/spiece.model");
    let m = model.to_str().unwrap();
    let o = t5mix(&["vocab", "info", "--model", m]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("vocab_size 32100")
            && out.contains("32128")
            && out.contains("<extra_id_0> = 32099"),
        "{out}"
    );
    let o = t5mix(&[
        "vocab",
        "encode",
        "--model",
        m,
        "--eos",
        "Hello world",
        "<extra_id_0>",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "8774 296 1\n32099 1\n");
    let o = t5mix(&[
        "vocab",
        "encode",
        "--model",
        m,
        "--format",
        "pieces",
        "Hello world",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "▁Hello ▁world\n");
    let o = t5mix(&[
        "vocab", "decode", "--model", m, "8774", "32099", "296", "1", "5",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "Hello <extra_id_0> world\n"
    );
    let o = t5mix(&["vocab", "info", "--model", "/nonexistent/x.model"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/x.model"));
}

/// The output folder never overlaps the input (an --overwrite would delete
/// it) and a file as --out is named as such; the input is left whole.
#[test]
fn clean_output_never_overlaps_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(
        root().join("data/crawl/sample.jsonl"),
        data.join("sample.jsonl"),
    )
    .unwrap();
    let before = std::fs::read(data.join("sample.jsonl")).unwrap();
    let d = data.to_str().unwrap();
    for args in [
        vec!["clean", d, "--out", d, "--overwrite", "-q"],
        vec!["clean", d, "--out", d, "-q"],
    ] {
        let o = t5mix(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("holds the input"),
            "{err}"
        );
    }
    assert_eq!(std::fs::read(data.join("sample.jsonl")).unwrap(), before);
    let file = dir.path().join("a_file");
    std::fs::write(&file, "x").unwrap();
    let o = t5mix(&["clean", d, "--out", file.to_str().unwrap(), "-q"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("is a file"), "{err}");
}

/// What a killed run left (a spill folder, a half-written shard) is removed
/// by the next run; numeric options out of range are refused up front.
#[test]
fn leftovers_are_removed_and_ranges_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let spill = out.join(".t5mix-clean-abc123");
    std::fs::create_dir_all(&spill).unwrap();
    std::fs::write(spill.join("batch-0.spill"), vec![7u8; 4096]).unwrap();
    std::fs::write(out.join(".part-00000.parquet.tmp"), b"half").unwrap();
    let crawl = root().join("data/crawl");
    let o = t5mix(&[
        "clean",
        crawl.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!spill.exists() && !out.join(".part-00000.parquet.tmp").exists());
    for (flag, value) in [
        ("--pages-per-shard", "0"),
        ("--memory-budget-mb", "99999999999"),
        ("--threads", "100000"),
    ] {
        let o = t5mix(&[
            "clean",
            crawl.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            flag,
            value,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(flag), "{flag}: {err}");
    }
    let o = t5mix(&[
        "clean",
        crawl.to_str().unwrap(),
        "--out",
        "x",
        "--set",
        "min_language_confidence=nan",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("min_language_confidence NaN"));
}
