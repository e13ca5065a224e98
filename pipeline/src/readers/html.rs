//! WARC `response` records: the HTTP response taken apart (status, headers,
//! body), the body decoded to UTF-8 (declared or sniffed charset,
//! `encoding_rs`), parsed with html5ever (`scraper`) and turned into text,
//! one line per block, for the C4 rules that follow (they work per line).
//!
//! Two extractors:
//! - [`Extractor::Plain`]: every visible text, as a WET file has it
//!   (scripts, styles and other invisible elements left out);
//! - [`Extractor::Main`]: the main content, as trafilatura and resiliparse
//!   aim for: within `<main>` / `<article>` when the page has one;
//!   navigation, headers, footers, asides, forms and elements whose class or
//!   id names boilerplate (menus, cookie banners, share bars, comments,
//!   related links, ads) left out; blocks that are mostly link text dropped.
//!
//! Bounded work per page: bodies past [`MAX_BODY_BYTES`] are skipped and
//! the tree is walked without recursion (deeply nested HTML cannot
//! overflow the stack).

use serde::{Deserialize, Serialize};

/// Bodies longer than this are skipped (counted as `huge_html`).
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// Pages whose tags nest deeper than this are skipped (`deeply_nested`):
/// an HTML parser's tree building takes time quadratic in the depth
/// (100,000 nested `<div>`s: ~50 s), real pages stay far below.
pub const MAX_NESTING: usize = 2_000;

/// Elements without an end tag (not counted as nesting).
const VOID: [&str; 14] = [
    "br", "img", "meta", "link", "input", "hr", "wbr", "source", "area", "base", "col", "embed",
    "param", "track",
];

/// The deepest tag nesting of `html`, estimated from its tags alone (start
/// tags open, end tags and `/>` close, void elements do neither).
fn nesting(html: &str) -> usize {
    let b = html.as_bytes();
    let (mut depth, mut max) = (0usize, 0usize);
    let mut i = 0;
    while let Some(j) = memchr::memchr(b'<', &b[i..]) {
        let at = i + j + 1;
        i = at;
        match b.get(at) {
            Some(b'/') => depth = depth.saturating_sub(1),
            Some(c) if c.is_ascii_alphabetic() => {
                let end = b[at..]
                    .iter()
                    .position(|c| !c.is_ascii_alphanumeric())
                    .map_or(b.len(), |p| at + p);
                let name = html[at..end].to_ascii_lowercase();
                let close = memchr::memchr(b'>', &b[end..]).map(|p| end + p);
                let self_closing = close.is_some_and(|c| c > 0 && b[c - 1] == b'/');
                if !VOID.contains(&name.as_str()) && !self_closing {
                    depth += 1;
                    max = max.max(depth);
                }
            }
            _ => {}
        }
    }
    max
}

/// How the text of an HTML page is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Extractor {
    /// The main content (boilerplate removed).
    #[default]
    Main,
    /// All visible text, as WET has it.
    Plain,
}

impl std::str::FromStr for Extractor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "main" => Ok(Extractor::Main),
            "plain" => Ok(Extractor::Plain),
            _ => Err(format!("unknown extractor {s:?}: main or plain")),
        }
    }
}

/// Why a response record gave no page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Not an HTTP response (no status line / header end).
    BadHttp(String),
    /// A status other than 2xx.
    Status(u16),
    /// Not HTML: the content type.
    NotHtml(String),
    /// Over [`MAX_BODY_BYTES`].
    Huge(usize),
    /// Binary bytes in a body labelled HTML.
    Binary,
    /// Nested deeper than [`MAX_NESTING`].
    DeeplyNested(usize),
    /// No text left after extraction.
    NoText,
}

impl Skip {
    /// The counter name.
    pub fn kind(&self) -> &'static str {
        match self {
            Skip::BadHttp(_) => "bad_http",
            Skip::Status(_) => "http_status_not_2xx",
            Skip::NotHtml(_) => "not_html",
            Skip::Huge(_) => "huge_html",
            Skip::Binary => "binary_body",
            Skip::DeeplyNested(_) => "deeply_nested",
            Skip::NoText => "no_text",
        }
    }
}

