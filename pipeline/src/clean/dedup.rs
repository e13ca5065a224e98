//! URL normalization, URL de-duplication, global exact line de-duplication and
//! the URL-hash split of tfds C4 (`c4_utils.dedupe_urls`, `remove_duplicate_text` and `c4.py`'s
//! md5(url) split).
//!
//! URL hashes are md5 digests read as big-endian 128-bit integers, so
//! comparing two of them orders them exactly as tfds orders the hex strings
//! (`Top.PerKey(1, key=_hash_text, reverse=True)` keeps the smallest). Line
//! keys are only compared for equality, so they use the faster XXH3-128.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use md5::{Digest, Md5};
use regex::Regex;

use super::rules::{py_lower, py_strip};

/// A hasher for keys that are md5 digests already: it folds the 128 bits
/// into 64 instead of hashing them again.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for u128 keys; a simple FNV-1a keeps it correct for others.
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    fn write_u128(&mut self, i: u128) {
        self.0 = (i as u64) ^ ((i >> 64) as u64);
    }
}

type DigestMap<V> = HashMap<u128, V, BuildHasherDefault<DigestHasher>>;
type DigestSet = HashSet<u128, BuildHasherDefault<DigestHasher>>;

/// `md5(s.encode("utf-8"))` as a big-endian integer.
#[inline]
pub fn md5_u128(s: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(s.as_bytes()).into())
}

/// The key of a line in line de-duplication: a 128-bit hash of
/// `line.strip().lower()`. tfds keys lines by `md5` of that text; the key is
/// only compared for equality (the page that keeps a line is chosen by
/// `md5(url)`), so any 128-bit hash gives the same result: XXH3-128 is ~20×
/// faster than md5.
///
/// The lower-cased text is built in a reused buffer, except for lines with a
/// capital sigma (whose lower case depends on the context).
pub fn line_key(line: &str) -> u128 {
    use std::cell::RefCell;
    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let s = py_strip(line);
    if s.contains('\u{3a3}') {
        return xxh3_u128(py_lower(s).as_bytes());
    }
    if s.is_ascii() {
        return BUF.with(|b| {
            let mut b = b.borrow_mut();
            b.clear();
            b.extend(s.bytes().map(|c| c.to_ascii_lowercase()));
            xxh3_u128(&b)
        });
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        let mut tmp = [0u8; 4];
        for c in s.chars() {
            if c.is_ascii() {
                b.push((c as u8).to_ascii_lowercase());
            } else if lowercase_is_itself(c) {
                b.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            } else {
                for l in c.to_lowercase() {
                    b.extend_from_slice(l.encode_utf8(&mut tmp).as_bytes());
                }
            }
        }
        xxh3_u128(&b)
    })
}

/// Blocks whose characters all lower-case to themselves (checked by a test
/// over every character), so crawl text's curly quotes, dashes, Latin-1
/// symbols and CJK skip the case table.
#[inline]
fn lowercase_is_itself(c: char) -> bool {
    matches!(c as u32, 0x80..=0xBF | 0x2000..=0x206F | 0x3000..=0x9FFF | 0xAC00..=0xD7A3)
}

#[inline]
fn xxh3_u128(b: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot(b)
}

/// The keys of the `\n`-separated lines of a page, in order.
pub fn line_keys(text: &str) -> Vec<u128> {
    text.split('\n').map(line_key).collect()
}

/// tfds `normalize_url`: drop `http(s)://(www.)`, `?utm_…|?ref…|?feed…` tails
/// and trailing slashes.
pub fn normalize_url(url: &str) -> String {
    static RES: OnceLock<(Regex, Regex)> = OnceLock::new();
    let (scheme, query) = RES.get_or_init(|| {
        (
            Regex::new(r"https?://(www\.)?").unwrap(),
            // Python's `.` does not match "\n"; (?s) is not set there either.
            Regex::new(r"\?(utm_|ref|feed).*").unwrap(),
        )
    });
    let u = scheme.replace_all(url, "");
    let u = query.replace_all(&u, "");
    u.trim_end_matches('/').to_string()
}

/// `int(md5(normalized_url)) % modulus == 0`: the page goes to validation.
pub fn is_validation(normalized_url: &str, modulus: u64) -> bool {
    modulus > 0 && md5_u128(normalized_url).is_multiple_of(modulus as u128)
}

