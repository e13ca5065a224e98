//! Supervised tasks: rows of files (GLUE's TSVs, CSV, JSONL) formatted into
//! `inputs` / `targets` text the way T5 does, then tokenized with EOS.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::formats::{glue, stsb_inputs, stsb_target, GlueBenchmark};

/// How a file's rows are read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum FileFormat {
    /// Tab-separated, no quoting (GLUE's files); columns named by the header
    /// or, without one, "0", "1", ….
    Tsv {
        /// The first row names the columns.
        #[serde(default = "yes")]
        header: bool,
        /// Names for the columns of a header-less file (e.g. CoLA's
        /// `source`, `label`, `original_label`, `sentence`); unnamed
        /// columns are called "0", "1", ….
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<String>,
    },
    /// Comma-separated with quotes.
    Csv {
        /// The first row names the columns.
        #[serde(default = "yes")]
        header: bool,
    },
    /// One JSON object per line (string, number and boolean fields).
    Jsonl {},
    /// Plain text: one row per non-empty line, column `text` (and `line`,
    /// its 1-based number).
    Text {},
    /// Parquet: string columns as they are, numeric and boolean columns
    /// printed (Arrow's display), nulls left out.
    Parquet {},
    /// SQuAD's JSON (`data[].paragraphs[].qas[]`): one row per question with
    /// columns `id`, `title`, `context`, `question`, `answer` (the first
    /// answer's text) and `answers` (all, joined by a newline).
    SquadJson {},
    /// Parallel text: the matched file holds source lines, the file named by
    /// replacing `source_marker` with `target_marker` in its name holds the
    /// target lines (e.g. OpenNMT's `src-train.txt` / `tgt-train.txt`); rows
    /// have columns `source` and `target`.
    ParallelText {
        /// Part of the source file's name.
        source_marker: String,
        /// What replaces it in the target file's name.
        target_marker: String,
    },
    /// A CNN/DailyMail `.story` file as tfds `cnn_dailymail` reads it: one row
    /// with `article` (lines joined, missing periods added) and `highlights`
    /// (the `@highlight` lines joined with a newline), and `id` (file stem).
    CnnStory {},
    /// tfds `cnn_dailymail`'s split lists: the matched file is a URL list
    /// (`all_train.txt`, …); each URL's story is `<sha1(url)>.story` in one
    /// of the `stories` folders (relative to the list's folder), read as
    /// [`FileFormat::CnnStory {}`], in list order; URLs without a story file
    /// are skipped, as tfds does.
    CnnUrlList {
        /// Story folders, relative to the URL list's folder.
        stories: Vec<String>,
    },
    /// The MSR paraphrase files of GLUE's MRPC download
    /// (`msr_paraphrase_train.txt` / `_test.txt`: quality, two ids, two
    /// strings) with tfds's split by the `dev_ids` list: rows `sentence1`,
    /// `sentence2`, `label` (−1 in the test file), `idx`.
    MsrParaphrase {
        /// The id-pair list (`dev_ids.tsv`; `|` separates alternatives),
        /// relative to the data file's folder; none: every row.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ids: Option<String>,
        /// Keep the rows whose id pair is listed (validation) or the others (train).
        #[serde(default)]
        keep_listed: bool,
        /// The file has no labels (the test file).
        #[serde(default)]
        unlabeled: bool,
    },
}

fn yes() -> bool {
    true
}

/// How a row becomes text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum TextFormat {
    /// `preprocessors.glue` for a tfds GLUE config (cola, sst2, mrpc, qqp,
    /// mnli, qnli, rte, wnli, ax): features from the named columns, the label
    /// from a class id or a label string.
    Glue {
        /// tfds config name.
        config: String,
        /// T5 feature name → column.
        fields: BTreeMap<String, String>,
        /// Column of the label (none or empty: `<unk>`).
        label: Option<String>,
    },
    /// STS-B: `stsb sentence1: … sentence2: …`, the score bucketed into
    /// `classes` labels (T5: 26; t5mix's glue_stsb: 21).
    Stsb {
        /// Number of label classes over [0, 5].
        classes: u32,
        /// Column of sentence 1.
        sentence1: String,
        /// Column of sentence 2.
        sentence2: String,
        /// Column of the score (missing: −1).
        score: String,
    },
    /// `preprocessors.squad`: `question: … context: …` with T5's punctuation
    /// padding (or `squad trivia question: …` without context).
    Squad {
        /// Include the context.
        #[serde(default = "yes")]
        include_context: bool,
    },
    /// `preprocessors.summarize`: `summarize: <article>`.
    Summarize {
        /// Column of the article.
        article: String,
        /// Column of the summary.
        summary: String,
    },
    /// `preprocessors.translate`: `translate English to German: <source>`.
    Translate {
        /// Source language code (en, de, fr, ro, …).
        source_language: String,
        /// Target language code.
        target_language: String,
        /// Column of the source text.
        source: String,
        /// Column of the target text.
        target: String,
    },
    /// Free templates: `{column}` is replaced by that column's value.
    Template {
        /// Inputs template, e.g. `"question: {question} context: {context}"`.
        inputs: String,
        /// Targets template, e.g. `"{answer}"`.
        targets: String,
    },
}

