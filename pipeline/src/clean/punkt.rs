//! A port of NLTK's Punkt sentence tokenizer (decision procedure only), with
//! NLTK's pretrained English parameters.
//!
//! C4 counts the sentences of every kept line with
//! `nltk.data.load("tokenizers/punkt/english.pickle").tokenize(line)`,
//! so the page filter "at least 3 sentences" depends on Punkt's exact
//! decisions. This module reproduces `PunktSentenceTokenizer.span_tokenize`
//! of nltk 3.10.4 (the version the reference vectors were made with):
//!
//! 1. candidate ends are `.`, `?`, `!` followed by other punctuation or by
//!    whitespace and a token (`period_context_re`), each with the word before it;
//! 2. each candidate's short context is split into Punkt word tokens and
//!    annotated: first pass (sentence-end characters, ellipses, known
//!    abbreviations) then second pass (collocations, the orthographic
//!    heuristic, frequent sentence starters, initials and ordinals);
//! 3. the text is cut at the candidates whose context holds a sentence break
//!    before its last token, and closing quotes/brackets are realigned onto the
//!    sentence they end.
//!
//! The parameters (abbreviations, collocations, sentence starters and the
//! orthographic context of 20,366 word types) are NLTK's, extracted by
//! `scripts/gen_punkt_english.py` into `data/punkt_english.tsv`.
//!
//! Character classes follow what NLTK uses: its regexes run on the `regex`
//! module (`\s` = Unicode White_Space, `\w`/`\d` as in Unicode TR18, which are
//! also the Rust `regex` crate's), while `str.rstrip`/`str.strip` use Python's
//! `str.isspace` (White_Space plus U+001C..U+001F) and the previous-word search
//! uses `string.whitespace` (ASCII only).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use regex::Regex;

const ORTHO_BEG_UC: u32 = 1 << 1;
const ORTHO_MID_UC: u32 = 1 << 2;
const ORTHO_UNK_UC: u32 = 1 << 3;
const ORTHO_BEG_LC: u32 = 1 << 4;
const ORTHO_MID_LC: u32 = 1 << 5;
const ORTHO_UNK_LC: u32 = 1 << 6;
const ORTHO_UC: u32 = ORTHO_BEG_UC | ORTHO_MID_UC | ORTHO_UNK_UC;
const ORTHO_LC: u32 = ORTHO_BEG_LC | ORTHO_MID_LC | ORTHO_UNK_LC;

const NUMBER_TYPE: &str = "##number##";

/// Trained Punkt parameters (`nltk.tokenize.punkt.PunktParameters`).
#[derive(Debug, Default, Clone)]
pub struct PunktParameters {
    abbrev_types: HashSet<String>,
    collocations: HashSet<(String, String)>,
    sent_starters: HashSet<String>,
    ortho_context: HashMap<String, u32>,
}

impl PunktParameters {
    /// Parses the tab-separated format written by `scripts/gen_punkt_english.py`.
    pub fn parse_tsv(text: &str) -> Result<Self, String> {
        let mut p = PunktParameters::default();
        for (no, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let bad = || format!("punkt parameters line {}: malformed {line:?}", no + 1);
            match fields.as_slice() {
                ["abbrev", t] => {
                    p.abbrev_types.insert((*t).to_string());
                }
                ["colloc", a, b] => {
                    p.collocations.insert(((*a).to_string(), (*b).to_string()));
                }
                ["starter", t] => {
                    p.sent_starters.insert((*t).to_string());
                }
                ["ortho", t, f] => {
                    p.ortho_context
                        .insert((*t).to_string(), f.parse().map_err(|_| bad())?);
                }
                _ => return Err(bad()),
            }
        }
        Ok(p)
    }

    /// Sizes of (abbrev_types, collocations, sent_starters, ortho_context).
    pub fn sizes(&self) -> [usize; 4] {
        [
            self.abbrev_types.len(),
            self.collocations.len(),
            self.sent_starters.len(),
            self.ortho_context.len(),
        ]
    }

    fn ortho(&self, typ: &str) -> u32 {
        self.ortho_context.get(typ).copied().unwrap_or(0)
    }
}

/// Regex `\s` of the `regex` module: the Unicode White_Space property.
#[inline]
fn is_rx_space(c: char) -> bool {
    c.is_whitespace()
}

/// Python's `str.isspace` (used by `str.strip`, `str.split`, `str.rstrip`).
#[inline]
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Punkt's `_re_non_word_chars`: characters that cannot appear within words.
#[inline]
fn is_non_word(c: char) -> bool {
    matches!(
        c,
        ')' | '"'
            | ';'
            | '}'
            | ']'
            | '*'
            | ':'
            | '@'
            | '\''
            | '('
            | '{'
            | '['
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
            | '?'
            | '!'
    )
}

