//! The built-in catalog: T5's unsupervised objectives over clean shards,
//! GLUE, SQuAD, CNN/DailyMail and WMT — written with the same public API a
//! user's tasks use ([`Task::new`], [`Preprocessor`], [`Source::files`]).

use std::collections::BTreeMap;

use t5mix_pipeline::features::SequenceLength;
use t5mix_pipeline::preprocessors::{
    Objective, DEFAULT_MEAN_NOISE_SPAN_LENGTH, DEFAULT_NOISE_DENSITY,
};

use crate::supervised::{FileFormat, TextFormat};
use crate::task::{Feature, OutputFeatures, Preprocessor, Source, Task};

/// An unsupervised task over clean shards: T5's chain `rekey(text →
/// targets)` → `tokenize` → `denoise` → `append_eos_after_trim`.
pub fn unsupervised(
    name: &str,
    description: &str,
    objective: Objective,
    lengths: SequenceLength,
) -> Task {
    let mut features = OutputFeatures::lengths(lengths);
    // decoder-only objectives have no encoder feature
    if lengths.inputs == 0 {
        features.inputs = Feature {
            length: 0,
            add_eos: false,
            required: false,
        };
    }
    Task::new(name, Source::CleanShards {})
        .description(description)
        .preprocessor(Preprocessor::Rekey(BTreeMap::from([(
            "targets".to_string(),
            "text".to_string(),
        )])))
        .preprocessor(Preprocessor::Tokenize)
        .preprocessor(Preprocessor::Denoise(objective))
        .preprocessor(Preprocessor::AppendEosAfterTrim)
        .output_features(features)
}

/// Every built-in task.
pub fn tasks() -> Vec<Task> {
    let l = |inputs, targets| SequenceLength { inputs, targets };
    let mut v = vec![
        unsupervised(
            "c4_span_corruption",
            "T5's pre-training objective on clean C4-style text: 15% noise in spans of mean length 3, unique sentinels",
            Objective::SpanCorruption {
                noise_density: DEFAULT_NOISE_DENSITY,
                mean_noise_span_length: DEFAULT_MEAN_NOISE_SPAN_LENGTH,
            },
            SequenceLength::PRETRAINING,
        ),
        unsupervised(
            "c4_iid_denoising",
            "i.i.d. token noise (15%), each noise run replaced by a unique sentinel",
            Objective::IidDenoising { noise_density: DEFAULT_NOISE_DENSITY },
            l(512, 512),
        ),
        unsupervised("c4_prefix_lm", "a random prefix as inputs, the rest as targets", Objective::PrefixLm, l(512, 512)),
        unsupervised("c4_deshuffling", "shuffled tokens as inputs, the original order as targets", Objective::Deshuffling, l(512, 512)),
        unsupervised("c4_full_lm", "language modelling: empty inputs, the text as targets", Objective::FullLm, l(0, 512)),
    ];
    v.extend(glue_tasks());
    v
}

fn tsv_task(
    name: &str,
    description: &str,
    splits: &[(&str, &str)],
    format: TextFormat,
    targets_length: usize,
) -> Task {
    files_task(
        name,
        description,
        FileFormat::Tsv {
            header: true,
            columns: vec![],
        },
        splits,
        format,
        (512, targets_length),
    )
}

fn glue_format(config: &str, fields: &[(&str, &str)], label: &str) -> TextFormat {
    TextFormat::Glue {
        config: config.into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        label: Some(label.into()),
    }
}

fn files_task(
    name: &str,
    description: &str,
    format: FileFormat,
    splits: &[(&str, &str)],
    text: TextFormat,
    lengths: (usize, usize),
) -> Task {
    Task::new(name, Source::files(format, splits))
        .description(description)
        .text_to_text(text)
        .lengths(lengths.0, lengths.1)
}