/// Keeps one page per normalized URL: the newest timestamp (string order, as
/// tfds `select_newest_page`), ties to the first in input order.
///
/// Memory grows with the number of distinct URLs (16-byte hash, timestamp
/// and a 16-byte position each).
#[derive(Debug, Default)]
pub struct UrlDedup {
    best: DigestMap<(String, (u64, u64))>,
}

impl UrlDedup {
    /// Offers a page at input position `pos` (file index, record index).
    pub fn offer(&mut self, normalized_url: &str, timestamp: &str, pos: (u64, u64)) {
        self.offer_hashed(md5_u128(normalized_url), timestamp, pos);
    }

    /// Every URL's kept page so far: (md5 of the normalized URL, timestamp,
    /// position), in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (u128, &str, (u64, u64))> {
        self.best
            .iter()
            .map(|(h, (ts, pos))| (*h, ts.as_str(), *pos))
    }

    /// [`UrlDedup::offer`] with the URL's md5 already taken.
    pub fn offer_hashed(&mut self, h: u128, timestamp: &str, pos: (u64, u64)) {
        match self.best.get_mut(&h) {
            None => {
                self.best.insert(h, (timestamp.to_string(), pos));
            }
            Some(cur) => {
                if timestamp > cur.0.as_str() || (timestamp == cur.0 && pos < cur.1) {
                    *cur = (timestamp.to_string(), pos);
                }
            }
        }
    }

    /// Folds another table in.
    pub fn merge(&mut self, other: UrlDedup) {
        for (h, (ts, pos)) in other.best {
            self.offer_hashed(h, &ts, pos);
        }
    }

    /// Whether the page at `pos` is the one kept for its URL.
    pub fn is_winner(&self, normalized_url: &str, pos: (u64, u64)) -> bool {
        self.best
            .get(&md5_u128(normalized_url))
            .is_none_or(|(_, p)| *p == pos)
    }

    /// Number of distinct URLs.
    pub fn len(&self) -> usize {
        self.best.len()
    }

    /// Whether no URL was offered.
    pub fn is_empty(&self) -> bool {
        self.best.is_empty()
    }
}

/// For every line key, the page (by `md5(url)`) that keeps it: the smallest.
///
/// Memory grows with the number of distinct lines in the corpus (32 bytes
/// each plus the hash table's overhead).
#[derive(Debug, Default)]
pub struct LineOwners {
    owner: DigestMap<u128>,
}

impl LineOwners {
    /// Offers every line of a page whose URL hashes to `url_hash`.
    pub fn offer_page(&mut self, text: &str, url_hash: u128) {
        self.offer_keys(&line_keys(text), url_hash);
    }

    /// Like [`LineOwners::offer_page`] with the page's [`line_keys`].
    pub fn offer_keys(&mut self, keys: &[u128], url_hash: u128) {
        for &k in keys {
            self.owner
                .entry(k)
                .and_modify(|o| *o = (*o).min(url_hash))
                .or_insert(url_hash);
        }
    }

    /// Folds another table in.
    pub fn merge(&mut self, other: LineOwners) {
        for (k, u) in other.owner {
            self.owner
                .entry(k)
                .and_modify(|o| *o = (*o).min(u))
                .or_insert(u);
        }
    }

    /// tfds `_remove_lines_from_text`: keeps the lines this page owns, once.
    /// Returns the new text and (lines kept, global duplicates, local duplicates).
    pub fn remove_lines(&self, text: &str, url_hash: u128) -> (String, [u64; 3]) {
        self.remove_lines_keyed(text.to_string(), &line_keys(text), url_hash)
    }

    /// Like [`LineOwners::remove_lines`] with the page's [`line_keys`]; a
    /// page that keeps every line is returned as it is (no copy).
    pub fn remove_lines_keyed(
        &self,
        text: String,
        keys: &[u128],
        url_hash: u128,
    ) -> (String, [u64; 3]) {
        remove_unowned_lines(text, keys, |_, k| self.owner.get(&k) == Some(&url_hash))
    }

    /// Number of distinct lines.
    pub fn len(&self) -> usize {
        self.owner.len()
    }