/// Complement of Punkt's `_re_word_start` (characters that cannot start a word).
#[inline]
fn is_not_word_start(c: char) -> bool {
    matches!(
        c,
        '(' | '"'
            | '`'
            | '{'
            | '['
            | ':'
            | ';'
            | '&'
            | '#'
            | '*'
            | '@'
            | ')'
            | '}'
            | ']'
            | '-'
            | ','
    )
}

/// Closing punctuation moved onto the previous sentence (`re_boundary_realignment`).
#[inline]
fn is_realign_char(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | ')'
            | ']'
            | '}'
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
    )
}

#[inline]
fn char_at(s: &str, i: usize) -> Option<char> {
    s[i..].chars().next()
}

/// Length in bytes of a `_re_multi_char_punct` match at `i`, if any:
/// `\-{2,}|\.{2,}|(?:\.\s){2,}\.`.
fn multi_char_punct_at(s: &str, i: usize) -> Option<usize> {
    let b = s.as_bytes();
    if i >= b.len() {
        return None;
    }
    let run = |ch: u8| b[i..].iter().take_while(|&&x| x == ch).count();
    if b[i] == b'-' {
        let n = run(b'-');
        return (n >= 2).then_some(n);
    }
    if b[i] != b'.' {
        return None;
    }
    let n = run(b'.');
    if n >= 2 {
        return Some(n);
    }
    // (?:\.\s){2,}\.  -- greedy pairs, then backtrack one pair if needed.
    let mut pos = i;
    let mut pair_ends = Vec::new();
    while pos < b.len() && b[pos] == b'.' {
        match char_at(s, pos + 1) {
            Some(c) if is_rx_space(c) => {
                pos += 1 + c.len_utf8();
                pair_ends.push(pos);
            }
            _ => break,
        }
    }
    let k = pair_ends.len();
    if k >= 2 && b.get(pos) == Some(&b'.') {
        return Some(pos + 1 - i);
    }
    if k >= 3 {
        // The '.' that started the k-th pair closes the match.
        return Some(pair_ends[k - 2] + 1 - i);
    }
    None
}

/// Punkt's word tokenizer (`PunktLanguageVars.word_tokenize`) over one line:
/// byte ranges of the tokens.
fn word_tokenize(s: &str, out: &mut Vec<(usize, usize)>) {
    let mut i = 0;
    while i < s.len() {
        let c = char_at(s, i).unwrap();
        if let Some(n) = multi_char_punct_at(s, i) {
            out.push((i, i + n));
            i += n;
            continue;
        }
        if is_rx_space(c) {
            i += c.len_utf8();
            continue;
        }
        if is_not_word_start(c) {
            out.push((i, i + c.len_utf8()));
            i += c.len_utf8();
            continue;
        }
        // (?=WordStart)\S+?(?=\s|$|NonWord|MultiChar|,(?=$|\s|NonWord|MultiChar))
        let mut q = i + c.len_utf8();
        while let Some(d) = char_at(s, q) {
            if is_rx_space(d) || is_non_word(d) || multi_char_punct_at(s, q).is_some() {
                break;
            }
            if d == ',' {
                let r = q + 1;
                match char_at(s, r) {
                    None => break,
                    Some(e) if is_rx_space(e) || is_non_word(e) => break,
                    Some(_) if multi_char_punct_at(s, r).is_some() => break,
                    _ => {}
                }
            }
            q += d.len_utf8();
        }
        out.push((i, q));
        i = q;
    }
}

struct Regexes {
    numeric: Regex,
    initial: Regex,
}

fn regexes() -> &'static Regexes {
    static R: OnceLock<Regexes> = OnceLock::new();
    R.get_or_init(|| Regexes {
        numeric: Regex::new(r"^-?[.,]?\d[\d,.\-]*\.?$").unwrap(),
        initial: Regex::new(r"^[^\W\d]\.$").unwrap(),
    })
}

/// A Punkt token with its annotations (`PunktToken`).
#[derive(Debug)]
struct Token<'a> {
    tok: &'a str,
    typ: std::borrow::Cow<'a, str>,
    sentbreak: bool,
    abbr: bool,
    ellipsis: bool,
}