/// GLUE tasks over the files of the GLUE download (one directory per task),
/// SQuAD over its JSON files and CNN/DailyMail over `.story` files.
fn glue_tasks() -> Vec<Task> {
    let mut v = glue_tsv_tasks();
    // CoLA: header-less train/dev files, a headed test file
    let mut cola = tsv_task(
        "glue_cola",
        "GLUE CoLA: `cola sentence: …` → unacceptable / acceptable (Matthews correlation)",
        &[
            ("train", "train.tsv"),
            ("validation", "dev.tsv"),
            ("test", "test.tsv"),
        ],
        glue_format("cola", &[("sentence", "sentence")], "label"),
        128,
    );
    if let Source::Files {
        format,
        split_formats,
        ..
    } = &mut cola.source
    {
        *format = FileFormat::Tsv {
            header: false,
            columns: ["source", "label", "original_label", "sentence"]
                .map(String::from)
                .to_vec(),
        };
        split_formats.insert(
            "test".into(),
            FileFormat::Tsv {
                header: true,
                columns: vec![],
            },
        );
    }
    v.push(cola);
    // MRPC: the MSR paraphrase files, train/validation split by dev_ids as tfds
    let msr = |ids: Option<&str>, keep_listed: bool, unlabeled: bool| FileFormat::MsrParaphrase {
        ids: ids.map(String::from),
        keep_listed,
        unlabeled,
    };
    let mut mrpc = files_task(
        "glue_mrpc",
        "GLUE MRPC: `mrpc sentence1: … sentence2: …` → not_equivalent / equivalent (F1, accuracy); MSR files + dev_ids",
        msr(Some("dev_ids.tsv|dev_ids"), false, false),
        &[
            ("train", "msr_paraphrase_train.txt|train"),
            ("validation", "msr_paraphrase_train.txt|train"),
            ("test", "msr_paraphrase_test.txt|test"),
        ],
        glue_format(
            "mrpc",
            &[("sentence1", "sentence1"), ("sentence2", "sentence2")],
            "label",
        ),
        (512, 128),
    );
    if let Source::Files { split_formats, .. } = &mut mrpc.source {
        split_formats.insert(
            "validation".into(),
            msr(Some("dev_ids.tsv|dev_ids"), true, false),
        );
        split_formats.insert("test".into(), msr(None, false, true));
    }
    v.push(mrpc);
    v.push(tsv_task(
        "glue_ax",
        "GLUE AX diagnostics (test only), formatted as MNLI: `mnli hypothesis: … premise: …`",
        &[("test", "AX.tsv|ax.tsv")],
        TextFormat::Glue {
            config: "ax".into(),
            fields: [("hypothesis", "sentence2"), ("premise", "sentence1")]
                .iter()
                .map(|(k, c)| (k.to_string(), c.to_string()))
                .collect(),
            label: None,
        },
        128,
    ));
    // WMT English→Romanian / French in the Hugging Face JSON Lines layout
    // ({"translation": {"en": …, "ro": …}}), as transformers' fixtures.
    for (name, lang, what) in [
        ("wmt16_enro", "ro", "WMT16 English→Romanian"),
        ("wmt14_enfr", "fr", "WMT14 English→French"),
        ("wmt15_enfr", "fr", "WMT15 English→French"),
    ] {
        v.push(files_task(
            name,
            &format!("{what}: `translate English to {}: …` (JSON Lines: translation.en / translation.{lang})", if lang == "ro" { "Romanian" } else { "French" }),
            FileFormat::Jsonl {},
            &[("train", "train.json*"), ("validation", "val.json*|validation.json*"), ("test", "test.json*")],
            TextFormat::Translate {
                source_language: "en".into(),
                target_language: lang.into(),
                source: "translation.en".into(),
                target: format!("translation.{lang}"),
            },
            (512, 128),
        ));
    }
    let squad_splits = [
        ("train", "train-v1.1.json"),
        ("validation", "dev-v1.1.json"),
    ];
    v.push(files_task(
        "squad_v010_allanswers",
        "SQuAD v1.1: `question: … context: …` with T5's punctuation padding → the first answer (scored against all answers, as T5)",
        FileFormat::SquadJson {},
        &squad_splits,
        TextFormat::Squad {
            include_context: true,
        },
        (512, 128),
    ));
    v.push(files_task(
        "squad_v010_context_free",
        "SQuAD v1.1 without context: `squad trivia question: …`",
        FileFormat::SquadJson {},
        &squad_splits,
        TextFormat::Squad {
            include_context: false,
        },
        (512, 128),
    ));
    v.push(files_task(
        "wmt_t2t_ende",
        "WMT English→German: `translate English to German: …` (OpenNMT layout: src-*.txt / tgt-*.txt)",
        FileFormat::ParallelText { source_marker: "src".into(), target_marker: "tgt".into() },
        &[("train", "src-train.txt"), ("validation", "src-val.txt")],
        TextFormat::Translate {
            source_language: "en".into(),
            target_language: "de".into(),
            source: "source".into(),
            target: "target".into(),
        },
        (512, 128),
    ));
    v.push(files_task(
        "cnn_dailymail",
        "CNN/DailyMail: `summarize: <article>` → highlights (tfds layout: url_lists/all_{train,val,test}.txt pick <sha1(url)>.story files)",
        FileFormat::CnnUrlList {
            stories: ["../cnn_stories", "../cnn/stories", "../dailymail/stories", "../dm_stories"]
                .map(String::from)
                .to_vec(),
        },
        &[
            ("train", "url_lists/all_train.txt|all_train.txt"),
            ("validation", "url_lists/all_val.txt|all_val.txt"),
            ("test", "url_lists/all_test.txt|all_test.txt"),
        ],
        TextFormat::Summarize { article: "article".into(), summary: "highlights".into() },
        (512, 128),
    ));
    v
}