/// Errors of supervised sources and formats.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An unreadable file.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A row without a column the format needs.
    #[error("{path}: row {row}: no column {column:?} (columns: {columns})")]
    MissingColumn {
        /// The file.
        path: String,
        /// 1-based data row.
        row: usize,
        /// The missing column.
        column: String,
        /// The columns there are.
        columns: String,
    },
    /// A format that cannot be used.
    #[error("{0}")]
    Format(String),
}

/// One row: column name → text.
pub use t5mix_pipeline::readers::rows::Row;

/// Reads every row of a file (gzip detected by content): the tabular formats
/// through `t5mix_pipeline::readers::rows`, T5's dataset layouts here.
pub fn read_rows(path: &Path, format: &FileFormat) -> Result<Vec<Row>, crate::TaskError> {
    use t5mix_pipeline::readers::rows;
    let err = |m: String| SourceError::Read {
        path: path.display().to_string(),
        message: m,
    };
    Ok(match format {
        FileFormat::Tsv { header, columns } => rows::read_delimited(path, true, *header, columns)?,
        FileFormat::Csv { header } => rows::read_delimited(path, false, *header, &[])?,
        FileFormat::Jsonl {} => rows::read_jsonl_rows(path)?,
        FileFormat::Parquet {} => rows::read_parquet_rows(path)?,
        FileFormat::Text {} => rows::read_line_rows(path)?,
        FileFormat::SquadJson {} => {
            let v: serde_json::Value =
                serde_json::from_str(&rows::read_text(path)?).map_err(|e| err(e.to_string()))?;
            let mut out = Vec::new();
            let s = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_string();
            for article in v["data"]
                .as_array()
                .ok_or_else(|| err("no \"data\" array".into()))?
            {
                for para in article["paragraphs"].as_array().into_iter().flatten() {
                    for qa in para["qas"].as_array().into_iter().flatten() {
                        let answers: Vec<String> = qa["answers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|a| s(&a["text"]))
                            .collect();
                        out.push(Row::from([
                            ("id".into(), s(&qa["id"])),
                            ("title".into(), s(&article["title"])),
                            ("context".into(), s(&para["context"])),
                            ("question".into(), s(&qa["question"])),
                            (
                                "answer".into(),
                                answers.first().cloned().unwrap_or_default(),
                            ),
                            ("answers".into(), answers.join("\n")),
                        ]));
                    }
                }
            }
            out
        }
        FileFormat::ParallelText {
            source_marker,
            target_marker,
        } => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !name.contains(source_marker.as_str()) {
                return Err(err(format!(
                    "file name has no {source_marker:?} to find its target file"
                ))
                .into());
            }
            let target =
                path.with_file_name(name.replacen(source_marker.as_str(), target_marker, 1));
            let (src, tgt) = (rows::read_text(path)?, rows::read_text(&target)?);
            let (s_lines, t_lines): (Vec<&str>, Vec<&str>) =
                (src.lines().collect(), tgt.lines().collect());
            if s_lines.len() != t_lines.len() {
                return Err(err(format!(
                    "{} source lines but {} target lines in {}",
                    s_lines.len(),
                    t_lines.len(),
                    target.display()
                ))
                .into());
            }
            s_lines
                .iter()
                .zip(&t_lines)
                .map(|(a, b)| {
                    Row::from([
                        ("source".to_string(), a.to_string()),
                        ("target".to_string(), b.to_string()),
                    ])
                })
                .collect()
        }
        FileFormat::CnnStory {} => {
            let (article, highlights) = cnn_story(&rows::read_text(path)?);
            let id = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            vec![Row::from([
                ("article".into(), article),
                ("highlights".into(), highlights),
                ("id".into(), id),
            ])]
        }
        FileFormat::MsrParaphrase {
            ids,
            keep_listed,
            unlabeled,
        } => read_msr_paraphrase(
            path,
            &rows::read_text(path)?,
            ids.as_deref(),
            *keep_listed,
            *unlabeled,
        )
        .map_err(err)?,
        FileFormat::CnnUrlList { stories } => {
            read_cnn_url_list(path, &rows::read_text(path)?, stories).map_err(err)?
        }
    })
}

