//! WARC `response` records: the HTTP response taken apart (status, headers,
//! body), the body decoded to UTF-8 (declared or sniffed charset,
//! `encoding_rs`), parsed with html5ever (`scraper`) and turned into text,
//! one line per block, for the C4 rules that follow (they work per line).
//!
//! Two extractors:
//! - [`Extractor::Plain`]: every visible text, as a WET file has it
//!   (scripts, styles and other invisible elements left out);
//! - [`Extractor::Main`]: the main content, by trafilatura's algorithm
//!   (`main_content`): the article's paragraphs, headings, lists, tables and
//!   code, boilerplate (navigation, footers, cookie banners, share bars,
//!   related links, link-dense blocks) left out.
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
                let name = &b[at..end];
                let close = memchr::memchr(b'>', &b[end..]).map(|p| end + p);
                let self_closing = close.is_some_and(|c| c > 0 && b[c - 1] == b'/');
                let void = VOID.iter().any(|v| v.as_bytes().eq_ignore_ascii_case(name));
                if !void && !self_closing {
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
    let (mut chars, mut controls) = (0usize, 0usize);
    for c in html.chars() {
        chars += 1;
        controls += (c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{c}')) as usize;
    }
    if controls * 100 > chars.max(1) {
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

/// The text of an HTML document, one block per line.
pub fn html_to_text(html: &str, extractor: Extractor) -> String {
    use ego_tree::iter::Edge;
    use scraper::Node;
    let doc = scraper::Html::parse_document(html);
    if extractor == Extractor::Main {
        return super::main_content::main_text(&doc);
    }
    let mut lines: Vec<String> = Vec::new();
    let mut block = String::new();
    let mut skip_depth = 0usize; // > 0 inside an invisible element
    let end_block = |block: &mut String, lines: &mut Vec<String>| {
        let text = block.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() {
            lines.push(text);
        }
        block.clear();
    };
    for edge in doc.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(el) => {
                    let name = el.name();
                    if skip_depth > 0 || INVISIBLE.contains(&name) {
                        skip_depth += 1;
                        continue;
                    }
                    if BLOCKS.contains(&name) {
                        end_block(&mut block, &mut lines);
                    } else if matches!(name, "td" | "th") {
                        block.push(' ');
                    }
                }
                Node::Text(t) if skip_depth == 0 => block.push_str(t),
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(el) = node.value() {
                    if skip_depth > 0 {
                        skip_depth -= 1;
                    } else if BLOCKS.contains(&el.name()) {
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
          <article>
          <h1>The headline</h1>
          <p>First paragraph of the story, with <a href="/x">a link</a> inside it, long enough to be the story that the page is about.</p>
          <p>A second paragraph continues the story with more words, so that the article holds more than two hundred and fifty characters of text.</p>
          <ul><li>One point.</li><li>Another point.</li></ul>
          <table><tr><th>Year</th><th>Count</th></tr><tr><td>2020</td><td>7</td></tr></table>
          <pre>fn main() {
    println!("hi");
}</pre>
          <div class="share-buttons"><a href="/1">Share on X</a> <a href="/2">Share by mail</a></div>
          </article>
          <div class="related"><a href="/1">Link one</a> <a href="/2">Link two</a></div>
          <footer>Copyright 2020 Example</footer></body></html>"#;
        // what trafilatura 2.3.1 gives (its lines trimmed): the article's
        // blocks a line each, list items and table cells marked
        let main = html_to_text(html, Extractor::Main);
        assert_eq!(
            main,
            "The headline\n\
             First paragraph of the story, with a link inside it, long enough to be the story that the page is about.\n\
             A second paragraph continues the story with more words, so that the article holds more than two hundred and fifty characters of text.\n\
             - One point.\n\
             - Another point.\n\
             | Year | Count |\n\
             |---|---|\n\
             | 2020 | 7 |\n\
             fn main() {\n\
             println!(\"hi\");\n\
             }"
        );
        let plain = html_to_text(html, Extractor::Plain);
        assert!(plain.contains("Home About") && plain.contains("Copyright 2020 Example"));
        assert!(!plain.contains("var x"), "scripts are never text: {plain}");
        // a page too short for the main content: all of its body's text
        // runs, a line each (trafilatura's baseline)
        let short = "<html><body><p>Short page.</p><div>Menu</div></body></html>";
        assert_eq!(html_to_text(short, Extractor::Main), "Short page.\nMenu");
    }

    #[test]
    fn main_content_takes_bounded_time_on_large_flat_and_deep_pages() {
        // every operation on the tree is independent of the number of
        // siblings: pages of 100,000 blocks take well under a second in a
        // release build (a quadratic walk would take hours)
        let n = 100_000;
        let pages = [
            format!(
                "<html><body>{}</body></html>",
                "<p>Some words in a paragraph.</p>".repeat(n)
            ),
            format!(
                "<html><body><div class=content>{}</div></body></html>",
                "<span>w</span> ".repeat(n)
            ),
            format!(
                "<html><body><main><table>{}</table></main></body></html>",
                "<tr><td>a</td><td><a href=x>b</a></td></tr>".repeat(n / 4)
            ),
            format!(
                "<html><body>{}<p>deep</p>{}</body></html>",
                "<div><a href=x>l</a> ".repeat(MAX_NESTING - 10),
                "</div>".repeat(MAX_NESTING - 10)
            ),
            // nested lists and inline elements, walked recursively by
            // trafilatura: here within a worker thread's stack
            format!(
                "<html><body><article>{}item{}</article></body></html>",
                "<ul><li>x ".repeat(MAX_NESTING / 2 - 10),
                "</li></ul>".repeat(MAX_NESTING / 2 - 10)
            ),
            format!(
                "<html><body><article><p>{}deep{}</p></article></body></html>",
                "<del>x ".repeat(MAX_NESTING - 10),
                "</del>".repeat(MAX_NESTING - 10)
            ),
        ];
        for html in pages {
            let t = std::time::Instant::now();
            let worker = std::thread::Builder::new().stack_size(2 << 20);
            let page = html.clone();
            let text = worker
                .spawn(move || html_to_text(&page, Extractor::Main))
                .unwrap()
                .join()
                .unwrap();
            assert!(!text.is_empty());
            assert!(
                t.elapsed().as_secs() < 60,
                "{} bytes: {:?}",
                html.len(),
                t.elapsed()
            );
        }
        // the flat page keeps every paragraph
        let flat = html_to_text(
            &"<p>One more paragraph here.</p>".repeat(1000),
            Extractor::Main,
        );
        assert_eq!(flat.lines().count(), 1000);
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