/// What extraction made of one response.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The page text, one block per line.
    pub text: String,
    /// The charset the body was decoded from (lower case).
    pub charset: String,
    /// Whether the declared charset was unknown (decoded as UTF-8, lossy).
    pub unknown_charset: Option<String>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// An HTTP response's status, headers (names lower-cased) and body.
type HttpParts<'a> = (u16, Vec<(String, String)>, &'a [u8]);

/// Splits an HTTP response into its parts.
fn split_http(payload: &[u8]) -> Result<HttpParts<'_>, Skip> {
    let (head, body) = match find(payload, b"\r\n\r\n") {
        Some(i) => (&payload[..i], &payload[i + 4..]),
        None => match find(payload, b"\n\n") {
            Some(i) => (&payload[..i], &payload[i + 2..]),
            None => return Err(Skip::BadHttp("no end of the HTTP headers".into())),
        },
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/")
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| Skip::BadHttp(format!("status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, body))
}

fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("charset"))
            .then(|| v.trim().trim_matches(['"', '\'']).to_ascii_lowercase())
    })
}

/// `<meta charset=…>` or `<meta http-equiv=content-type content="…charset=…">`
/// in the first 1024 bytes (the HTML sniffing window).
fn sniff_meta_charset(body: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(&body[..body.len().min(1024)]).to_ascii_lowercase();
    let i = head.find("charset=")?;
    let rest = head[i + 8..].trim_start_matches(['"', '\'', ' ']);
    let end = rest
        .find(|c: char| {
            !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == ':' || c == '.')
        })
        .unwrap_or(rest.len());
    (end > 0).then(|| rest[..end].to_string())
}

/// The page text of an HTTP response payload (a WARC `response` record's
/// content), or why there is none.
pub fn extract_response(payload: &[u8], extractor: Extractor) -> Result<Extracted, Skip> {
    let (status, headers, body) = split_http(payload)?;
    if !(200..300).contains(&status) {
        return Err(Skip::Status(status));
    }
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !(mime.is_empty() || mime.contains("html")) {
        return Err(Skip::NotHtml(mime));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(Skip::Huge(body.len()));
    }
    let declared = charset_param(&content_type).or_else(|| sniff_meta_charset(body));
    let (encoding, unknown) = match &declared {
        Some(label) => match encoding_rs::Encoding::for_label(label.as_bytes()) {
            Some(e) => (e, None),
            None => (encoding_rs::UTF_8, Some(label.clone())),
        },
        None if std::str::from_utf8(body).is_ok() => (encoding_rs::UTF_8, None),
        // no declaration and not UTF-8: what browsers assume
        None => (encoding_rs::WINDOWS_1252, None),
    };
    let (html, _, _) = encoding.decode(body);
    let controls = html
        .chars()
        .filter(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
        .count();
    if controls * 100 > html.chars().count().max(1) {
        return Err(Skip::Binary);
    }
    let depth = nesting(&html);
    if depth > MAX_NESTING {
        return Err(Skip::DeeplyNested(depth));
    }
    let text = html_to_text(&html, extractor);
    if text.is_empty() {
        return Err(Skip::NoText);
    }
    Ok(Extracted {
        text,
        charset: encoding.name().to_ascii_lowercase(),
        unknown_charset: unknown,
    })
}

/// Elements whose content is never text.
const INVISIBLE: [&str; 12] = [
    "script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object", "canvas",
    "select", "textarea",
];

/// Elements that start and end a line.
const BLOCKS: [&str; 35] = [
    "p",
    "div",
    "br",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "tr",
    "section",
    "article",
    "header",
    "footer",
    "ul",
    "ol",
    "table",
    "blockquote",
    "pre",
    "dd",
    "dt",
    "dl",
    "form",
    "nav",
    "aside",
    "main",
    "hr",
    "title",
    "figcaption",
    "figure",
    "address",
    "details",
    "summary",
    "center",
];

/// Elements that are boilerplate for the main-content extractor.
const BOILERPLATE_TAGS: [&str; 7] = ["nav", "footer", "header", "aside", "form", "button", "menu"];

/// Class / id words that mark boilerplate for the main-content extractor.
const BOILERPLATE_WORDS: [&str; 24] = [
    "nav",
    "menu",
    "footer",
    "sidebar",
    "cookie",
    "consent",
    "banner",
    "breadcrumb",
    "share",
    "social",
    "comment",
    "related",
    "advert",
    "ads",
    "promo",
    "newsletter",
    "subscribe",
    "popup",
    "modal",
    "widget",
    "skip",
    "masthead",
    "pagination",
    "login",
];

fn is_boilerplate(el: &scraper::node::Element) -> bool {
    if BOILERPLATE_TAGS.contains(&el.name()) {
        return true;
    }
    if el.attr("hidden").is_some() || el.attr("aria-hidden") == Some("true") {
        return true;
    }
    if matches!(
        el.attr("role"),
        Some("navigation" | "banner" | "contentinfo" | "complementary")
    ) {
        return true;
    }
    ["class", "id"].iter().filter_map(|a| el.attr(a)).any(|v| {
        v.to_ascii_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| BOILERPLATE_WORDS.contains(&w))
    })
}