impl<'a> Token<'a> {
    fn new(tok: &'a str) -> Self {
        use std::borrow::Cow;
        // `_RE_NUMERIC` needs a digit among the first three characters.
        let maybe_number = !tok.is_ascii() || tok.bytes().take(3).any(|b| b.is_ascii_digit());
        let lower: Cow<'a, str> = if tok.is_ascii() && !tok.bytes().any(|b| b.is_ascii_uppercase())
        {
            Cow::Borrowed(tok)
        } else {
            Cow::Owned(tok.to_lowercase())
        };
        let typ = if maybe_number && regexes().numeric.is_match(&lower) {
            Cow::Borrowed(NUMBER_TYPE)
        } else {
            lower
        };
        Token {
            tok,
            typ,
            sentbreak: false,
            abbr: false,
            ellipsis: false,
        }
    }
    fn period_final(&self) -> bool {
        self.tok.ends_with('.')
    }
    fn type_no_period(&self) -> &str {
        if self.typ.chars().count() > 1 && self.typ.ends_with('.') {
            &self.typ[..self.typ.len() - 1]
        } else {
            &self.typ
        }
    }
    fn type_no_sentperiod(&self) -> &str {
        if self.sentbreak {
            self.type_no_period()
        } else {
            &self.typ
        }
    }
    fn first_upper(&self) -> bool {
        self.tok.chars().next().is_some_and(char::is_uppercase)
    }
    fn first_lower(&self) -> bool {
        self.tok.chars().next().is_some_and(char::is_lowercase)
    }
    fn is_ellipsis(&self) -> bool {
        self.tok.len() >= 2 && self.tok.bytes().all(|b| b == b'.')
    }
    fn is_initial(&self) -> bool {
        regexes().initial.is_match(self.tok)
    }
}

enum Ortho {
    Starter,
    NotStarter,
    Unknown,
}

/// NLTK's `PunktSentenceTokenizer` with fixed parameters.
#[derive(Debug, Clone)]
pub struct SentenceTokenizer {
    params: PunktParameters,
}

static ENGLISH_TSV: &str = include_str!("../../data/punkt_english.tsv");

impl SentenceTokenizer {
    /// A tokenizer with the given parameters.
    pub fn new(params: PunktParameters) -> Self {
        SentenceTokenizer { params }
    }

