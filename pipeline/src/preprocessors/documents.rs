//! Document handling before denoising (`t5.data.preprocessors`):
//! random chunks of long documents, concatenation of document groups, fixed
//! length segments, and EOS after trimming.

use super::rng::ExampleRng;

/// T5's `select_random_chunk` maximum (65536 tokens).
pub const DEFAULT_MAX_CHUNK: usize = 65_536;
/// T5's `reduce_concat_tokens` batch size (128 documents).
pub const DEFAULT_DOCS_PER_GROUP: usize = 128;

/// `select_random_chunk`: an empty document gives `None`; a document longer
/// than `max_length` gives the chunk starting at `max_length · U{0..⌈n/max⌉-1}`
/// (T5's default, non-uniform start); otherwise the document itself.
pub fn select_random_chunk<'a>(
    tokens: &'a [u32],
    max_length: usize,
    rng: &mut ExampleRng,
) -> Option<&'a [u32]> {
    let n = tokens.len();
    if n == 0 {
        return None;
    }
    if n <= max_length {
        return Some(tokens);
    }
    let num_chunks = n.div_ceil(max_length);
    let start = max_length * rng.below(num_chunks as u64) as usize;
    Some(&tokens[start..(start + max_length).min(n)])
}

/// `append_eos_after_trim`: keeps at most `length - 1` tokens and appends
/// `eos_id` (a feature with `add_eos=True`).
///
/// ```
/// use t5mix_pipeline::preprocessors::append_eos_after_trim;
/// let mut v = vec![5, 6, 7, 8];
/// append_eos_after_trim(&mut v, 3, 1);
/// assert_eq!(v, vec![5, 6, 1]);
/// ```
pub fn append_eos_after_trim(tokens: &mut Vec<u32>, length: usize, eos_id: u32) {
    tokens.truncate(length.saturating_sub(1));
    tokens.push(eos_id);
}

/// `reduce_concat_tokens` + `split_tokens`: concatenates each group of
/// `docs_per_group` documents (T5: no separator; `eos_between_docs` puts
/// `eos_id` after every document, the HF/nanoT5 way) and cuts the result into
/// consecutive segments of `segment_length` tokens, the last of each group
/// possibly shorter.
#[derive(Debug, Clone)]
pub struct ConcatSplitter {
    /// Documents per concatenation group (T5: 128).
    pub docs_per_group: usize,
    /// Tokens per output segment (`tokens_length` from `random_spans_helper`).
    pub segment_length: usize,
    /// Append EOS after each document before concatenating.
    pub eos_between_docs: bool,
    /// The EOS id.
    pub eos_id: u32,
    buffer: Vec<u32>,
    docs_in_group: usize,
}

impl ConcatSplitter {
    /// A splitter with T5's grouping.
    pub fn new(
        segment_length: usize,
        docs_per_group: usize,
        eos_between_docs: bool,
        eos_id: u32,
    ) -> Self {
        ConcatSplitter {
            docs_per_group: docs_per_group.max(1),
            segment_length: segment_length.max(1),
            eos_between_docs,
            eos_id,
            buffer: Vec::new(),
            docs_in_group: 0,
        }
    }

    /// Adds a document; complete segments of a finished group go to `emit`.
    pub fn push(&mut self, doc: &[u32], emit: &mut impl FnMut(&[u32])) {
        self.buffer.extend_from_slice(doc);
        if self.eos_between_docs {
            self.buffer.push(self.eos_id);
        }
        self.docs_in_group += 1;
        if self.docs_in_group == self.docs_per_group {
            self.flush(emit);
        }
    }

    /// Emits the segments of the group in progress.
    pub fn flush(&mut self, emit: &mut impl FnMut(&[u32])) {
        for seg in self.buffer.chunks(self.segment_length) {
            emit(seg);
        }
        self.buffer.clear();
        self.docs_in_group = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_starts_on_multiples_of_max() {
        let doc: Vec<u32> = (0..25).collect();
        let mut rng = ExampleRng::from_u64(3);
        for _ in 0..50 {
            let c = select_random_chunk(&doc, 10, &mut rng).unwrap();
            assert!(matches!(c[0], 0 | 10 | 20));
            assert!(c.len() == 10 || c == &doc[20..]);
        }
        assert!(select_random_chunk(&[], 10, &mut rng).is_none());
        assert_eq!(select_random_chunk(&doc, 100, &mut rng).unwrap().len(), 25);
    }

    #[test]
    fn concat_then_split() {
        let mut s = ConcatSplitter::new(4, 2, false, 1);
        let mut out: Vec<Vec<u32>> = Vec::new();
        let mut emit = |x: &[u32]| out.push(x.to_vec());
        s.push(&[10, 11, 12], &mut emit);
        s.push(&[13, 14, 15], &mut emit);
        s.push(&[20], &mut emit);
        s.flush(&mut emit);
        assert_eq!(out, vec![vec![10, 11, 12, 13], vec![14, 15], vec![20]]);

        let mut s = ConcatSplitter::new(3, 128, true, 1);
        let mut out: Vec<Vec<u32>> = Vec::new();
        let mut emit = |x: &[u32]| out.push(x.to_vec());
        s.push(&[10, 11], &mut emit);
        s.push(&[12], &mut emit);
        s.flush(&mut emit);
        assert_eq!(out, vec![vec![10, 11, 1], vec![12, 1]]);
    }
}