/// One block of text being collected: its text and how much of it is
/// link text.
#[derive(Default)]
struct Block {
    text: String,
    link_chars: usize,
}

/// The text of an HTML document, one block per line.
pub fn html_to_text(html: &str, extractor: Extractor) -> String {
    use ego_tree::iter::Edge;
    use scraper::Node;
    let doc = scraper::Html::parse_document(html);
    let main = extractor == Extractor::Main;
    // with the main-content extractor, the page's <main> or <article> (the
    // one with the most text) when there is one
    let root = if main {
        let sel = scraper::Selector::parse("main, article").expect("selector");
        doc.select(&sel)
            .map(|e| (e.text().map(str::len).sum::<usize>(), e))
            .max_by_key(|(len, _)| *len)
            .filter(|(len, _)| *len >= 200)
            .map_or_else(|| doc.tree.root(), |(_, e)| *e)
    } else {
        doc.tree.root()
    };
    let mut lines: Vec<String> = Vec::new();
    let mut block = Block::default();
    let mut skip_depth = 0usize; // > 0 inside an element left out
    let mut link_depth = 0usize;
    let end_block = |block: &mut Block, lines: &mut Vec<String>| {
        let text = block.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let words = text.chars().count();
        // main content: a short block that is mostly links is navigation
        let linky = main && block.link_chars * 10 > words * 8 && words < 200;
        if !text.is_empty() && !linky {
            lines.push(text);
        }
        *block = Block::default();
    };
    for edge in root.traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(el) => {
                    let name = el.name();
                    let leave_out = INVISIBLE.contains(&name) || (main && is_boilerplate(el));
                    if skip_depth > 0 || leave_out {
                        skip_depth += 1;
                        continue;
                    }
                    if BLOCKS.contains(&name) {
                        end_block(&mut block, &mut lines);
                    } else if matches!(name, "td" | "th") {
                        block.text.push(' ');
                    }
                    if name == "a" {
                        link_depth += 1;
                    }
                }
                Node::Text(t) if skip_depth == 0 => {
                    block.text.push_str(t);
                    if link_depth > 0 {
                        block.link_chars += t
                            .split_whitespace()
                            .map(|w| w.chars().count() + 1)
                            .sum::<usize>();
                    }
                }
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(el) = node.value() {
                    if skip_depth > 0 {
                        skip_depth -= 1;
                        continue;
                    }
                    let name = el.name();
                    if name == "a" {
                        link_depth = link_depth.saturating_sub(1);
                    }
                    if BLOCKS.contains(&name) {
                        end_block(&mut block, &mut lines);
                    }
                }
            }
        }
    }
    end_block(&mut block, &mut lines);
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(content_type: &str, body: &[u8]) -> Vec<u8> {
        let mut v = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\r\n").into_bytes();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn main_content_leaves_boilerplate_out_and_plain_keeps_it() {
        let html = r#"<html><head><title>T</title><script>var x = 1;</script></head><body>
          <nav><a href="/">Home</a> <a href="/a">About</a></nav>
          <div class="cookie-banner">We use cookies. Accept?</div>
          <h1>The headline</h1>
          <p>First paragraph of the story, with <a href="/x">a link</a> inside it.</p>
          <ul><li>One point.</li><li>Another point.</li></ul>
          <div class="links"><a href="/1">Link one</a> <a href="/2">Link two</a></div>
          <footer>Copyright 2020 Example</footer></body></html>"#;
        let main = html_to_text(html, Extractor::Main);
        assert_eq!(
            main,
            "The headline\nFirst paragraph of the story, with a link inside it.\nOne point.\nAnother point."
        );
        let plain = html_to_text(html, Extractor::Plain);
        assert!(plain.contains("Home About") && plain.contains("Copyright 2020 Example"));
        assert!(!plain.contains("var x"), "scripts are never text: {plain}");
    }

    #[test]
    fn charsets_statuses_and_bad_bodies() {
        // declared latin-1 (windows-1252 by WHATWG)
        let r = extract_response(
            &response("text/html; charset=ISO-8859-1", b"<p>caf\xe9 cr\xe8me</p>"),
            Extractor::Plain,
        )
        .unwrap();
        assert_eq!(
            (r.text.as_str(), r.charset.as_str()),
            ("café crème", "windows-1252")
        );
        // sniffed from <meta>
        let r = extract_response(
            &response(
                "text/html",
                b"<meta charset=\"shift_jis\"><p>\x93\xfa\x96\x7b</p>",
            ),
            Extractor::Plain,
        )
        .unwrap();
        assert_eq!((r.text.as_str(), r.charset.as_str()), ("日本", "shift_jis"));
        // unknown label: UTF-8, reported
        let r = extract_response(
            &response("text/html; charset=x-klingon", b"<p>ok</p>"),
            Extractor::Plain,
        )
        .unwrap();
        assert_eq!(r.unknown_charset.as_deref(), Some("x-klingon"));
        assert_eq!(
            extract_response(&response("image/png", b"\x89PNG"), Extractor::Main).unwrap_err(),
            Skip::NotHtml("image/png".into())
        );
        assert_eq!(
            extract_response(
                &response("text/html", b"\x00\x01\x02\x03<p>x</p>\x00\x00\x00"),
                Extractor::Main
            )
            .unwrap_err(),
            Skip::Binary
        );
        let moved = b"HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\n";
        assert_eq!(
            extract_response(moved, Extractor::Main).unwrap_err(),
            Skip::Status(301)
        );
        assert!(matches!(
            extract_response(b"garbage", Extractor::Main),
            Err(Skip::BadHttp(_))
        ));
        assert_eq!(
            extract_response(&response("text/html", b"<div></div>"), Extractor::Main).unwrap_err(),
            Skip::NoText
        );
    }

    #[test]
    fn deep_nesting_is_bounded() {
        // walked without recursion up to the limit ...
        let html = "<div>".repeat(MAX_NESTING)
            + "deep text<br/><img src=x>"
            + &"</div>".repeat(MAX_NESTING);
        let r =
            extract_response(&response("text/html", html.as_bytes()), Extractor::Plain).unwrap();
        assert_eq!(r.text, "deep text");
        // ... and skipped past it, before the parser sees it
        let deep = "<div>".repeat(100_000) + "x";
        let t = std::time::Instant::now();
        assert_eq!(
            extract_response(&response("text/html", deep.as_bytes()), Extractor::Plain)
                .unwrap_err(),
            Skip::DeeplyNested(100_000)
        );
        assert!(t.elapsed().as_secs() < 5);
    }
}