fn glue_tsv_tasks() -> Vec<Task> {
    let std_splits = [
        ("train", "train.tsv"),
        ("validation", "dev.tsv"),
        ("test", "test.tsv"),
    ];
    let s12 = [("sentence1", "sentence1"), ("sentence2", "sentence2")];
    let stsb = |classes: u32| TextFormat::Stsb {
        classes,
        sentence1: "sentence1".into(),
        sentence2: "sentence2".into(),
        score: "score".into(),
    };
    vec![
        tsv_task(
            "glue_rte",
            "GLUE RTE: `rte sentence1: … sentence2: …` → entailment / not_entailment",
            &std_splits,
            glue_format("rte", &s12, "label"),
            128,
        ),
        tsv_task(
            "glue_wnli",
            "GLUE WNLI: `wnli sentence1: … sentence2: …`",
            &std_splits,
            glue_format("wnli", &s12, "label"),
            128,
        ),
        tsv_task(
            "glue_qnli",
            "GLUE QNLI: `qnli question: … sentence: …`",
            &std_splits,
            glue_format(
                "qnli",
                &[("question", "question"), ("sentence", "sentence")],
                "label",
            ),
            128,
        ),
        tsv_task(
            "glue_sst2",
            "GLUE SST-2: `sst2 sentence: …` → negative / positive",
            &std_splits,
            glue_format("sst2", &[("sentence", "sentence")], "label"),
            128,
        ),
        tsv_task(
            "glue_qqp",
            "GLUE QQP: `qqp question1: … question2: …` → not_duplicate / duplicate",
            &std_splits,
            glue_format(
                "qqp",
                &[("question1", "question1"), ("question2", "question2")],
                "is_duplicate",
            ),
            128,
        ),
        tsv_task(
            "glue_mnli",
            "GLUE MNLI: `mnli hypothesis: … premise: …` (validation = matched)",
            &[
                ("train", "train.tsv"),
                ("validation", "dev_matched.tsv"),
                ("validation_mismatched", "dev_mismatched.tsv"),
                ("test", "test_matched.tsv"),
                ("test_mismatched", "test_mismatched.tsv"),
            ],
            glue_format(
                "mnli",
                &[("hypothesis", "sentence2"), ("premise", "sentence1")],
                "gold_label",
            ),
            128,
        ),
        tsv_task(
            "glue_stsb",
            "GLUE STS-B, score bucketed into 21 classes (0.0, 0.25, …, 5.0)",
            &std_splits,
            stsb(21),
            128,
        ),
        tsv_task(
            "glue_stsb_t5",
            "GLUE STS-B exactly as T5: 26 classes (0.0, 0.2, …, 5.0)",
            &std_splits,
            stsb(26),
            128,
        ),
    ]
}
