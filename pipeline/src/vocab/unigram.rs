//! The unigram model's segmentation: a byte trie over the pieces and
//! SentencePiece's optimized Viterbi (`unigram::Model::EncodeOptimized`).
//!
//! Path scores are accumulated in `f32` and the first of equal candidates
//! is kept: that is what Python sentencepiece 0.2.3 (the version seqio users
//! run) does. Accumulating in `f64`, as the C++ 0.2.1 sources vendored by
//! the `sentencepiece` crate read, breaks ties between equal-score
//! segmentations differently (runs of `-`, `.`, `_`; 14 of the 63,811 shared
//! lines).

/// A byte trie over piece strings: root children in a dense table, deeper
/// children in sorted edge lists.
#[derive(Debug, Clone, Default)]
pub struct PieceTrie {
    root: Vec<u32>, // 256 entries, node index or u32::MAX
    nodes: Vec<TrieNode>,
    edge_bytes: Vec<u8>,
    edge_targets: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct TrieNode {
    edges_start: u32,
    edges_len: u32,
    id: i32,
}

impl PieceTrie {
    /// Builds the trie over `(piece bytes, id)`.
    pub fn build(pieces: &[(Vec<u8>, i32)]) -> Self {
        // A simple pointer trie first, then flattened with sorted edges.
        struct Tmp {
            children: std::collections::BTreeMap<u8, usize>,
            id: i32,
        }
        let mut tmp = vec![Tmp {
            children: Default::default(),
            id: -1,
        }];
        for (bytes, id) in pieces {
            let mut cur = 0;
            for &b in bytes {
                cur = match tmp[cur].children.get(&b) {
                    Some(&n) => n,
                    None => {
                        tmp.push(Tmp {
                            children: Default::default(),
                            id: -1,
                        });
                        let n = tmp.len() - 1;
                        tmp[cur].children.insert(b, n);
                        n
                    }
                };
            }
            if tmp[cur].id < 0 {
                tmp[cur].id = *id;
            }
        }
        let mut t = PieceTrie {
            root: vec![u32::MAX; 256],
            ..Default::default()
        };
        for n in &tmp {
            let start = t.edge_bytes.len() as u32;
            for (&b, &c) in &n.children {
                t.edge_bytes.push(b);
                t.edge_targets.push(c as u32);
            }
            t.nodes.push(TrieNode {
                edges_start: start,
                edges_len: n.children.len() as u32,
                id: n.id,
            });
        }
        for (&b, &c) in &tmp[0].children {
            t.root[b as usize] = c as u32;
        }
        t
    }

    #[inline]
    fn child(&self, node: u32, b: u8) -> Option<u32> {
        let n = &self.nodes[node as usize];
        let s = n.edges_start as usize;
        let bytes = &self.edge_bytes[s..s + n.edges_len as usize];
        if bytes.len() <= 8 {
            bytes.iter().position(|&x| x == b).map(|i| self.edge_targets[s + i])
        } else {
            bytes.binary_search(&b).ok().map(|i| self.edge_targets[s + i])
        }
    }

    /// Calls `f(end, id)` for every piece that is a prefix of `key`, shortest first.
    #[inline]
    pub fn for_each_prefix(&self, key: &[u8], mut f: impl FnMut(usize, i32)) {
        let Some(&first) = key.first() else { return };
        let mut node = self.root[first as usize];
        if node == u32::MAX {
            return;
        }
        let mut i = 1;
        loop {
            let id = self.nodes[node as usize].id;
            if id >= 0 {
                f(i, id);
            }
            if i == key.len() {
                return;
            }
            match self.child(node, key[i]) {
                Some(n) => node = n,
                None => return,
            }
            i += 1;
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

/// Appends to `out` the ids of the best segmentation of `normalized`,
/// consecutive unknowns merged into one (as `SentencePieceProcessor`).
/// `best` is scratch space: (score, start, id) of the best path ending at
/// each byte.
#[allow(clippy::too_many_arguments)]
pub fn viterbi(
    normalized: &[u8],
    trie: &PieceTrie,
    info: &[PieceInfo],
    min_score: f32,
    max_score: f32,
    unk_id: i32,
    best: &mut Vec<(f32, i32, i32)>,
    out: &mut Vec<u32>,
) {
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
        let mblen = ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4][(lead >> 4) as usize]).min(size - starts_at);
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
    while end > 0 {
        let (_, s, id) = best[end];
        out.push(id as u32);
        end = s as usize;
    }
    out[first..].reverse();
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
