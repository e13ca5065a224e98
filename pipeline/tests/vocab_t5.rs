//! The T5 vocabulary against seqio / sentencepiece outputs:
//! ../shared/data/t5-reference/spm_t5.jsonl and t5-spm/golden_encodings.jsonl.

use t5mix_pipeline::shared_data::{json_ids, shared_file, shared_jsonl};
use t5mix_pipeline::vocab::Vocabulary;

fn t5_vocab() -> Vocabulary {
    Vocabulary::load(&shared_file("t5-spm/spiece.model"), 100).unwrap()
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn extra_id_layout_matches_seqio() {
    let v = t5_vocab();
    assert_eq!(v.vocab_size(), 32100);
    assert_eq!(v.base_vocab_size(), 32000);
    assert_eq!(v.padded_vocab_size(), 32128);
    assert_eq!(v.sentinel(0), 32099);
    assert_eq!(v.sentinel(99), 32000);
    assert_eq!(
        (v.pad_id(), v.eos_id(), v.unk_id(), v.bos_id()),
        (0, Some(1), 2, None)
    );
    assert_eq!(v.id_to_piece(32099), Some("▁<extra_id_0>"));
    assert_eq!(v.piece_to_id("▁<extra_id_99>"), Some(32000));
    assert_eq!(v.encode("<extra_id_0>"), vec![32099]);
    assert_eq!(v.encode("<extra_id_99>"), vec![32000]);
    assert_eq!(v.decode(&[32099]), "<extra_id_0>");
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn special_row_of_the_reference() {
    let (v, rows) = (t5_vocab(), shared_jsonl("t5-reference/spm_t5.jsonl"));
    let s = &rows[0];
    assert_eq!(s["kind"], "special");
    assert_eq!(v.vocab_size() as u64, s["vocab_size"].as_u64().unwrap());
    for (piece, id) in s["piece_to_id"].as_object().unwrap() {
        assert_eq!(
            v.piece_to_id(piece),
            Some(id.as_u64().unwrap() as u32),
            "{piece}"
        );
    }
    for (id, piece) in s["id_to_piece"].as_object().unwrap() {
        assert_eq!(v.id_to_piece(id.parse().unwrap()), piece.as_str(), "{id}");
    }
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn encodes_and_decodes_like_seqio() {
    let (v, rows) = (t5_vocab(), shared_jsonl("t5-reference/spm_t5.jsonl"));
    let mut mismatches = Vec::new();
    let (mut n_enc, mut n_dec) = (0, 0);
    for r in &rows {
        match r["kind"].as_str().unwrap() {
            "encode" => {
                n_enc += 1;
                let text = r["text"].as_str().unwrap();
                let got = v.encode(text);
                let want = json_ids(&r["ids"]);
                if got != want {
                    mismatches.push(format!(
                        "{:?} ({}): got {:?}.. want {:?}..",
                        &text.chars().take(60).collect::<String>(),
                        r["group"],
                        &got[..got.len().min(12)],
                        &want[..want.len().min(12)]
                    ));
                }
                assert_eq!(
                    v.decode(&want),
                    r["decoded"].as_str().unwrap(),
                    "decode of {text:?}"
                );
            }
            "decode" => {
                n_dec += 1;
                assert_eq!(
                    v.decode(&json_ids(&r["ids"])),
                    r["decoded"].as_str().unwrap(),
                    "{}",
                    r["ids"]
                );
            }
            _ => {}
        }
    }
    assert_eq!((n_enc, n_dec), (333, 15));
    assert!(
        mismatches.is_empty(),
        "{} of {n_enc} encodings differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn golden_encodings() {
    // Made with the plain model: no seqio extra ids.
    let (p, rows) = (
        shared_file("t5-spm/spiece.model"),
        shared_jsonl("t5-spm/golden_encodings.jsonl"),
    );
    let v = Vocabulary::load(&p, 0).unwrap();
    for r in &rows {
        let text = r["text"].as_str().unwrap();
        let got = v.encode(text);
        assert_eq!(got, json_ids(&r["ids"]), "{text:?}");
        // Unknown pieces are reported by their surface; compare the others.
        let want: Vec<&str> = r["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        for (&id, w) in got.iter().zip(&want) {
            if id != v.unk_id() {
                assert_eq!(v.id_to_piece(id).unwrap(), *w, "{text:?}");
            }
        }
        assert_eq!(v.decode(&got), r["decoded"].as_str().unwrap());
    }
}

#[test]
fn missing_or_corrupt_model_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.model");
    let err = Vocabulary::load(&missing, 100).unwrap_err().to_string();
    assert!(err.contains("nope.model"), "{err}");
    let corrupt = dir.path().join("bad.model");
    std::fs::write(&corrupt, b"\x0a\xff\xff\xff garbage").unwrap();
    let err = Vocabulary::load(&corrupt, 100).unwrap_err().to_string();
    assert!(
        err.contains("bad.model") && err.contains("not a valid SentencePiece model"),
        "{err}"
    );
    std::fs::write(&corrupt, b"").unwrap();
    assert!(Vocabulary::load(&corrupt, 100)
        .unwrap_err()
        .to_string()
        .contains("no pieces"));
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn hostile_text_neither_crashes_nor_hangs() {
    let v = t5_vocab();
    // NUL bytes and other controls.
    let ids = v.encode("a\0b\u{1}c\u{7f}");
    assert!(!ids.is_empty());
    // Text that was invalid UTF-8, lossily decoded upstream.
    let lossy = String::from_utf8_lossy(b"ok \xff\xfe bytes");
    assert!(!v.encode(&lossy).is_empty());
    // A 10 MB single line, word-like and as one unbroken token.
    let t = std::time::Instant::now();
    let long_words = "lorem ipsum dolor ".repeat(10_000_000 / 18);
    assert!(v.encode(&long_words).len() > 1_000_000);
    let one_token = "x".repeat(10_000_000);
    assert!(!v.encode(&one_token).is_empty());
    assert!(
        t.elapsed().as_secs() < 60,
        "10 MB lines must encode in linear time"
    );
    // Round trip of ordinary text.
    let s = "The T5 model, trained on C4, was released in 2019.";
    assert_eq!(v.decode(&v.encode(s)), s);
}

/// A model type other than unigram is a clear error naming the type.
#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn other_model_types_are_named() {
    let bpe = shared_file("spm-fixtures/hf_test_sentencepiece_bpe.model");
    let err = Vocabulary::load(&bpe, 100).unwrap_err().to_string();
    assert!(
        err.contains("a BPE model") && err.contains("hf_test_sentencepiece_bpe.model"),
        "{err}"
    );
}