/// The first existing file among `|`-separated alternatives in `dir`.
fn first_existing(dir: &Path, alternatives: &str) -> Option<std::path::PathBuf> {
    alternatives
        .split('|')
        .map(|a| dir.join(a.trim()))
        .find(|p| p.is_file())
}

fn read_msr_paraphrase(
    path: &Path,
    text: &str,
    ids: Option<&str>,
    keep_listed: bool,
    unlabeled: bool,
) -> Result<Vec<Row>, String> {
    let listed: std::collections::HashSet<(String, String)> = match ids {
        None => Default::default(),
        Some(alts) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            let f = first_existing(dir, alts)
                .ok_or_else(|| format!("no id list {alts:?} next to it"))?;
            std::fs::read_to_string(&f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .lines()
                .filter_map(|l| {
                    let mut p = l.split('\t');
                    Some((p.next()?.trim().to_string(), p.next()?.trim().to_string()))
                })
                .collect()
        }
    };
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 5 {
            return Err(format!(
                "line {}: {} columns, MSR rows have 5",
                n + 1,
                f.len()
            ));
        }
        if ids.is_some() {
            let is_listed = listed.contains(&(f[1].to_string(), f[2].to_string()));
            if is_listed != keep_listed {
                continue;
            }
        }
        let label = if unlabeled { "-1" } else { f[0] };
        rows.push(Row::from([
            ("sentence1".to_string(), f[3].to_string()),
            ("sentence2".to_string(), f[4].to_string()),
            ("label".to_string(), label.to_string()),
            // tfds's idx: the row's position in the file
            ("idx".to_string(), (n - 1).to_string()),
        ]));
    }
    Ok(rows)
}

fn read_cnn_url_list(path: &Path, text: &str, stories: &[String]) -> Result<Vec<Row>, String> {
    use sha1::Digest;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut rows = Vec::new();
    for url in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let hash: String = sha1::Sha1::digest(url.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let Some(story) = stories
            .iter()
            .map(|s| dir.join(s).join(format!("{hash}.story")))
            .find(|p| p.is_file())
        else {
            continue;
        };
        let t = std::fs::read_to_string(&story).map_err(|e| format!("{}: {e}", story.display()))?;
        let (article, highlights) = cnn_story(&t);
        rows.push(Row::from([
            ("article".to_string(), article),
            ("highlights".to_string(), highlights),
            ("id".to_string(), hash),
            ("url".to_string(), url.to_string()),
        ]));
    }
    Ok(rows)
}

/// tfds `cnn_dailymail` `_get_art_abs` (version ≥ 2): lines stripped, a
/// period added to lines without an end token, `@highlight` lines' successors
/// as highlights (joined by newlines), the rest as the article (joined by
/// spaces).
pub fn cnn_story(text: &str) -> (String, String) {
    const END: [char; 9] = ['.', '!', '?', '\'', '`', '"', '\u{2019}', '\u{201d}', ')'];
    let mut article = Vec::new();
    let mut highlights = Vec::new();
    let mut next_is_highlight = false;
    for raw in text.split('\n') {
        let line =
            raw.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c));
        let line = if line.contains("@highlight") || line.is_empty() || line.ends_with(END) {
            line.to_string()
        } else {
            format!("{line}.")
        };
        if line.is_empty() {
            continue;
        } else if line.starts_with("@highlight") {
            next_is_highlight = true;
        } else if next_is_highlight {
            highlights.push(line);
        } else {
            article.push(line);
        }
    }
    (article.join(" "), highlights.join("\n"))
}

/// A piece of a `{column}` template.
enum Piece<'a> {
    Text(&'a str),
    Column(&'a str),
}

/// Splits a template into text and placeholders: balanced braces,
/// non-empty placeholder names.
fn parse_template(t: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!("unmatched '}}' in {t:?}"));
        }
        pieces.push(Piece::Text(&rest[..open]));
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {t:?}"))?;
        let name = &after[..close];
        if name.is_empty() || name.contains('{') {
            return Err(format!("bad placeholder {{{name}}} in {t:?}"));
        }
        pieces.push(Piece::Column(name));
        rest = &after[close + 1..];
    }
    pieces.push(Piece::Text(rest));
    Ok(pieces)
}

