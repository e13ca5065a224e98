//! Zero mismatches with Python sentencepiece on all the text of the shared
//! crawl, STS-B and WMT samples (63,811 lines). The expected ids are digests
//! made by scripts/gen_spm_expected.py (pipeline/data/spm_expected.tsv); set
//! T5MIX_SPM_FULL to that script's `--full` output to see differing lines.

use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};
use t5mix_pipeline::clean::rules::py_strip;
use t5mix_pipeline::shared_data::{json_ids, shared_file};
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
    let model = shared_file("t5-spm/spiece.model");
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

/// Lines that exercise what the settings change: digits, runs of spaces at
/// either end, user-defined and control symbols, characters outside
/// botchan.txt (byte fallback), full-width and case-folded letters.
const EXTRA_LINES: &[&str] = &[
    "Call 555-0123 or 1-800-FLOWERS before 12:30, ok?",
    "  two leading spaces, and two trailing  ",
    "tabs\tand\u{3000}ideographic   spaces",
    "<tag>user<tag>defined symbols</tag> and <ctrl> control ones",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ and ß, ﬁ, Ⅻ",
    "café naïve résumé — “quotes” 😀 🇯🇵 中文 日本語 한국어 Ελληνικά",
    "\u{2581}already escaped\u{2581}\u{2581}spaces",
    "3.14159265358979 ≈ π; 2^10 = 1024",
    "",
    " ",
];

/// SentencePiece models trained with other settings than T5's (each at
/// test time, by Python sentencepiece 0.2.3 on botchan.txt): ids of all the
/// shared text equal `EncodeAsIds`, and `DecodeIds` of them and of random
/// id sequences (byte pieces among them) gives the same text.
#[test]
#[cfg_attr(
    not(all(t5mix_shared_data, t5mix_py_sentencepiece)),
    ignore = "needs ../shared/data and python3 with sentencepiece 0.2.3"
)]
fn other_settings_equal_python_sentencepiece() {
    let botchan = shared_file("spm-fixtures/botchan.txt");
    let root = botchan.parent().unwrap().parent().unwrap().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = EXTRA_LINES.iter().map(|s| s.to_string()).collect();
    lines.extend(read(&botchan).split('\n').map(str::to_string));
    for (_, l) in sources(&root) {
        lines.extend(l);
    }
    let lines_path = tmp.path().join("lines.txt");
    std::fs::write(&lines_path, lines.join("\n")).unwrap();
    // a custom normalization rule file: "x" -> "ks", "Ω" -> "Ohm"
    let rules = tmp.path().join("rules.tsv");
    std::fs::write(&rules, "78\t6B 73\n3A9\t4F 68 6D\n").unwrap();
    let rules_flag = format!("normalization_rule_tsv={}", rules.display());
    let settings: Vec<(&str, Vec<&str>)> = vec![
        ("byte_fallback", vec!["byte_fallback=true"]),
        ("split_digits", vec!["split_digits=true"]),
        ("identity", vec!["normalization_rule_name=identity"]),
        ("nfkc_cf", vec!["normalization_rule_name=nfkc_cf"]),
        ("custom_rules", vec![&rules_flag]),
        (
            "symbols",
            vec![
                "user_defined_symbols=<tag>,</tag>,ing",
                "control_symbols=<ctrl>",
            ],
        ),
        ("whitespace_suffix", vec!["treat_whitespace_as_suffix=true"]),
        ("no_dummy_prefix", vec!["add_dummy_prefix=false"]),
        ("keep_whitespace", vec!["remove_extra_whitespaces=false"]),
        (
            "llama_like",
            vec![
                "byte_fallback=true",
                "split_digits=true",
                "normalization_rule_name=identity",
                "add_dummy_prefix=false",
                "remove_extra_whitespaces=false",
                "user_defined_symbols=<tag>",
            ],
        ),
    ];
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/spm_reference.py");
    let mut report = Vec::new();
    for (name, flags) in &settings {
        let prefix = tmp.path().join(name);
        let mut args = vec![
            script.display().to_string(),
            botchan.display().to_string(),
            prefix.display().to_string(),
            lines_path.display().to_string(),
            "2000".to_string(),
            "vocab_size=1000".to_string(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        let out = std::process::Command::new("python3")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = Vocabulary::load(&prefix.with_extension("model"), 0).unwrap();
        let reference: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(reference.len(), lines.len() + 2000, "{name}");
        let texts: Vec<&str> = lines.iter().map(String::as_str).collect();
        let ours = v.encode_batch(&texts);
        let (mut ids_bad, mut text_bad, mut random_bad) = (Vec::new(), 0, Vec::new());
        for (i, r) in reference.iter().enumerate() {
            let text = r["text"].as_str().unwrap();
            if let Some(want) = r.get("ids") {
                let want = json_ids(want);
                if ours[i] != want {
                    ids_bad.push(format!("{:?}: {:?} vs {want:?}", lines[i], ours[i]));
                } else if v.decode(&want) != text {
                    text_bad += 1;
                }
            } else {
                let ids = json_ids(&r["random"]);
                let got = v.decode(&ids);
                if got != text {
                    random_bad.push(format!("{ids:?}: {got:?} vs {text:?}"));
                }
            }
        }
        let bytes = ours
            .iter()
            .flatten()
            .filter(|&&i| v.piece_type(i) == Some(t5mix_pipeline::vocab::PieceType::Byte));
        eprintln!(
            "{name}: {} lines, {} byte pieces; {} id, {text_bad} decode and {} random-decode mismatches",
            lines.len(),
            bytes.count(),
            ids_bad.len(),
            random_bad.len()
        );
        if !ids_bad.is_empty() || text_bad > 0 || !random_bad.is_empty() {
            report.push(format!(
                "{name}: {} of {} lines encode differently (e.g. {:?}), {text_bad} decode \
                 differently, {} of 2000 random sequences decode differently (e.g. {:?})",
                ids_bad.len(),
                lines.len(),
                ids_bad.first(),
                random_bad.len(),
                random_bad.first()
            ));
        }
    }
    assert!(report.is_empty(), "{report:#?}");
}
