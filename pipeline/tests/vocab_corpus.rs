//! Zero mismatches with Python sentencepiece on all the text of the shared
//! crawl, STS-B and WMT samples (63,811 lines). The expected ids are digests
//! made by scripts/gen_spm_expected.py (pipeline/data/spm_expected.tsv); set
//! T5MIX_SPM_FULL to that script's `--full` output to see differing lines.

use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};
use t5mix_pipeline::clean::rules::py_strip;
use t5mix_pipeline::shared_data::shared_or_skip;
use t5mix_pipeline::vocab::Vocabulary;

fn read(path: &Path) -> String {
    let mut bytes = Vec::new();
    let f = std::fs::File::open(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::MultiGzDecoder::new(f)
            .read_to_end(&mut bytes)
            .unwrap();
    } else {
        std::io::BufReader::new(f).read_to_end(&mut bytes).unwrap();
    }
    String::from_utf8(bytes).unwrap()
}

fn py_lines(text: &str) -> Vec<String> {
    text.split('\n')
        .filter(|l| !py_strip(l).is_empty())
        .map(str::to_string)
        .collect()
}

fn jsonl_text_lines(path: &Path) -> Vec<String> {
    read(path)
        .split('\n')
        .filter(|l| !py_strip(l).is_empty())
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            py_lines(v["text"].as_str().unwrap())
        })
        .collect()
}

fn sources(root: &Path) -> Vec<(String, Vec<String>)> {
    let d = root.join("dolma-cc");
    let mut out = vec![(
        "dolma-cc/CC-MAIN".to_string(),
        jsonl_text_lines(&d.join("CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz")),
    )];
    for name in ["cc_en_head-0091.jsonl", "cc_en_head-0174.jsonl"] {
        out.push((format!("dolma-cc/{name}"), jsonl_text_lines(&d.join(name))));
    }
    out.push((
        "dolma-cc/provided".into(),
        jsonl_text_lines(&d.join("provided-documents-000.json.gz")),
    ));
    out.push((
        "c4-hf-dummy".into(),
        jsonl_text_lines(&root.join("c4-hf-dummy/c4-train.00000-of-01024.json.gz")),
    ));
    for name in ["sts-train.csv", "sts-dev.csv", "sts-test.csv"] {
        let mut v = Vec::new();
        for line in read(&root.join("stsbenchmark").join(name)).split('\n') {
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() >= 7 {
                v.push(cols[5].to_string());
                v.push(cols[6].to_string());
            }
        }
        out.push((format!("stsbenchmark/{name}"), v));
    }
    for name in [
        "src-train.txt",
        "tgt-train.txt",
        "src-val.txt",
        "tgt-val.txt",
    ] {
        out.push((
            format!("wmt-ende-opennmt/{name}"),
            py_lines(&read(&root.join("wmt-ende-opennmt").join(name))),
        ));
    }
    out
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn zero_mismatches_with_python_sentencepiece_on_the_shared_text() {
    let test = "zero_mismatches_with_python_sentencepiece_on_the_shared_text";
    let Some(model) = shared_or_skip("t5-spm/spiece.model", test) else {
        return;
    };
    let root = model.parent().unwrap().parent().unwrap().to_path_buf();
    // The reference ran the model without seqio's extra ids; with them the
    // ids of this text are the same (no literal "<extra_id_" in it).
    let plain = Vocabulary::load(&model, 0).unwrap();
    let t5 = Vocabulary::load(&model, 100).unwrap();
    let expected = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/spm_expected.tsv"),
    )
    .unwrap();
    let full: Option<String> = std::env::var("T5MIX_SPM_FULL")
        .ok()
        .map(|p| std::fs::read_to_string(p).unwrap());
    let mut rows = expected.lines().filter(|l| !l.starts_with('#'));
    let (mut lines_checked, mut bad_blocks) = (0usize, Vec::new());
    for (name, lines) in sources(&root) {
        for (b, block) in lines.chunks(100).enumerate() {
            let row = rows.next().expect("expected file shorter than the sources");
            let f: Vec<&str> = row.split('\t').collect();
            assert_eq!(
                (
                    f[0],
                    f[1].parse::<usize>().unwrap(),
                    f[2].parse::<usize>().unwrap()
                ),
                (name.as_str(), b, block.len()),
                "line layout"
            );
            let texts: Vec<&str> = block.iter().map(String::as_str).collect();
            let encoded = plain.encode_batch(&texts);
            let mut h = Md5::new();
            let mut n = 0;
            for (i, ids) in encoded.iter().enumerate() {
                n += ids.len();
                let s = ids
                    .iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
                    + ";";
                h.update(s.as_bytes());
                assert_eq!(t5.encode(texts[i]), *ids);
                if let Some(full) = &full {
                    let key = format!("{name}\t{}\t", b * 100 + i);
                    let want = full
                        .lines()
                        .find(|l| l.starts_with(&key))
                        .map(|l| &l[key.len()..])
                        .unwrap_or("");
                    if want != s {
                        eprintln!(
                            "MISMATCH {name} line {}: {:?}\n  ours {s}\n  spm  {want}",
                            b * 100 + i,
                            texts[i]
                        );
                    }
                }
            }
            lines_checked += block.len();
            if n.to_string() != f[3] || format!("{:x}", h.finalize()) != f[4] {
                bad_blocks.push(format!(
                    "{name} block {b} (lines {}..{})",
                    b * 100,
                    b * 100 + block.len()
                ));
            }
        }
    }
    assert!(
        rows.next().is_none(),
        "expected file longer than the sources"
    );
    assert_eq!(lines_checked, 63_811);
    assert!(
        bad_blocks.is_empty(),
        "blocks that differ from sentencepiece: {bad_blocks:?}"
    );
}
