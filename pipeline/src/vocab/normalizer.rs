//! SentencePiece's text normalizer: the model's precompiled character map
//! (a darts-clone double-array trie over byte sequences, each mapped to a
//! normalized string, e.g. NFKC for `nmt_nfkc`), whitespace handling and the
//! U+2581 escaping, exactly as `normalizer.cc` does it.

use super::VocabError;

/// A darts-clone double array (read-only): common-prefix search.
#[derive(Debug, Clone, Default)]
struct DoubleArray {
    units: Vec<u32>,
}

impl DoubleArray {
    #[inline]
    fn has_leaf(u: u32) -> bool {
        (u >> 8) & 1 == 1
    }
    #[inline]
    fn value(u: u32) -> u32 {
        u & ((1 << 31) - 1)
    }
    #[inline]
    fn label(u: u32) -> u32 {
        u & ((1 << 31) | 0xff)
    }
    #[inline]
    fn offset(u: u32) -> usize {
        ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize
    }

    /// Whether some key starts with `prefix` and is longer than it.
    fn has_path(&self, prefix: &[u8]) -> bool {
        let units = &self.units;
        if units.is_empty() {
            return false;
        }
        let mut node = Self::offset(units[0]);
        for &b in prefix {
            node ^= b as usize;
            match units.get(node) {
                Some(&u) if Self::label(u) == b as u32 => node ^= Self::offset(u),
                _ => return false,
            }
        }
        true
    }

    /// Longest key that is a prefix of `key`: (value, length).
    fn longest_prefix(&self, key: &[u8]) -> Option<(u32, usize)> {
        let units = &self.units;
        if units.is_empty() {
            return None;
        }
        let mut node = Self::offset(units[0]);
        let mut best = None;
        for (i, &b) in key.iter().enumerate() {
            node ^= b as usize;
            let Some(&u) = units.get(node) else { break };
            if Self::label(u) != b as u32 {
                break;
            }
            node ^= Self::offset(u);
            if Self::has_leaf(u) {
                if let Some(&leaf) = units.get(node) {
                    best = Some((Self::value(leaf), i + 1));
                }
            }
        }
        best
    }
}

const SPACE_SYMBOL: &str = "\u{2581}";

/// The normalizer of one model.
#[derive(Debug, Clone)]
pub struct Normalizer {
    trie: DoubleArray,
    normalized: Vec<u8>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    treat_whitespace_as_suffix: bool,
    /// For each ASCII byte whose normalization is a single-byte lookup
    /// (no longer rule starts with it): its replacement.
    ascii: Vec<Option<Box<[u8]>>>,
    /// User-defined symbols, matched before the character map and left as is.
    user_defined: Vec<Vec<u8>>,
    /// First bytes of the user-defined symbols.
    user_defined_first: [bool; 256],
}

impl Normalizer {
    /// Builds the normalizer from a precompiled charsmap blob and the flags.
    pub fn new(
        charsmap: &[u8],
        add_dummy_prefix: bool,
        remove_extra_whitespaces: bool,
        escape_whitespaces: bool,
        treat_whitespace_as_suffix: bool,
        mut user_defined: Vec<Vec<u8>>,
    ) -> Result<Self, VocabError> {
        let (trie, normalized) = if charsmap.is_empty() {
            (DoubleArray::default(), Vec::new())
        } else {
            if charsmap.len() < 4 {
                return Err(VocabError::Corrupt(
                    "precompiled_charsmap shorter than 4 bytes".into(),
                ));
            }
            let size = u32::from_le_bytes(charsmap[..4].try_into().unwrap()) as usize;
            if !size.is_multiple_of(4) || 4 + size > charsmap.len() {
                return Err(VocabError::Corrupt(format!(
                    "precompiled_charsmap: trie size {size} does not fit in {} bytes",
                    charsmap.len()
                )));
            }
            let units = charsmap[4..4 + size]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (DoubleArray { units }, charsmap[4 + size..].to_vec())
        };
        // Longest user-defined symbol first.
        user_defined.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut n = Normalizer {
            trie,
            normalized,
            add_dummy_prefix,
            remove_extra_whitespaces,
            escape_whitespaces,
            treat_whitespace_as_suffix,
            ascii: Vec::new(),
            user_defined_first: [false; 256],
            user_defined,
        };
        for s in &n.user_defined {
            if let Some(&b) = s.first() {
                n.user_defined_first[b as usize] = true;
            }
        }
        n.ascii = (0u8..128)
            .map(|b| {
                // Safe to cache only when no rule longer than one byte starts with b.
                let longer = (0u8..=255).any(|c| n.trie.has_path(&[b, c]));
                if longer || n.user_defined.iter().any(|s| s.first() == Some(&b)) {
                    None
                } else {
                    let key = [b];
                    let rep = n.prefix(&key).0.to_vec();
                    Some(rep.into_boxed_slice())
                }
            })
            .collect();
        Ok(n)
    }