    /// The tokenizer C4 uses: NLTK's pretrained English parameters.
    pub fn english() -> &'static SentenceTokenizer {
        static T: OnceLock<SentenceTokenizer> = OnceLock::new();
        T.get_or_init(|| {
            SentenceTokenizer::new(
                PunktParameters::parse_tsv(ENGLISH_TSV).expect("bundled Punkt parameters"),
            )
        })
    }

    /// The parameters in use.
    pub fn params(&self) -> &PunktParameters {
        &self.params
    }

    /// Number of sentences, i.e. `len(tokenizer.tokenize(text))`.
    pub fn count_sentences(&self, text: &str) -> usize {
        self.count_sentences_up_to(text, usize::MAX)
    }

    /// `min(count_sentences(text), limit)`, stopping as soon as `limit`
    /// sentences are certain.
    pub fn count_sentences_up_to(&self, text: &str, limit: usize) -> usize {
        let mut n = 0;
        self.for_each_span(text, |_| {
            n += 1;
            n < limit
        });
        n.min(limit)
    }

    /// The sentences of `text`, as `tokenize(text)` returns them.
    pub fn tokenize<'t>(&self, text: &'t str) -> Vec<&'t str> {
        self.span_tokenize(text)
            .into_iter()
            .map(|(a, b)| &text[a..b])
            .collect()
    }

    /// Byte spans of the sentences (`span_tokenize` with realigned boundaries).
    pub fn span_tokenize(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        self.for_each_span(text, |s| {
            out.push(s);
            true
        });
        out
    }

    /// Calls `f` with each sentence span in order until it returns false:
    /// `_slices_from_text` followed by `_realign_boundaries`, streamed.
    fn for_each_span(&self, text: &str, mut f: impl FnMut((usize, usize)) -> bool) {
        let mut realigner = Realigner::default();
        let mut last_break = 0usize;
        let mut toks = Vec::new();
        for m in potential_end_contexts(text) {
            if self.text_contains_sentbreak(&text[m.word_start..m.after_end], &mut toks) {
                if let Some(span) = realigner.push(text, (last_break, m.pos + 1)) {
                    if !f(span) {
                        return;
                    }
                }
                last_break = m.next_tok_start.unwrap_or(m.pos + 1);
            }
        }
        let end = text.trim_end_matches(is_py_space).len();
        if let Some(span) = realigner.push(text, (last_break, end)) {
            if !f(span) {
                return;
            }
        }
        if let Some(span) = realigner.finish() {
            f(span);
        }
    }

    fn text_contains_sentbreak(&self, text: &str, spans: &mut Vec<(usize, usize)>) -> bool {
        spans.clear();
        let mut base = 0;
        for line in text.split('\n') {
            if !line.trim_matches(is_py_space).is_empty() {
                let before = spans.len();
                word_tokenize(line, spans);
                for s in &mut spans[before..] {
                    s.0 += base;
                    s.1 += base;
                }
            }
            base += line.len() + 1;
        }
        let mut toks: Vec<Token> = spans
            .iter()
            .map(|&(a, b)| Token::new(&text[a..b]))
            .collect();
        for t in &mut toks {
            self.first_pass(t);
        }
        let n = toks.len();
        for i in 0..n {
            if i + 1 < n {
                let (head, tail) = toks.split_at_mut(i + 1);
                self.second_pass(&mut head[i], &tail[0]);
                if head[i].sentbreak {
                    return true;
                }
            }
        }
        false
    }

    fn first_pass(&self, t: &mut Token) {
        let tok = t.tok;
        if tok == "." || tok == "?" || tok == "!" {
            t.sentbreak = true;
        } else if t.is_ellipsis() {
            t.ellipsis = true;
        } else if t.period_final() && !tok.ends_with("..") {
            let stem = tok[..tok.len() - 1].to_lowercase();
            let last = stem.rsplit('-').next().unwrap_or("");
            if self.params.abbrev_types.contains(&stem) || self.params.abbrev_types.contains(last) {
                t.abbr = true;
            } else {
                t.sentbreak = true;
            }
        }
    }

    fn second_pass(&self, t1: &mut Token, t2: &Token) {
        if !t1.period_final() {
            return;
        }
        let typ = t1.type_no_period().to_string();
        let next_typ = t2.type_no_sentperiod();
        let is_initial = t1.is_initial();

        if self
            .params
            .collocations
            .contains(&(typ.clone(), next_typ.to_string()))
        {
            t1.sentbreak = false;
            t1.abbr = true;
            return;
        }
        if (t1.abbr || t1.ellipsis) && !is_initial {
            if let Ortho::Starter = self.ortho_heuristic(t2) {
                t1.sentbreak = true;
                return;
            }
            if t2.first_upper() && self.params.sent_starters.contains(next_typ) {
                t1.sentbreak = true;
                return;
            }
        }
        if is_initial || typ == NUMBER_TYPE {
            match self.ortho_heuristic(t2) {
                Ortho::NotStarter => {
                    t1.sentbreak = false;
                    t1.abbr = true;
                }
                Ortho::Unknown
                    if is_initial
                        && t2.first_upper()
                        && self.params.ortho(next_typ) & ORTHO_LC == 0 =>
                {
                    t1.sentbreak = false;
                    t1.abbr = true;
                }
                _ => {}
            }
        }
    }

    fn ortho_heuristic(&self, t: &Token) -> Ortho {
        if matches!(t.tok, ";" | ":" | "," | "." | "!" | "?") {
            return Ortho::NotStarter;
        }
        let ctx = self.params.ortho(t.type_no_sentperiod());
        if t.first_upper() && ctx & ORTHO_LC != 0 && ctx & ORTHO_MID_UC == 0 {
            return Ortho::Starter;
        }
        if t.first_lower() && (ctx & ORTHO_UC != 0 || ctx & ORTHO_BEG_LC == 0) {
            return Ortho::NotStarter;
        }
        Ortho::Unknown
    }
}

/// A candidate sentence end: `text[pos]` is `.`, `?` or `!`.
struct EndContext {
    pos: usize,
    word_start: usize,
    after_end: usize,
    next_tok_start: Option<usize>,
}

/// `period_context_re().finditer(text)`: the candidate at `i`, with the end of
/// its `after_tok` group and the start of `next_tok`.
fn period_context_at(text: &str, i: usize) -> Option<(usize, Option<usize>)> {
    let j = i + 1;
    let c = char_at(text, j)?;
    if is_non_word(c) {
        return Some((j + c.len_utf8(), None));
    }
    if !is_rx_space(c) {
        return None;
    }
    let rest = &text[j..];
    let ws = rest.len() - rest.trim_start_matches(is_rx_space).len();
    let k = j + ws;
    if k >= text.len() {
        return None;
    }
    let tok = &text[k..];
    let tl = tok.find(is_rx_space).unwrap_or(tok.len());
    Some((k + tl, Some(k)))
}