    /// Whether no line was offered.
    pub fn is_empty(&self) -> bool {
        self.owner.is_empty()
    }
}

/// tfds `remove_duplicate_text` on one page, given which of its lines
/// (`owned(index, key)`) are owned by its URL: lines owned by another page
/// and repeats within the page are dropped. Returns the text and the lines
/// [kept, dropped as global duplicates, dropped as local repeats]; a page
/// that keeps every line is returned as it is (no copy).
pub(crate) fn remove_unowned_lines(
    text: String,
    keys: &[u128],
    owned: impl Fn(usize, u128) -> bool,
) -> (String, [u64; 3]) {
    let mut seen = DigestSet::default();
    seen.reserve(keys.len());
    let mut counts = [0u64; 3];
    let keep: Vec<bool> = keys
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let slot = if !owned(i, k) {
                1
            } else if !seen.insert(k) {
                2
            } else {
                0
            };
            counts[slot] += 1;
            slot == 0
        })
        .collect();
    debug_assert_eq!(text.split('\n').count(), keys.len());
    if counts[0] as usize == keys.len() {
        return (text, counts);
    }
    let mut out = String::with_capacity(text.len());
    let mut first = true;
    for (line, &k) in text.split('\n').zip(&keep) {
        if k {
            if !first {
                out.push('\n');
            }
            first = false;
            out.push_str(line);
        }
    }
    (out, counts)
}

/// A set of small integers, one bit each (grows to the largest).
#[derive(Debug, Default)]
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn insert(&mut self, i: u64) {
        let w = (i / 64) as usize;
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (i % 64);
    }

    pub(crate) fn contains(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }
}

/// Which lines of a page its URL owns, for [`remove_unowned_lines`].
pub(crate) enum LineVerdicts<'a> {
    /// Looked up in the table of every line's owner.
    Owners(&'a LineOwners),
    /// Decided before: one bit per line of the pages in order (a page's
    /// lines start at the index the finisher is given).
    Owned(&'a Bits),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caseless_blocks_lower_case_to_themselves() {
        let mut checked = 0;
        for c in (0x80..=0xD7A3u32).filter_map(char::from_u32) {
            if lowercase_is_itself(c) {
                assert!(
                    c.to_lowercase().eq(std::iter::once(c)),
                    "U+{:04X} lower-cases to something else",
                    c as u32
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 0x40 + 0x70 + 0x7000 + 0x2BA4);
        // the fast path gives the key of the fully lower-cased line
        let line = "“Ça Va” – ÀB… 東京 Σ";
        assert_eq!(line_key(line), line_key(&line.to_lowercase()));
        let line = "“Ça Va” – ÀB… 東京";
        assert_eq!(line_key(line), xxh3_u128(line.to_lowercase().as_bytes()));
    }

    #[test]
    fn normalize_url_like_tfds() {
        assert_eq!(
            normalize_url("https://www.example.com/a/?utm_source=x"),
            "example.com/a"
        );
        assert_eq!(normalize_url("http://example.com/a?ref=1"), "example.com/a");
        assert_eq!(
            normalize_url("http://example.com/a?id=1"),
            "example.com/a?id=1"
        );
        assert_eq!(normalize_url("http://fake.com/url/1/"), "fake.com/url/1");
    }

    #[test]
    fn newest_url_wins_then_first() {
        let mut d = UrlDedup::default();
        d.offer("a", "2019-01-01", (0, 0));
        d.offer("a", "2019-02-01", (0, 1));
        d.offer("a", "2019-02-01", (1, 0));
        assert!(d.is_winner("a", (0, 1)));
        assert!(!d.is_winner("a", (0, 0)));
        assert!(!d.is_winner("a", (1, 0)));
    }

    #[test]
    fn line_key_hashes_python_lower_strip() {
        for l in [
            "  Hello World. ",
            "ÀÉÎ Straße İstanbul K",
            "ΣΑΣ ΟΔΟΣ.",
            "",
            "x".repeat(2000).as_str(),
        ] {
            assert_eq!(
                line_key(l),
                xxh3_u128(py_strip(l).to_lowercase().as_bytes()),
                "{l}"
            );
        }
    }

    #[test]
    fn md5_is_big_endian_hex_order() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(md5_u128(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }
}
