//! Training a small vocabulary with the SentencePiece trainer (T5 settings)
//! on ../shared/data/spm-fixtures/botchan.txt and loading it back: the
//! pure-Rust encoder gives the C++ library's ids on every line, except where
//! two segmentations have the same score: there the system library (Debian's
//! 0.1.97) breaks ties as the C++ sources before 0.2.3 do, and we as Python
//! sentencepiece 0.2.3 does (see vocab/unigram.rs).

use t5mix_pipeline::shared_data::shared_file;
use t5mix_pipeline::vocab::train::{train_from_text_file, trainer_available, TrainOptions};
use t5mix_pipeline::vocab::Vocabulary;

#[test]
#[cfg_attr(
    not(all(t5mix_shared_data, spm_trainer)),
    ignore = "needs ../shared/data and the SentencePiece C++ library (libsentencepiece-dev)"
)]
fn train_small_vocab_and_load_it_back() {
    assert!(trainer_available());
    let botchan = shared_file("spm-fixtures/botchan.txt");
    let dir = tempfile::tempdir().unwrap();
    let opts = TrainOptions {
        vocab_size: 1000,
        num_threads: 2,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let model = train_from_text_file(&botchan, &dir.path().join("botchan"), &opts).unwrap();
    eprintln!(
        "trained a 1000-piece unigram model on botchan.txt in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let v = Vocabulary::load(&model, 0).unwrap();
    assert_eq!(v.vocab_size(), 1000);
    assert_eq!(
        (v.pad_id(), v.eos_id(), v.unk_id(), v.bos_id()),
        (0, Some(1), 2, None)
    );
    let t5 = Vocabulary::load(&model, 100).unwrap();
    assert_eq!((t5.vocab_size(), t5.sentinel(0)), (1100, 1099));
    #[cfg(spm_trainer)]
    {
        let reference = t5mix_pipeline::vocab::train::ReferenceEncoder::load(&model).unwrap();
        let text = std::fs::read_to_string(&botchan).unwrap();
        let (mut n, mut ties) = (0, 0);
        let mut bad = Vec::new();
        for line in text.lines() {
            n += 1;
            let (ours, theirs) = (v.encode(line), reference.encode(line));
            if ours != theirs {
                let (a, b) = (v.segmentation_score(&ours), v.segmentation_score(&theirs));
                if (a - b).abs() <= 1e-4 * a.abs().max(1.0) {
                    ties += 1;
                } else {
                    bad.push(format!("{line:?}: {a} vs {b}"));
                }
            }
        }
        eprintln!("{n} lines: {ties} equal-score ties broken differently by the system C++ library, {} real differences", bad.len());
        assert!(n > 4000);
        assert!(ties <= n / 100, "too many ties: {ties}");
        assert!(
            bad.is_empty(),
            "{} of {n} lines differ from the C++ encoder: {:?}",
            bad.len(),
            &bad[..bad.len().min(3)]
        );
    }
}

#[test]
#[cfg_attr(
    not(spm_trainer),
    ignore = "needs the SentencePiece C++ library (libsentencepiece-dev)"
)]
fn training_errors_are_reported() {
    assert!(trainer_available());
    let dir = tempfile::tempdir().unwrap();
    let err = train_from_text_file(
        &dir.path().join("missing.txt"),
        &dir.path().join("m"),
        &TrainOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("SentencePiece trainer"), "{err}");
}
