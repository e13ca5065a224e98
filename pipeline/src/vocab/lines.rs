//! Line-oriented encoding and decoding (`t5mix vocab encode` / `decode`):
//! lines are read in batches, encoded in parallel ([`Vocabulary::encode_batch`])
//! and written in order through a buffer, so a file encodes at the library's
//! speed on every core.

use std::io::{BufRead, Write};

use super::{VocabError, Vocabulary};

/// Lines per parallel batch.
const BATCH_LINES: usize = 8192;

/// How encoded lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// Ids separated by spaces.
    #[default]
    Ids,
    /// Pieces separated by spaces.
    Pieces,
    /// One JSON object per line: `{"text": …, "ids": […]}`.
    Jsonl,
}

crate::from_name!(LineFormat, "output format", ["ids", "pieces", "jsonl"]);

fn io(e: std::io::Error) -> VocabError {
    VocabError::Lines(e.to_string())
}

/// Encodes every line of `input` (appending EOS when `eos`) to `output`;
/// returns the lines and bytes read.
pub fn encode_lines(
    v: &Vocabulary,
    input: impl BufRead,
    output: impl Write,
    format: LineFormat,
    eos: bool,
) -> Result<(u64, u64), VocabError> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, output);
    let (mut lines, mut bytes) = (0u64, 0u64);
    let mut batch: Vec<String> = Vec::with_capacity(BATCH_LINES);
    let flush = |batch: &mut Vec<String>, out: &mut dyn Write| -> Result<(), VocabError> {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        let mut line = String::new();
        for (text, mut ids) in batch.iter().zip(v.encode_batch(&refs)) {
            if eos {
                ids.extend(v.eos_id());
            }
            line.clear();
            match format {
                LineFormat::Ids | LineFormat::Pieces => {
                    for (k, &i) in ids.iter().enumerate() {
                        if k > 0 {
                            line.push(' ');
                        }
                        match format {
                            LineFormat::Pieces => line.push_str(v.id_to_piece(i).unwrap_or("?")),
                            _ => line.push_str(&i.to_string()),
                        }
                    }
                }
                LineFormat::Jsonl => {
                    line = serde_json::json!({ "text": text, "ids": ids }).to_string();
                }
            }
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(io)?;
        }
        batch.clear();
        Ok(())
    };
    for l in input.lines() {
        let l = l.map_err(|e| VocabError::Lines(format!("line {}: {e}", lines + 1)))?;
        lines += 1;
        bytes += l.len() as u64 + 1;
        batch.push(l);
        if batch.len() == BATCH_LINES {
            flush(&mut batch, &mut out)?;
        }
    }
    flush(&mut batch, &mut out)?;
    out.flush().map_err(io)?;
    Ok((lines, bytes))
}

/// Decodes every line of space-separated ids in `input` to `output`; a
/// token that is not an id is an error naming its line.
pub fn decode_lines(
    v: &Vocabulary,
    input: impl BufRead,
    output: impl Write,
) -> Result<u64, VocabError> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, output);
    let mut n = 0u64;
    for l in input.lines() {
        n += 1;
        let l = l.map_err(|e| VocabError::Lines(format!("line {n}: {e}")))?;
        let ids = l
            .split_whitespace()
            .map(|x| {
                x.parse::<u32>()
                    .map_err(|_| VocabError::Lines(format!("line {n}: {x:?} is not an id")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        writeln!(out, "{}", v.decode(&ids)).map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(n)
}

/// Runs `f` over lines from `args` (one line each) when given, else from
/// `input` (a file) or stdin, writing to `output` (a file written whole,
/// then renamed) or stdout.
pub fn with_lines(
    args: &[String],
    input: Option<&std::path::Path>,
    output: Option<&std::path::Path>,
    f: impl FnOnce(&mut dyn BufRead, &mut dyn Write) -> Result<(), VocabError>,
) -> Result<(), VocabError> {
    let open = |p: &std::path::Path| {
        std::fs::File::open(p).map_err(|e| VocabError::Lines(format!("{}: {e}", p.display())))
    };
    let mut lines: Box<dyn BufRead> = match (input, args.is_empty()) {
        (_, false) => Box::new(std::io::Cursor::new(args.join("\n").into_bytes())),
        (Some(p), true) => Box::new(std::io::BufReader::new(open(p)?)),
        (None, true) => Box::new(std::io::stdin().lock()),
    };
    let Some(p) = output else {
        return f(&mut lines, &mut std::io::stdout().lock());
    };
    let atomic = |e: crate::PipelineError| VocabError::Lines(e.to_string());
    let mut file = crate::atomic::AtomicFile::create(p).map_err(atomic)?;
    f(&mut lines, file.writer())?;
    file.commit().map_err(atomic)?;
    Ok(())
}

impl std::fmt::Display for Vocabulary {
    /// Size, special ids and the sentinel range (`t5mix vocab info`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "md5              {}", self.checksum())?;
        writeln!(
            f,
            "pieces           {} (+ {} extra ids = vocab_size {})",
            self.base_vocab_size(),
            self.extra_ids(),
            self.vocab_size()
        )?;
        writeln!(
            f,
            "embedding rows   {} (vocab_size rounded up to {})",
            self.padded_vocab_size(),
            super::EMBEDDING_ROW_MULTIPLE
        )?;
        writeln!(
            f,
            "pad / eos / unk  {} / {:?} / {}",
            self.pad_id(),
            self.eos_id(),
            self.unk_id()
        )?;
        write!(f, "bos              {:?}", self.bos_id())?;
        if self.extra_ids() > 0 {
            write!(
                f,
                "\nsentinels        <extra_id_0> = {} … <extra_id_{}> = {}",
                self.sentinel(0),
                self.extra_ids() - 1,
                self.sentinel(self.extra_ids() - 1)
            )?;
        }
        Ok(())
    }
}