/// Checks a template: balanced braces, non-empty placeholders; returns
/// the placeholder names.
pub fn check_template(t: &str) -> Result<Vec<String>, String> {
    Ok(parse_template(t)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Column(c) => Some(c.to_string()),
            Piece::Text(_) => None,
        })
        .collect())
}

fn fill(t: &str, col: &dyn Fn(&str) -> Result<String, SourceError>) -> Result<String, SourceError> {
    let mut out = String::with_capacity(t.len());
    for piece in parse_template(t).map_err(SourceError::Format)? {
        match piece {
            Piece::Text(x) => out.push_str(x),
            Piece::Column(c) => out.push_str(&col(c)?),
        }
    }
    Ok(out)
}

impl TextFormat {
    /// Checks the format before any file is read.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            TextFormat::Glue { config, fields, .. } => {
                let b = GlueBenchmark::from_config(config)
                    .ok_or_else(|| format!("unknown GLUE config {config:?}"))?;
                for f in b.feature_names() {
                    if !fields.contains_key(*f) {
                        return Err(format!("GLUE {config} needs a column for feature {f:?}"));
                    }
                }
                Ok(())
            }
            TextFormat::Stsb { classes, .. } if *classes < 2 => {
                Err(format!("stsb needs at least 2 classes, got {classes}"))
            }
            TextFormat::Stsb { .. } | TextFormat::Squad { .. } | TextFormat::Summarize { .. } => {
                Ok(())
            }
            TextFormat::Translate {
                source_language,
                target_language,
                ..
            } => {
                for l in [source_language, target_language] {
                    crate::formats::language_name(l)
                        .ok_or_else(|| format!("unknown language code {l:?}"))?;
                }
                Ok(())
            }
            TextFormat::Template { inputs, targets } => {
                check_template(inputs).map_err(|e| format!("inputs: {e}"))?;
                check_template(targets).map_err(|e| format!("targets: {e}"))?;
                Ok(())
            }
        }
    }

    /// `(inputs, targets)` text of row `index` (1-based) of `path`.
    pub fn format(
        &self,
        row: &Row,
        path: &Path,
        index: usize,
    ) -> Result<(String, String), SourceError> {
        let col = |c: &str| -> Result<String, SourceError> {
            row.get(c)
                .cloned()
                .ok_or_else(|| SourceError::MissingColumn {
                    path: path.display().to_string(),
                    row: index,
                    column: c.to_string(),
                    columns: row.keys().cloned().collect::<Vec<_>>().join(", "),
                })
        };
        match self {
            TextFormat::Glue {
                config,
                fields,
                label,
            } => {
                let b = GlueBenchmark::from_config(config).ok_or_else(|| {
                    SourceError::Format(format!("unknown GLUE config {config:?}"))
                })?;
                let values: Vec<(&str, String)> = b
                    .feature_names()
                    .iter()
                    .map(|f| Ok((*f, col(&fields[*f])?)))
                    .collect::<Result<_, SourceError>>()?;
                let feats: Vec<(&str, &str)> =
                    values.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let label_id = match label.as_deref().and_then(|l| row.get(l)) {
                    None => -1,
                    Some(v) => v.trim().parse::<i64>().unwrap_or_else(|_| {
                        b.label_names()
                            .iter()
                            .position(|n| n == v)
                            .map_or(-1, |i| i as i64)
                    }),
                };
                Ok(glue(b, &feats, label_id))
            }
            TextFormat::Stsb {
                classes,
                sentence1,
                sentence2,
                score,
            } => {
                let s: f32 = row
                    .get(score)
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(-1.0);
                Ok((
                    stsb_inputs(&col(sentence1)?, &col(sentence2)?),
                    stsb_target(s, *classes),
                ))
            }
            TextFormat::Squad { include_context } => Ok(crate::formats::squad(
                &col("question")?,
                &col("context")?,
                &col("answer")?,
                *include_context,
            )),
            TextFormat::Summarize { article, summary } => {
                Ok(crate::formats::summarize(&col(article)?, &col(summary)?))
            }
            TextFormat::Translate {
                source_language,
                target_language,
                source,
                target,
            } => crate::formats::translate(
                source_language,
                target_language,
                &col(source)?,
                &col(target)?,
            )
            .ok_or_else(|| {
                SourceError::Format(format!(
                    "unknown language in {source_language} → {target_language}"
                ))
            }),
            TextFormat::Template { inputs, targets } => {
                Ok((fill(inputs, &col)?, fill(targets, &col)?))
            }
        }
    }
}
