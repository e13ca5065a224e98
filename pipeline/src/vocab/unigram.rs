//! The unigram model's segmentation: a byte trie over the pieces and
//! SentencePiece's optimized Viterbi (`unigram::Model::EncodeOptimized`).
//!
//! Path scores are accumulated in `f32` and the first of equal candidates
//! is kept: that is what Python sentencepiece 0.2.3 (the version seqio users
//! run) does. Accumulating in `f64`, as the C++ 0.2.1 sources vendored by
//! the `sentencepiece` crate read, breaks ties between equal-score
//! segmentations differently (runs of `-`, `.`, `_`; 14 of the 63,811 shared
//! lines).

/// A double-array trie (yada, darts-clone layout) over the piece strings.
#[derive(Clone)]
pub struct PieceTrie {
    da: yada::DoubleArray<Vec<u8>>,
}

impl std::fmt::Debug for PieceTrie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PieceTrie({} bytes)", self.da.0.len())
    }
}

impl PieceTrie {
    /// Builds the trie over `(piece bytes, id)`; the first id of a repeated
    /// piece wins.
    pub fn build(pieces: &[(Vec<u8>, i32)]) -> Self {
        let mut keys: Vec<(&[u8], u32)> = pieces
            .iter()
            .map(|(k, id)| (k.as_slice(), *id as u32))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
        keys.dedup_by(|b, a| a.0 == b.0);
        let bytes = yada::builder::DoubleArrayBuilder::build(&keys).unwrap_or_default();
        PieceTrie {
            da: yada::DoubleArray::new(bytes),
        }
    }

    /// Calls `f(end, id)` for every piece that is a prefix of `key`, shortest first.
    #[inline]
    pub fn for_each_prefix(&self, key: &[u8], mut f: impl FnMut(usize, i32)) {
        for (id, len) in self.da.common_prefix_search(key) {
            f(len, id as i32);
        }
    }
}

/// What the Viterbi search needs to know of each piece.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PieceInfo {
    /// Log probability.
    pub score: f32,
    /// `USER_DEFINED`: always preferred.
    pub user_defined: bool,
    /// `UNUSED`: never produced.
    pub unused: bool,
}

/// The model's pieces as the search reads them.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    /// The trie over normal, user-defined and unused pieces.
    pub trie: &'a PieceTrie,
    /// Per id.
    pub info: &'a [PieceInfo],
    /// Lowest and highest score of a normal piece.
    pub min_score: f32,
    /// Highest score of a normal piece (user-defined pieces score by it).
    pub max_score: f32,
    /// `<unk>`.
    pub unk_id: i32,
    /// With byte fallback, the ids of `<0x00>` … `<0xFF>`: an unknown span
    /// becomes the ids of its UTF-8 bytes
    /// (`SentencePieceProcessor::PopulateSentencePieceText`).
    pub byte_ids: Option<&'a [u32; 256]>,
}

/// Appends to `out` the ids of the best segmentation of `normalized`,
/// consecutive unknowns merged into one (as `SentencePieceProcessor`), or,
/// with byte fallback, spelled as byte pieces. `best` is scratch space:
/// (score, start, id) of the best path ending at each byte.
pub fn viterbi(
    normalized: &[u8],
    model: &Model<'_>,
    best: &mut Vec<(f32, i32, i32)>,
    out: &mut Vec<u32>,
) {
    let Model {
        trie,
        info,
        min_score,
        max_score,
        unk_id,
        byte_ids,
    } = *model;
    let size = normalized.len();
    if size == 0 {
        return;
    }
    let unk_score: f32 = min_score - 10.0;
    best.clear();
    best.resize(size + 1, (0.0, -1, -1));
    let mut starts_at = 0usize;
    while starts_at < size {
        let here = best[starts_at].0;
        let lead = normalized[starts_at];
        let mblen = ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4][(lead >> 4) as usize])
            .min(size - starts_at);
        let mut has_single_node = false;
        trie.for_each_prefix(&normalized[starts_at..], |len, id| {
            let p = &info[id as usize];
            if p.unused {
                return;
            }
            let score: f32 = if p.user_defined {
                len as f32 * max_score - 0.1
            } else {
                p.score
            };
            let cand = score + here;
            let t = &mut best[starts_at + len];
            if t.1 == -1 || cand > t.0 {
                *t = (cand, starts_at as i32, id);
            }
            if len == mblen {
                has_single_node = true;
            }
        });
        if !has_single_node {
            let cand: f32 = unk_score + here;
            let t = &mut best[starts_at + mblen];
            if t.1 == -1 || cand > t.0 {
                *t = (cand, starts_at as i32, unk_id);
            }
        }
        starts_at += mblen;
    }
    // Backtrack, then merge runs of unknowns as SentencePieceProcessor does.
    let first = out.len();
    let mut end = size;
    let mut unknowns = false;
    while end > 0 {
        let (_, s, id) = best[end];
        out.push(id as u32);
        unknowns |= id == unk_id;
        end = s as usize;
    }
    out[first..].reverse();
    if let Some(bytes) = byte_ids.filter(|_| unknowns) {
        // again, with each unknown's span: its bytes instead
        out.truncate(first);
        let mut end = size;
        while end > 0 {
            let (_, s, id) = best[end];
            if id == unk_id {
                out.extend(
                    normalized[s as usize..end]
                        .iter()
                        .rev()
                        .map(|&b| bytes[b as usize]),
                );
            } else {
                out.push(id as u32);
            }
            end = s as usize;
        }
        out[first..].reverse();
        return;
    }
    let mut w = first;
    for r in first..out.len() {
        let id = out[r];
        if id as i32 == unk_id && w > first && out[w - 1] as i32 == unk_id {
            continue;
        }
        out[w] = id;
        w += 1;
    }
    out.truncate(w);
}