    /// `NormalizePrefix`: the normalized form of the longest rule (or
    /// user-defined symbol, or one character) at the start of `input`, and
    /// how many input bytes it covers.
    fn prefix<'a>(&'a self, input: &'a [u8]) -> (&'a [u8], usize) {
        if self.user_defined_first[input[0] as usize] {
            for s in &self.user_defined {
                if input.starts_with(s) {
                    return (&input[..s.len()], s.len());
                }
            }
        }
        if let Some((value, len)) = self.trie.longest_prefix(input) {
            let v = value as usize;
            if v < self.normalized.len() {
                let end = self.normalized[v..]
                    .iter()
                    .position(|&b| b == 0)
                    .map_or(self.normalized.len(), |p| v + p);
                return (&self.normalized[v..end], len);
            }
        }
        match utf8_char_len(input) {
            Some(n) => (&input[..n], n),
            // Malformed UTF-8: U+FFFD for one byte.
            None => ("\u{fffd}".as_bytes(), 1),
        }
    }

    /// Normalizes `input` into `out` (cleared first), as
    /// `Normalizer::Normalize`.
    pub fn normalize(&self, input: &str, out: &mut Vec<u8>) {
        out.clear();
        let mut input = input.as_bytes();
        if input.is_empty() {
            return;
        }
        if self.remove_extra_whitespaces {
            while !input.is_empty() {
                let (p, n) = self.prefix_fast(input);
                if p != b" " {
                    break;
                }
                input = &input[n..];
            }
        }
        if input.is_empty() {
            return;
        }
        let space: &[u8] = if self.escape_whitespaces {
            SPACE_SYMBOL.as_bytes()
        } else {
            b" "
        };
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        let mut is_prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut sp, n) = self.prefix_fast(input);
            while is_prev_space && sp.first() == Some(&b' ') {
                sp = &sp[1..];
            }
            if !sp.is_empty() {
                for &b in sp {
                    if self.escape_whitespaces && b == b' ' {
                        out.extend_from_slice(space);
                    } else {
                        out.push(b);
                    }
                }
                is_prev_space = sp.last() == Some(&b' ');
            }
            input = &input[n..];
            if !self.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
    }

    #[inline]
    fn prefix_fast<'a>(&'a self, input: &'a [u8]) -> (&'a [u8], usize) {
        let b = input[0];
        if b < 128 {
            if let Some(Some(rep)) = self.ascii.get(b as usize) {
                return (rep, 1);
            }
        }
        self.prefix(input)
    }
}

/// Length of the valid UTF-8 character at the start of `s`, if any.
pub(crate) fn utf8_char_len(s: &[u8]) -> Option<usize> {
    let b = *s.first()?;
    let n = match b {
        0x00..=0x7f => return Some(1),
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    if s.len() < n {
        return None;
    }
    std::str::from_utf8(&s[..n]).ok().map(|_| n)
}