/// `_match_potential_end_contexts`: candidates whose previous-word slice does
/// not overlap the next candidate's.
fn potential_end_contexts(text: &str) -> Vec<EndContext> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut prev: Option<EndContext> = None;
    let mut prev_slice = (0usize, 0usize);
    for i in memchr::memchr3_iter(b'.', b'?', b'!', bytes) {
        let Some((after_end, next_tok_start)) = period_context_at(text, i) else {
            continue;
        };
        let before = &bytes[prev_slice.1..i];
        // string.whitespace is ASCII; index 0 counts as "not found" in NLTK.
        let idx = before
            .iter()
            .rposition(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
            .unwrap_or(0);
        let start = if idx != 0 {
            prev_slice.1 + idx + 1
        } else {
            prev_slice.0
        };
        let word_slice = (start, i);
        if let Some(p) = prev.take() {
            if prev_slice.1 <= word_slice.0 {
                out.push(p);
            }
        }
        prev = Some(EndContext {
            pos: i,
            word_start: word_slice.0,
            after_end,
            next_tok_start,
        });
        prev_slice = word_slice;
    }
    if let Some(p) = prev {
        out.push(p);
    }
    out
}

/// `re_boundary_realignment.match(s)`: end of the match within `s`, and the
/// length of the match with trailing whitespace removed.
fn boundary_realignment_match(s: &str) -> Option<(usize, usize)> {
    let mut q = 0;
    for c in s.chars() {
        if !is_realign_char(c) {
            return None;
        }
        q += c.len_utf8();
        // (?:\s+|(?=--)|$) after a lazy run of closing characters.
        let rest = &s[q..];
        let ws = rest.len() - rest.trim_start_matches(is_rx_space).len();
        if ws > 0 {
            return Some((q + ws, q));
        }
        if rest.starts_with("--") || rest.is_empty() || rest.starts_with('\n') {
            return Some((q, q));
        }
    }
    None
}

/// `_realign_boundaries` as a stream: each slice is decided when the next
/// one arrives.
#[derive(Default)]
struct Realigner {
    pending: Option<(usize, usize)>,
    realign: usize,
}

impl Realigner {
    /// Takes the next raw slice; returns the previous one's sentence, if any.
    fn push(&mut self, text: &str, s2: (usize, usize)) -> Option<(usize, usize)> {
        let prev = self.pending.replace(s2);
        let (s1a, s1b) = prev?;
        let s1a = s1a + self.realign;
        let (s2a, s2b) = s2;
        let s2_text = if s2a < s2b { &text[s2a..s2b] } else { "" };
        if let Some((m_end, m_trim)) = boundary_realignment_match(s2_text) {
            self.realign = m_end;
            Some((s1a, s2a + m_trim))
        } else {
            self.realign = 0;
            (s1a < s1b).then_some((s1a, s1b))
        }
    }

    /// The last slice's sentence, if not empty.
    fn finish(&mut self) -> Option<(usize, usize)> {
        let (a, b) = self.pending.take()?;
        let a = a + self.realign;
        (a < b).then_some((a, b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sents(t: &str) -> Vec<&str> {
        SentenceTokenizer::english().tokenize(t)
    }

    #[test]
    fn english_parameters_have_nltk_sizes() {
        // Sizes of NLTK's english.pickle (t5-reference README).
        assert_eq!(
            SentenceTokenizer::english().params().sizes(),
            [156, 37, 39, 20366]
        );
    }

    #[test]
    fn nltk_docstring_examples() {
        assert_eq!(
            sents("Very bad acting!!! I promise."),
            vec!["Very bad acting!!!", "I promise."]
        );
        assert_eq!(
            sents("(How does it deal with this parenthesis?)  \"It should be part of the previous sentence.\" \"(And the same with this one.)\" ('And this one!') \"('(And (this)) '?)\" [(and this. )]"),
            vec![
                "(How does it deal with this parenthesis?)",
                "\"It should be part of the previous sentence.\"",
                "\"(And the same with this one.)\"",
                "('And this one!')",
                "\"('(And (this)) '?)\"",
                "[(and this. )]",
            ]
        );
    }

    #[test]
    fn abbreviations_do_not_break() {
        assert_eq!(
            sents("Mr. Smith went to Washington. He arrived at 5 p.m. on Monday."),
            vec![
                "Mr. Smith went to Washington.",
                "He arrived at 5 p.m. on Monday."
            ]
        );
    }

    #[test]
    fn multi_char_punct() {
        let mut v = Vec::new();
        word_tokenize("a -- b ... c . . . d", &mut v);
        let s = "a -- b ... c . . . d";
        let toks: Vec<&str> = v.iter().map(|&(a, b)| &s[a..b]).collect();
        assert_eq!(toks, vec!["a", "--", "b", "...", "c", ". . .", "d"]);
    }
}
