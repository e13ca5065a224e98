//! Supervised sources read by format: Parquet, TSV without header, gzip JSONL.

use std::io::Write;

use t5mix_pipeline::clean::output::{CleanPage, OutputFormat, ShardWriter};
use t5mix_tasks::supervised::{read_rows, FileFormat, TextFormat};

#[test]
fn parquet_rows_feed_templates() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ShardWriter::new(dir.path(), OutputFormat::Parquet, 100, vec![]).unwrap();
    for i in 0..3 {
        w.push(CleanPage {
            text: format!("question {i}?"),
            url: format!("u{i}"),
            timestamp: String::new(),
            split: "train".into(),
        })
        .unwrap();
    }
    let (shards, _) = w.finish().unwrap();
    let rows = read_rows(&shards[0], &FileFormat::Parquet {}).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["text"], "question 1?");
    let f = TextFormat::Template {
        inputs: "q: {text}".into(),
        targets: "{url}".into(),
    };
    assert_eq!(
        f.format(&rows[2], &shards[0], 3).unwrap(),
        ("q: question 2?".to_string(), "u2".to_string())
    );
}

#[test]
fn tsv_without_header_and_gzip_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let tsv = dir.path().join("cola.tsv");
    std::fs::write(
        &tsv,
        "gj04\t1\t\tOur friends won't buy \"this\" analysis.\n",
    )
    .unwrap();
    let rows = read_rows(
        &tsv,
        &FileFormat::Tsv {
            header: false,
            columns: vec![],
        },
    )
    .unwrap();
    assert_eq!(rows[0]["1"], "1");
    assert_eq!(
        rows[0]["3"], "Our friends won't buy \"this\" analysis.",
        "no quoting in GLUE TSVs"
    );
    let gz = dir.path().join("x.jsonl.gz");
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    writeln!(e, "{{\"a\": \"x\", \"n\": 3, \"skip\": null}}").unwrap();
    e.finish().unwrap();
    let rows = read_rows(&gz, &FileFormat::Jsonl {}).unwrap();
    assert_eq!(
        (
            rows[0]["a"].as_str(),
            rows[0]["n"].as_str(),
            rows[0].get("skip")
        ),
        ("x", "3", None)
    );
}

#[test]
fn plain_text_lines_feed_templates() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("q.txt.gz");
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&txt).unwrap(),
        flate2::Compression::default(),
    );
    e.write_all("Who wrote Hamlet?\n\nWhere is Paris?\n".as_bytes())
        .unwrap();
    e.finish().unwrap();
    let rows = read_rows(&txt, &FileFormat::Text {}).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["line"], "3");
    let f = TextFormat::Template {
        inputs: "trivia: {text}".into(),
        targets: "line {line}".into(),
    };
    assert_eq!(
        f.format(&rows[1], &txt, 2).unwrap(),
        ("trivia: Where is Paris?".to_string(), "line 3".to_string())
    );
}
