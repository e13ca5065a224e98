//! The main-content extractor behind `--extractor main`: trafilatura's
//! algorithm (version 2.3.1, `trafilatura.extract` with its default
//! settings, text output), re-implemented in Rust on a small element tree
//! with lxml's text/tail model, so its rules carry over as they are:
//!
//! 1. `htmlprocessing.tree_cleaning`: invisible and interactive elements
//!    deleted, inline wrappers stripped (their text kept), empty blocks
//!    pruned; `htmlprocessing.convert_tags`: links inside blocks, lists,
//!    headings, line breaks, quotes and code blocks renamed to trafilatura's
//!    vocabulary (`ref`, `list`/`item`, `head`, `lb`, `quote`, `code`);
//! 2. `main_extractor.extract_content`: the first container that
//!    `xpaths.BODY_XPATH` names (article bodies, `<article>`, story and
//!    content containers, `<main>`), pruned of boilerplate
//!    (`xpaths.OVERALL_DISCARD_XPATH`: navigation, share bars, footers,
//!    cookie banners, bylines, related links, hidden elements) and of
//!    link-dense blocks (`htmlprocessing.delete_by_link_density`); of it
//!    only paragraphs, headings, lists, quotes, code and tables are kept
//!    (and `div`s when the page has little paragraph text); pages where
//!    that gives less than 250 characters get their wild paragraphs
//!    recovered from the whole page (`main_extractor.recover_wild_text`);
//! 3. `xml.xmltotxt`: one block per line, `- ` before list items and `| `
//!    between table cells, line breaks and code kept;
//! 4. `core.trafilatura_sequence`'s rescue of short results: when the
//!    above gives under 250 characters, `baseline.baseline` (the page's
//!    articles, else its paragraphs, else every text run of its body, a
//!    line each) if that finds more.
//!
//! Left out: trafilatura's comparison with readability and jusText (its
//! `fast=True` mode gives the same text on the median page), the comment
//! section it appends, the baseline's embedded-JSON sources and the recall
//! retry; these are where the pages that differ from trafilatura differ.
//!
//! Work per page is bounded by the tree size (the caller caps body size and
//! nesting; no step is quadratic in the number of siblings). The tree walks
//! are iterative; the handlers of nested lists and inline elements recurse
//! as deep as those nest, within the caller's nesting cap (tested in a
//! thread with a 2 MB stack).

use regex::Regex;
use std::collections::HashSet;
use std::sync::LazyLock;

type Id = usize;

/// The tag of an element already taken into the output.
const DONE: &str = "done";

#[derive(Clone, Default)]
struct El {
    tag: String,
    attrs: Vec<(String, String)>,
    text: String,
    tail: String,
    parent: Option<Id>,
    first: Option<Id>,
    last: Option<Id>,
    prev: Option<Id>,
    next: Option<Id>,
}

/// Elements in an arena, with lxml's text/tail model: an element's `text`
/// comes before its first child, its `tail` after its end tag. Siblings
/// are linked, so moving, deleting and unwrapping an element take time
/// independent of how many siblings it has.
struct Tree {
    n: Vec<El>,
}

fn trim(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn has_chars(s: &str) -> bool {
    !s.trim().is_empty()
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

impl Tree {
    /// Adds a parsed document to the arena; its `<html>` element's id.
    /// Elements get ids in document order, so a document added twice has
    /// its elements at the same offset from each root.
    fn add_html(&mut self, doc: &scraper::Html) -> Id {
        use ego_tree::iter::Edge;
        use scraper::Node;
        let t = self;
        let root = t.new_el("html");
        let mut stack: Vec<Id> = Vec::new();
        for edge in doc.tree.root().traverse() {
            match edge {
                Edge::Open(node) => match node.value() {
                    Node::Element(e) => {
                        let attrs = e
                            .attrs()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        if stack.is_empty() && e.name() == "html" {
                            t.n[root].attrs = attrs;
                            stack.push(root);
                            continue;
                        }
                        let id = t.new_el(e.name());
                        t.n[id].attrs = attrs;
                        t.append(*stack.last().unwrap_or(&root), id);
                        stack.push(id);
                    }
                    Node::Text(s) => {
                        let parent = *stack.last().unwrap_or(&root);
                        match t.n[parent].last {
                            Some(last) => t.n[last].tail.push_str(s),
                            None => t.n[parent].text.push_str(s),
                        }
                    }
                    _ => {}
                },
                Edge::Close(node) => {
                    if let Node::Element(_) = node.value() {
                        stack.pop();
                    }
                }
            }
        }
        root
    }

    fn new_el(&mut self, tag: &str) -> Id {
        self.n.push(El {
            tag: tag.to_string(),
            ..Default::default()
        });
        self.n.len() - 1
    }

    fn tag(&self, id: Id) -> &str {
        &self.n[id].tag
    }

    fn attr(&self, id: Id, name: &str) -> Option<&str> {
        self.n[id]
            .attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// XPath's `@a|@b` as a string: the one of the two attributes that
    /// comes first in the source.
    fn first_attr(&self, id: Id, a: &str, b: &str) -> &str {
        self.n[id]
            .attrs
            .iter()
            .find(|(k, _)| k == a || k == b)
            .map_or("", |(_, v)| v.as_str())
    }

    fn a(&self, id: Id, name: &str) -> &str {
        self.attr(id, name).unwrap_or("")
    }

    fn kids(&self, id: Id) -> Vec<Id> {
        std::iter::successors(self.n[id].first, |&c| self.n[c].next).collect()
    }

    fn childless(&self, id: Id) -> bool {
        self.n[id].first.is_none()
    }

    /// The element and its descendants, in document order.
    fn iter(&self, id: Id) -> Vec<Id> {
        let mut out = vec![id];
        out.extend(self.descendants(id));
        out
    }

    fn descendants(&self, id: Id) -> Vec<Id> {
        let mut out = Vec::new();
        let mut x = match self.n[id].first {
            Some(f) => f,
            None => return out,
        };
        loop {
            out.push(x);
            if let Some(f) = self.n[x].first {
                x = f;
                continue;
            }
            loop {
                if let Some(nx) = self.n[x].next {
                    x = nx;
                    break;
                }
                match self.n[x].parent {
                    Some(p) if p != id => x = p,
                    _ => return out,
                }
            }
        }
    }

    fn ancestors(&self, id: Id) -> impl Iterator<Item = Id> + '_ {
        std::iter::successors(self.n[id].parent, |&p| self.n[p].parent)
    }

    fn top(&self, id: Id) -> Id {
        self.ancestors(id).last().unwrap_or(id)
    }

    /// All text inside the element (lxml's `text_content`, `itertext`).
    fn text_content(&self, id: Id) -> String {
        let mut out = String::new();
        self.each_text(id, |s| out.push_str(s));
        out
    }

    /// The length of the element's text with its whitespace collapsed and
    /// trimmed (`len(trim(text_content()))`), without building it.
    fn collapsed_len(&self, id: Id) -> usize {
        let (mut n, mut words, mut in_word) = (0usize, 0usize, false);
        self.each_text(id, |s| {
            for c in s.chars() {
                if c.is_whitespace() {
                    in_word = false;
                } else {
                    words += !in_word as usize;
                    in_word = true;
                    n += 1;
                }
            }
        });
        n + words.saturating_sub(1)
    }

    /// The element's text pieces in order: texts, and the tails of its
    /// descendants.
    fn each_text<'a>(&'a self, id: Id, mut f: impl FnMut(&'a str)) {
        f(&self.n[id].text);
        let mut stack: Vec<(Id, bool)> = self
            .kids(id)
            .into_iter()
            .rev()
            .map(|c| (c, false))
            .collect();
        while let Some((x, tail)) = stack.pop() {
            if tail {
                f(&self.n[x].tail);
                continue;
            }
            f(&self.n[x].text);
            stack.push((x, true));
            let mut c = self.n[x].last;
            while let Some(k) = c {
                stack.push((k, false));
                c = self.n[k].prev;
            }
        }
    }

    fn next(&self, id: Id) -> Option<Id> {
        self.n[id].next
    }

    fn previous(&self, id: Id) -> Option<Id> {
        self.n[id].prev
    }

    /// Takes the element out of its parent's children (text untouched).
    fn unlink(&mut self, id: Id) {
        let El {
            parent, prev, next, ..
        } = self.n[id];
        let Some(p) = parent else { return };
        match prev {
            Some(pr) => self.n[pr].next = next,
            None => self.n[p].first = next,
        }
        match next {
            Some(nx) => self.n[nx].prev = prev,
            None => self.n[p].last = prev,
        }
        let e = &mut self.n[id];
        (e.parent, e.prev, e.next) = (None, None, None);
    }

    /// Links `child` into `parent` before `before` (at the end for None).
    fn link(&mut self, parent: Id, child: Id, before: Option<Id>) {
        let prev = match before {
            Some(b) => self.n[b].prev,
            None => self.n[parent].last,
        };
        let e = &mut self.n[child];
        (e.parent, e.prev, e.next) = (Some(parent), prev, before);
        match prev {
            Some(pr) => self.n[pr].next = Some(child),
            None => self.n[parent].first = Some(child),
        }
        match before {
            Some(b) => self.n[b].prev = Some(child),
            None => self.n[parent].last = Some(child),
        }
    }

    /// Moves `child` (with its tail) to the end of `parent`.
    fn append(&mut self, parent: Id, child: Id) {
        self.unlink(child);
        self.link(parent, child, None);
    }

    /// Appends text where the element ends up after its removal: the
    /// previous sibling's tail, or the parent's text.
    fn put_text_before(&mut self, id: Id, text: &str) {
        if text.is_empty() {
            return;
        }
        match (self.n[id].prev, self.n[id].parent) {
            (Some(prev), _) => self.n[prev].tail.push_str(text),
            (None, Some(p)) => self.n[p].text.push_str(text),
            (None, None) => {}
        }
    }

    /// Removes the element and its content (`xml.delete_element`), its
    /// tail kept in place when asked.
    fn delete(&mut self, id: Id, keep_tail: bool) {
        if self.n[id].parent.is_none() {
            return;
        }
        if keep_tail {
            let tail = std::mem::take(&mut self.n[id].tail);
            self.put_text_before(id, &tail);
        }
        self.unlink(id);
    }

    /// Removes the element but keeps its text and children in place
    /// (lxml's `strip_tags`).
    fn strip(&mut self, id: Id) {
        let Some(p) = self.n[id].parent else { return };
        let text = std::mem::take(&mut self.n[id].text);
        self.put_text_before(id, &text);
        for k in self.kids(id) {
            self.unlink(k);
            self.link(p, k, Some(id));
        }
        let tail = std::mem::take(&mut self.n[id].tail);
        self.put_text_before(id, &tail);
        self.unlink(id);
    }

    fn strip_tags(&mut self, root: Id, strip: impl Fn(&str) -> bool) {
        for id in self.descendants(root) {
            if strip(self.tag(id)) {
                self.strip(id);
            }
        }
    }

    /// A detached copy of the element and its descendants.
    fn deep_copy(&mut self, id: Id) -> Id {
        let mut map = std::collections::HashMap::new();
        for x in self.iter(id) {
            let e = &self.n[x];
            let copy = El {
                tag: e.tag.clone(),
                attrs: e.attrs.clone(),
                text: e.text.clone(),
                tail: e.tail.clone(),
                ..Default::default()
            };
            self.n.push(copy);
            let c = self.n.len() - 1;
            map.insert(x, c);
            if x != id {
                let parent = map[&self.n[x].parent.expect("a descendant has a parent")];
                self.link(parent, c, None);
            }
        }
        map[&id]
    }

    /// `" ".join(itertext()).strip()`'s length: text pieces joined by
    /// spaces.
    fn joined_len(&self, id: Id) -> usize {
        let mut pieces: Vec<&str> = Vec::new();
        self.each_text(id, |p| {
            if !p.is_empty() {
                pieces.push(p)
            }
        });
        chars(pieces.join(" ").trim())
    }

    /// The text with block boundaries spaced and whitespace collapsed
    /// (`baseline._spaced_text`).
    fn spaced_text(&self, id: Id) -> String {
        let mut out = String::new();
        let mut stack = vec![(id, false)];
        while let Some((x, tail)) = stack.pop() {
            let block = BASELINE_BLOCKS.contains(&self.tag(x));
            if block {
                out.push(' ');
            }
            if tail {
                out.push_str(&self.n[x].tail);
                continue;
            }
            out.push_str(&self.n[x].text);
            for c in self.kids(x).into_iter().rev() {
                stack.push((c, true));
                stack.push((c, false));
            }
        }
        trim(&out)
    }

    fn is_text_element(&self, id: Id) -> bool {
        has_chars(&self.text_content(id))
    }
}

/// `settings.MANUALLY_CLEANED` (less `form`, handled on its own): deleted
/// with their content.
const CLEANED: [&str; 50] = [
    "aside",
    "embed",
    "fencedframe",
    "footer",
    "head",
    "iframe",
    "menu",
    "object",
    "script",
    "applet",
    "audio",
    "canvas",
    "figure",
    "map",
    "picture",
    "svg",
    "video",
    "area",
    "blink",
    "button",
    "datalist",
    "dialog",
    "frame",
    "frameset",
    "fieldset",
    "link",
    "input",
    "label",
    "legend",
    "marquee",
    "math",
    "menuitem",
    "nav",
    "noindex",
    "noscript",
    "optgroup",
    "option",
    "output",
    "param",
    "progress",
    "rp",
    "rt",
    "rtc",
    "select",
    "source",
    "style",
    "track",
    "textarea",
    "time",
    "use",
];

/// `settings.MANUALLY_STRIPPED`: tags removed, text kept.
const STRIPPED: [&str; 23] = [
    "abbr", "acronym", "address", "bdi", "bdo", "big", "cite", "data", "dfn", "font", "hgroup",
    "img", "ins", "mark", "meta", "nobr", "ruby", "small", "tbody", "template", "tfoot", "thead",
    "wbr",
];

/// `settings.CUT_EMPTY_ELEMS`: deleted when empty.
const CUT_EMPTY: [&str; 22] = [
    "article",
    "b",
    "blockquote",
    "dd",
    "div",
    "dt",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "i",
    "li",
    "main",
    "p",
    "pre",
    "q",
    "section",
    "span",
    "strong",
];

/// Inline formatting stripped when formatting is not kept
/// (`htmlprocessing.REND_TAG_MAPPING`).
const FORMATTING: [&str; 11] = [
    "em", "i", "b", "strong", "u", "kbd", "samp", "tt", "var", "sub", "sup",
];

/// `settings.INLINE_CONSUMING`, `INLINE_FORMATTABLE`, `INLINE_CARRIED`.
const INLINE_CONSUMING: [&str; 3] = ["hi", "ref", "del"];
const INLINE_FORMATTABLE: [&str; 4] = ["hi", "ref", "del", "code"];
const INLINE_CARRIED: [&str; 5] = ["hi", "ref", "del", "code", "graphic"];
/// `utils.FORMATTING_PROTECTED`.
const FORMATTING_PROTECTED: [&str; 8] = ["cell", "head", "hi", "item", "p", "quote", "ref", "td"];
/// `xml.NEWLINE_ELEMS`, `xml.SPECIAL_FORMATTING`.
const NEWLINE_ELEMS: [&str; 8] = [
    "graphic", "head", "lb", "list", "p", "quote", "row", "table",
];
const SPECIAL_FORMATTING: [&str; 7] = ["code", "del", "head", "hi", "ref", "item", "cell"];
/// Paragraph text below which `div`s count as blocks too, and the length
/// under which wild text is recovered (`MIN_EXTRACTED_SIZE`).
const MIN_EXTRACTED_SIZE: usize = 250;
/// `settings.MIN_DUPLICATE_LENGTH`.
const MIN_DUPLICATE_LENGTH: usize = 50;
/// Past this much output text, recovered blocks are no longer searched for
/// in it (`settings.DEDUPE_SCAN_CAP`): the search is quadratic.
const DEDUPE_SCAN_CAP: usize = 200_000;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a valid pattern")
}

/// `utils.RE_FILTER`: lines that are only a share button's label.
static RE_FILTER: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^\W*(Drucken|E-?Mail|Facebook|Flipboard|Google|Instagram|Linkedin|Mail|PDF|Pinterest|Pocket|Print|QQ|Reddit|Twitter|WeChat|WeiBo|Whatsapp|Xing|Mehr zum Thema:?|More on this.{0,8}$)$",
    )
});

/// The content containers of `xpaths.BODY_XPATH`, tried in turn.
struct BodyRules {
    article_id: Regex,
    article_class: Regex,
    story_id: Regex,
    story_class: Regex,
    fulltext: Regex,
    main_id: Regex,
    main_class: Regex,
}

static BODY: LazyLock<BodyRules> = LazyLock::new(|| BodyRules {
    article_id: re(
        "(?:entry|article|art)-content|article__content|article(?:-|__)?body|articleBody|body-text",
    ),
    article_class: re(concat!(
        "post[-_]text|post-body|post-?entry|post[-_]?content|postContent|post_inner_wrapper|",
        "article-?text|articleText|(?:entry|page|text|article|art)-content|article__content|",
        "article(?:-|__)?body|articleBody|ArticleContent|body-text|article__container"
    )),
    story_id: re("^primary|story-body"),
    story_class: re(concat!(
        "^article |post-bodycopy|story-?content|(?:theme|blog|section|single)-content|",
        "single-post|main-column|wpb_text_column|story-body|field-body"
    )),
    fulltext: re("(?i)fulltext"),
    main_id: re("content-main|content-body|contentBody"),
    main_class: re("content[-_]main|content(?:-|__)body"),
});

/// The boilerplate of `xpaths.OVERALL_DISCARD_XPATH`.
struct DiscardRules {
    cookie: Regex,
    id: Regex,
    class: Regex,
    hidden: Regex,
    reader: Regex,
    class2: Regex,
}

static DISCARD: LazyLock<DiscardRules> = LazyLock::new(|| {
    let both =
        "^shar|social|viral|newsletter|syndication|tags|sidebar|banner|bread-?crumb|button|author";
    DiscardRules {
        cookie: re("cookie"),
        id: re(&format!(
            "{both}|^(?:jp-|dpsp-content)|bmdh|footer|Footer|share|Share|nav|Nav|menu|related|message-container|premium|^ad-"
        )),
        class: re(&format!(concat!(
            "{}|^(?:nav|post-nav|ZendeskForm)|subnav|avigation|navbar|navbox|menu|bar|",
            " ad |-ad-|(?:^| )ad-|dfp[Aa]d|outbrain|taboola|criteo|paid-?content|widget|",
            "footer|Footer|byline|Byline|share-|sociable|embedded|embed|tag-list|",
            "consent|modal-content|permission|elated|next-|-stories|most-popular|more-on|",
            "meta|rating|attachment|timestamp|user-info|user-profile|-icon|article-infos|",
            "message-container|slide|viewport|overlay|options|expand|obfuscated|blurred|",
            "mol-factbox|yin|zlylin|nfoline"
        ), both)),
        hidden: re("hidden"),
        reader: re("reader-comments|akismet"),
        class2: re(concat!(
            "^hide-|comments-title|nocomments|-reply-|message|akismet|suggest-links|-hide-|",
            "hide-print| hidden| hide|noprint|notloaded"
        )),
    }
});

/// Elements whose boundaries separate text runs (`baseline._BLOCK_ELEMS`).
const BASELINE_BLOCKS: [&str; 34] = [
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "td",
    "th",
    "tr",
    "ul",
];

/// The least text a baseline strategy must give (`baseline._MIN_CONTENT_LENGTH`).
const MIN_BASELINE_LENGTH: usize = 100;

const BOX_TAGS: [&str; 6] = ["div", "item", "list", "p", "section", "span"];
const CONTAINERS: [&str; 4] = ["article", "div", "main", "section"];

struct Extraction {
    t: Tree,
    potential: Vec<&'static str>,
}

impl Extraction {
    fn body_rule(&self, rule: usize, id: Id) -> bool {
        let t = &self.t;
        let (tag, class, eid) = (t.tag(id), t.a(id, "class"), t.a(id, "id"));
        let b = &*BODY;
        let container = CONTAINERS.contains(&tag);
        match rule {
            0 => {
                container
                    && (class == "post"
                        || class == "entry"
                        || t.a(id, "itemprop") == "articleBody"
                        || eid == "articleContent"
                        || b.article_id.is_match(eid)
                        || b.article_class.is_match(class))
            }
            1 => tag == "article",
            2 => {
                container
                    && (t.a(id, "role") == "article"
                        || eid == "article"
                        || eid == "story"
                        || ["postarea", "art-postcontent", "text", "cell", "story"]
                            .contains(&class)
                        || b.story_id.is_match(eid)
                        || b.fulltext.is_match(class)
                        || b.story_class.is_match(class))
            }
            3 => {
                let low = |s: &str, from: &[char]| -> String {
                    s.chars()
                        .map(|c| {
                            if from.contains(&c) {
                                c.to_ascii_lowercase()
                            } else {
                                c
                            }
                        })
                        .collect()
                };
                container
                    && (eid == "content"
                        || class == "content"
                        || b.main_id.is_match(eid)
                        || b.main_class.is_match(class)
                        || low(eid, &['C', 'M']).contains("main-content")
                        || low(class, &['C', 'M']).contains("main-content")
                        || low(class, &['C', 'P']).contains("page-content"))
            }
            _ => {
                (["article", "div", "section"].contains(&tag)
                    && (class.starts_with("main")
                        || eid.starts_with("main")
                        || t.a(id, "role").starts_with("main")))
                    || tag == "main"
            }
        }
    }

    fn discarded(&self, id: Id) -> bool {
        let t = &self.t;
        let d = &*DISCARD;
        let (tag, class, eid) = (t.tag(id), t.a(id, "class"), t.a(id, "id"));
        let style = t.a(id, "style");
        let first = BOX_TAGS.contains(&tag)
            && (t.attr(id, "data-lp-replacement-content").is_some()
                || t.a(id, "role").replace('N', "n").contains("nav")
                || t.a(id, "data-component").contains("MostPopularStories")
                || d.cookie.is_match(t.first_attr(id, "id", "class"))
                || d.id.is_match(eid)
                || d.class.is_match(class));
        first
            || class == "comments-title"
            || t.first_attr(id, "id", "class").starts_with("reply-")
            || d.hidden.is_match(t.first_attr(id, "id", "style"))
            || style.contains("display:none")
            || style.contains("display: none")
            || d.reader.is_match(eid)
            || d.class2.is_match(class)
            || t.a(id, "aria-hidden") == "true"
    }

    /// `htmlprocessing.tree_cleaning` and `convert_tags` (links, images and
    /// formatting not kept; tables kept).
    fn clean_and_convert(&mut self, root: Id) {
        let t = &mut self.t;
        for id in t.iter(root) {
            let tag = t.tag(id);
            let to_div = (tag == "figure"
                && t.descendants(id).iter().any(|&d| t.tag(d) == "table"))
                || (tag == "table" && matches!(t.a(id, "role"), "presentation" | "none"));
            if to_div {
                t.n[id].tag = "div".into();
            }
        }
        t.strip_tags(root, |tag| STRIPPED.contains(&tag));
        for id in t.descendants(root) {
            if CLEANED.contains(&t.tag(id)) {
                t.delete(id, true);
            }
        }
        // forms: the one holding most of the page is its layout, others go
        let total = chars(&t.text_content(root));
        for id in t.iter(root) {
            if t.tag(id) == "form" && t.top(id) == root {
                if total > 0 && chars(&t.text_content(id)) > total / 2 {
                    t.n[id].tag = "div".into();
                } else {
                    t.delete(id, true);
                }
            }
        }
        let empty: Vec<Id> = t
            .descendants(root)
            .into_iter()
            .filter(|&id| {
                CUT_EMPTY.contains(&t.tag(id)) && t.n[id].text.is_empty() && t.childless(id)
            })
            .collect();
        for id in empty {
            t.delete(id, true);
        }
        // convert_tags
        for id in t.descendants(root) {
            if t.tag(id) == "a" {
                let in_block = t
                    .ancestors(id)
                    .any(|a| a != root && ["div", "li", "p", "table"].contains(&t.tag(a)));
                if in_block {
                    t.n[id].tag = "ref".into();
                }
            }
        }
        t.strip_tags(root, |tag| tag == "a");
        for id in t.descendants(root) {
            let tag = t.tag(id);
            if tag == "strong" && t.a(id, "class").contains("schema-faq-question") {
                t.n[id].tag = "head".into();
            } else if matches!(tag, "sub" | "sup") && t.n[id].text.is_empty() && t.childless(id) {
                t.delete(id, true);
            }
        }
        t.strip_tags(root, |tag| FORMATTING.contains(&tag));
        for id in t.iter(root) {
            match t.tag(id) {
                "dl" | "ol" | "ul" => {
                    t.n[id].tag = "list".into();
                    for d in t.descendants(id) {
                        if matches!(t.tag(d), "dd" | "dt" | "li") {
                            t.n[d].tag = "item".into();
                        }
                    }
                }
                "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                    t.n[id].attrs.clear();
                    t.n[id].tag = "head".into();
                }
                "br" | "hr" => t.n[id].tag = "lb".into(),
                "blockquote" | "pre" | "q" => {
                    let pre = t.tag(id) == "pre";
                    let mut hljs = false;
                    if pre {
                        for d in t.descendants(id) {
                            if t.tag(d) == "span" && t.a(d, "class").starts_with("hljs") {
                                t.n[d].attrs.clear();
                                hljs = true;
                            }
                        }
                    }
                    let kids = t.kids(id);
                    let text = &t.n[id].text;
                    let code = pre
                        && ((kids.len() == 1 && t.tag(kids[0]) == "span")
                            || hljs
                            || ["{", "(\"", "('", "\n    "]
                                .iter()
                                .any(|i| text.contains(i)));
                    t.n[id].tag = if code { "code" } else { "quote" }.into();
                }
                "del" | "s" | "strike" => t.n[id].tag = "del".into(),
                "details" => {
                    t.n[id].tag = "div".into();
                    for d in t.descendants(id) {
                        if t.tag(d) == "summary" {
                            t.n[d].tag = "head".into();
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// `htmlprocessing.link_density_test`: (boilerplate, short with links).
    fn link_density(&self, id: Id) -> (bool, bool) {
        let t = &self.t;
        let links: Vec<Id> = t
            .descendants(id)
            .into_iter()
            .filter(|&d| t.tag(d) == "ref")
            .collect();
        if links.is_empty() {
            return (false, false);
        }
        let len = t.collapsed_len(id);
        if links.len() == 1 {
            let link = t.collapsed_len(links[0]);
            if link > 100 && link as f64 > len as f64 * 0.9 {
                return (true, false);
            }
        }
        let last = t.next(id).is_none();
        let limit = match (t.tag(id) == "p", last) {
            (true, true) => 60,
            (true, false) => 30,
            (false, true) => 300,
            (false, false) => 100,
        };
        let texts: Vec<usize> = links
            .iter()
            .map(|&l| t.collapsed_len(l))
            .filter(|&n| n > 0)
            .collect();
        let link_len: usize = texts.iter().sum();
        if len < limit {
            if texts.is_empty() {
                return (true, false);
            }
            let short = texts.iter().filter(|&&n| n < 10).count();
            let dense = link_len as f64 > len as f64 * 0.8
                || (texts.len() > 1 && short as f64 / texts.len() as f64 > 0.8);
            return (dense, true);
        }
        if links.len() > 4 && link_len as f64 > len as f64 * 0.9 && link_len < 100 * texts.len() {
            let listing = links.iter().all(|&l| {
                t.n[l].parent.is_some_and(|p| {
                    t.tag(p) == "p"
                        && t.descendants(p)
                            .iter()
                            .filter(|&&d| t.tag(d) == "ref")
                            .count()
                            <= 1
                })
            });
            if !listing {
                return (true, false);
            }
        }
        (false, false)
    }

    /// `htmlprocessing.delete_by_link_density`.
    fn delete_by_link_density(&mut self, root: Id, tag: &str, backtracking: bool) {
        let t = &self.t;
        // which elements hold a link: the others pass the test at once
        let mut linked = vec![false; t.n.len()];
        for id in t.descendants(root).into_iter().rev() {
            if t.tag(id) == "ref" || linked[id] {
                if let Some(p) = t.n[id].parent {
                    linked[p] = true;
                }
            }
        }
        let mut doomed = Vec::new();
        for id in t.iter(root) {
            if t.tag(id) != tag || id == root || !linked[id] {
                continue;
            }
            let (dense, short) = self.link_density(id);
            let back = backtracking && short && t.kids(id).len() >= 3 && t.collapsed_len(id) < 100;
            if dense || back {
                let in_cell = t.n[id]
                    .parent
                    .is_some_and(|p| matches!(t.tag(p), "item" | "td" | "th"));
                if !(tag == "p" && in_cell) {
                    doomed.push(id);
                }
            }
        }
        for id in doomed {
            self.t.delete(id, true);
        }
    }

    /// `main_extractor.prune_unwanted_sections` (balanced focus).
    fn prune(&mut self, root: Id) {
        let t = &self.t;
        let matches: HashSet<Id> = t
            .descendants(root)
            .into_iter()
            .filter(|&d| self.discarded(d))
            .collect();
        let outer: Vec<Id> = t
            .descendants(root)
            .into_iter()
            .filter(|d| matches.contains(d) && !t.ancestors(*d).any(|a| matches.contains(&a)))
            .collect();
        let old = chars(&t.text_content(root));
        let removed: usize = outer.iter().map(|&o| chars(&t.text_content(o))).sum();
        if old.saturating_sub(removed) as f64 > old as f64 / 7.0 {
            for id in outer {
                self.t.delete(id, true);
            }
        }
        // captions (images are not kept) and teasers
        let t = &self.t;
        let lowered = |id: Id, attr: &str, from: char| {
            t.a(id, attr)
                .replace(from, &from.to_ascii_lowercase().to_string())
        };
        let doomed: Vec<Id> = t
            .descendants(root)
            .into_iter()
            .filter(|&d| {
                BOX_TAGS.contains(&t.tag(d))
                    && (t.a(d, "id").contains("caption")
                        || t.a(d, "class").contains("caption")
                        || lowered(d, "id", 'T').contains("teaser")
                        || lowered(d, "class", 'T').contains("teaser"))
            })
            .collect();
        for id in doomed {
            self.t.delete(id, true);
        }
        for _ in 0..2 {
            self.delete_by_link_density(root, "div", true);
            self.delete_by_link_density(root, "list", false);
            self.delete_by_link_density(root, "p", false);
        }
        let t = &self.t;
        let tables: Vec<Id> = t
            .iter(root)
            .into_iter()
            .filter(|&d| d != root && t.tag(d) == "table" && self.link_dense_table(d))
            .collect();
        for id in tables {
            self.t.delete(id, false);
        }
        self.t.strip_tags(root, |tag| tag == "span" || tag == "ref");
    }

    /// `htmlprocessing.link_density_test_tables`.
    fn link_dense_table(&self, id: Id) -> bool {
        let t = &self.t;
        let links: Vec<Id> = t
            .descendants(id)
            .into_iter()
            .filter(|&d| t.tag(d) == "ref")
            .collect();
        if links.is_empty() {
            return false;
        }
        let len = t.collapsed_len(id);
        if len < 200 {
            return false;
        }
        let link: usize = links.iter().map(|&l| t.collapsed_len(l)).sum();
        if len < 1000 {
            link as f64 > 0.8 * len as f64
        } else {
            link as f64 > 0.5 * len as f64
        }
    }

    fn textfilter(&self, id: Id) -> bool {
        let e = &self.t.n[id];
        let text = if e.text.is_empty() { &e.tail } else { &e.text };
        text.trim().is_empty() || text.lines().any(|l| RE_FILTER.is_match(l))
    }

    /// `htmlprocessing.process_node`.
    fn process_node(&mut self, id: Id) -> Option<Id> {
        let e = &mut self.t.n[id];
        if e.tag == DONE || (e.first.is_none() && e.text.is_empty() && e.tail.is_empty()) {
            return None;
        }
        e.text = trim(&e.text);
        e.tail = trim(&e.tail);
        if e.tag != "lb" && e.text.is_empty() && !e.tail.is_empty() && e.first.is_none() {
            e.text = std::mem::take(&mut e.tail);
        }
        let e = &self.t.n[id];
        if (!e.text.is_empty() || !e.tail.is_empty()) && self.textfilter(id) {
            return None;
        }
        Some(id)
    }

    fn separates_inline(&self, id: Id) -> bool {
        self.t.tag(id) == "lb"
            && self
                .t
                .next(id)
                .is_some_and(|n| INLINE_CARRIED.contains(&self.t.tag(n)))
    }

    /// `htmlprocessing.handle_textnode` (`comments_fix` false).
    fn handle_textnode(&mut self, id: Id, preserve_spaces: bool) -> Option<Id> {
        let e = &self.t.n[id];
        if e.tag == DONE
            || (e.first.is_none()
                && e.text.is_empty()
                && e.tail.is_empty()
                && !self.separates_inline(id))
        {
            return None;
        }
        let e = &mut self.t.n[id];
        if e.tag == "lb" {
            if !preserve_spaces {
                e.tail = trim(&e.tail);
            }
            return Some(id);
        }
        if e.text.is_empty() && e.first.is_none() {
            e.text = std::mem::take(&mut e.tail);
        }
        if !preserve_spaces {
            e.text = trim(&e.text);
            e.tail = trim(&e.tail);
        }
        if self.t.n[id].text.is_empty() && self.textfilter(id) {
            return None;
        }
        Some(id)
    }

    fn mark_done(&mut self, id: Id) {
        for d in self.t.iter(id) {
            self.t.n[d].tag = DONE.into();
        }
    }

    /// `main_extractor.define_newelem`.
    fn define_newelem(&mut self, processed: Option<Id>, parent: Id, keep_children: bool) {
        let Some(p) = processed else { return };
        let c = self.t.new_el(&self.t.n[p].tag.clone());
        self.t.n[c].text = self.t.n[p].text.clone();
        self.t.n[c].tail = self.t.n[p].tail.clone();
        self.t.append(parent, c);
        if keep_children {
            for sub in self.t.kids(p) {
                let tag = self.t.tag(sub);
                if INLINE_CARRIED.contains(&tag) || tag == "lb" {
                    self.define_newelem(Some(sub), c, true);
                    self.mark_done(sub);
                }
            }
        }
    }

    /// `main_extractor._append_block`.
    fn append_block(&mut self, parent: Id, processed: Option<Id>, source: Id) {
        if let Some(p) = processed {
            self.t.n[p].tail = self.t.n[source].tail.clone();
            self.t.append(parent, p);
            return;
        }
        let tail = self.t.n[source].tail.clone();
        if !has_chars(&tail) {
            return;
        }
        let last = self.t.n[parent].last;
        let before = match last {
            Some(l) => self.t.n[l].tail.clone(),
            None => self.t.n[parent].text.clone(),
        };
        let ends_space = before.chars().last().is_some_and(char::is_whitespace);
        let starts_space = tail.chars().next().is_some_and(char::is_whitespace);
        let tail = if (!before.is_empty() || last.is_some()) && !ends_space && !starts_space {
            format!(" {tail}")
        } else {
            tail
        };
        match last {
            Some(l) => self.t.n[l].tail = before + &tail,
            None => self.t.n[parent].text = before + &tail,
        }
    }

    /// `main_extractor.process_nested_elements`.
    fn process_nested(&mut self, child: Id, new: Id) {
        self.t.n[new].text = self.t.n[child].text.clone();
        for sub in self.t.descendants(child) {
            let tag = self.t.tag(sub).to_string();
            if tag == "list" {
                let p = self.handle_lists(sub);
                self.append_block(new, p, sub);
            } else if tag == "p" && !self.t.childless(sub) {
                let p = self.handle_paragraphs(sub, true);
                self.append_block(new, p, sub);
            } else if INLINE_CARRIED.contains(&tag.as_str()) {
                self.define_newelem(Some(sub), new, true);
            } else {
                if let Some(last) = self.t.n[sub].last {
                    if has_chars(&self.t.n[sub].tail) {
                        let tail = std::mem::take(&mut self.t.n[sub].tail);
                        self.t.n[last].tail.push_str(&tail);
                    }
                }
                let p = self.handle_textnode(sub, false);
                self.define_newelem(p, new, false);
            }
            self.t.n[sub].tag = DONE.into();
        }
    }

    /// `main_extractor.handle_lists`.
    fn handle_lists(&mut self, id: Id) -> Option<Id> {
        let new = self.t.new_el("list");
        if has_chars(&self.t.n[id].text) {
            let item = self.t.new_el("item");
            self.t.n[item].text = self.t.n[id].text.clone();
            self.t.append(new, item);
        }
        for child in self.t.descendants(id) {
            if self.t.tag(child) != "item" {
                continue;
            }
            let item = self.t.new_el("item");
            if self.t.childless(child) {
                if let Some(p) = self.process_node(child) {
                    let e = &self.t.n[p];
                    let parts: Vec<&str> = [e.text.as_str(), e.tail.as_str()]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect();
                    self.t.n[item].text = parts.join(" ");
                }
            } else {
                self.process_nested(child, item);
                let tail = self.t.n[child].tail.clone();
                if has_chars(&tail) {
                    if let Some(last) = self.t.n[item].last {
                        let lt = &mut self.t.n[last].tail;
                        *lt = if has_chars(lt) {
                            format!("{lt} {tail}")
                        } else {
                            tail
                        };
                    }
                }
            }
            if self.t.is_text_element(item) {
                self.t.append(new, item);
            }
            self.t.n[child].tag = DONE.into();
        }
        self.t.n[id].tag = DONE.into();
        self.t.is_text_element(new).then_some(new)
    }

    /// `main_extractor.is_code_block_element`.
    fn is_code_block(&self, id: Id) -> bool {
        let t = &self.t;
        if t.attr(id, "lang").is_some() || t.tag(id) == "code" {
            return true;
        }
        if t.n[id]
            .parent
            .is_some_and(|p| t.a(p, "class").contains("highlight"))
        {
            return true;
        }
        let kids = t.kids(id);
        kids.len() == 1
            && t.tag(kids[0]) == "code"
            && t.n[id].text.trim().is_empty()
            && t.n[kids[0]].tail.trim().is_empty()
    }

    fn handle_code_block(&mut self, id: Id) -> Option<Id> {
        let copy = self.t.deep_copy(id);
        self.mark_done(id);
        self.t.n[copy].tag = "code".into();
        Some(copy)
    }

    /// `main_extractor.handle_quotes`.
    fn handle_quotes(&mut self, id: Id) -> Option<Id> {
        if self.is_code_block(id) {
            return self.handle_code_block(id);
        }
        let new = self.t.new_el(&self.t.n[id].tag.clone());
        self.process_nested(id, new);
        if !self.t.is_text_element(new) {
            return None;
        }
        self.t.strip_tags(new, |tag| tag == "quote");
        Some(new)
    }

    /// `main_extractor.handle_titles`.
    fn handle_titles(&mut self, id: Id) -> Option<Id> {
        let title = if self.t.childless(id) {
            self.process_node(id)
        } else {
            let copy = self.t.deep_copy(id);
            for d in self.t.descendants(copy) {
                if self.t.tag(d) == DONE {
                    self.t.delete(d, false);
                }
            }
            for d in self.t.descendants(id) {
                self.t.n[d].tag = DONE.into();
            }
            Some(copy)
        };
        title.filter(|&t| self.t.is_text_element(t))
    }

    /// `main_extractor.handle_paragraphs`; `in_quote` widens the tags kept
    /// inside to those of a quote.
    fn handle_paragraphs(&mut self, id: Id, in_quote: bool) -> Option<Id> {
        if self.t.childless(id) {
            return self.process_node(id);
        }
        let potential = self.potential.clone();
        let keep = move |tag: &str| {
            potential.contains(&tag)
                || tag == DONE
                || (in_quote && matches!(tag, "ref" | "graphic"))
        };
        let new = self.t.new_el("p");
        self.t.strip_tags(id, |tag| !keep(tag));
        for child in self.t.iter(id) {
            if let Some(pc) = self.handle_textnode(child, true) {
                if self.t.tag(pc) == "p" {
                    let text = self.t.n[pc].text.clone();
                    let nt = &mut self.t.n[new].text;
                    if !text.is_empty() {
                        *nt = if nt.is_empty() {
                            text
                        } else {
                            format!("{nt} {text}")
                        };
                    }
                    self.t.n[child].tag = DONE.into();
                    continue;
                }
                let sub = self.t.new_el(&self.t.n[child].tag.clone());
                if INLINE_CONSUMING.contains(&self.t.tag(pc)) {
                    let kids = self.t.kids(pc);
                    let wraps = !kids.is_empty()
                        && (self.t.tag(pc) == "ref"
                            || kids
                                .iter()
                                .any(|&k| INLINE_CARRIED.contains(&self.t.tag(k))));
                    if wraps {
                        self.define_newelem(Some(pc), new, true);
                        self.t.n[child].tag = DONE.into();
                        continue;
                    }
                    for k in kids {
                        let e = &mut self.t.n[k];
                        if e.tag == "lb" && !e.tail.is_empty() {
                            e.tail = format!(" {}", e.tail.trim_start());
                        } else if has_chars(&e.text) {
                            e.text = format!(" {}", e.text);
                        }
                    }
                    self.t.strip_tags(pc, |_| true);
                }
                self.t.n[sub].text = self.t.n[pc].text.clone();
                self.t.n[sub].tail = self.t.n[pc].tail.clone();
                self.t.append(new, sub);
            }
            self.t.n[child].tag = DONE.into();
        }
        if let Some(last) = self.t.n[new].last {
            if self.t.tag(last) == "lb" && self.t.n[last].tail.is_empty() {
                self.t.delete(last, true);
            }
            return Some(new);
        }
        has_chars(&self.t.n[new].text).then_some(new)
    }

    /// `main_extractor.handle_table`: a row per `tr` (cells outside rows
    /// join the row before), a cell per `td`/`th`, colspans and rowspans
    /// padded with empty cells, rows padded to the widest; the first row
    /// with `th` cells is the header.
    fn handle_table(&mut self, id: Id) -> Option<Id> {
        let new = self.t.new_el("table");
        let nested: HashSet<Id> = self
            .t
            .descendants(id)
            .into_iter()
            .filter(|&d| self.t.tag(d) == "table")
            .flat_map(|d| self.t.iter(d))
            .collect();
        let span = |t: &Tree, cell: Id, attr: &str| -> usize {
            let v = t.a(cell, attr);
            match v.parse::<usize>() {
                Ok(n) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => n.min(100),
                _ => 1,
            }
        };
        let mut rows: Vec<Vec<Id>> = vec![vec![]];
        let mut max_cols = 0;
        for child in self.t.kids(id) {
            match self.t.tag(child) {
                "tr" => {
                    let cells: Vec<Id> = self
                        .t
                        .kids(child)
                        .into_iter()
                        .filter(|&c| matches!(self.t.tag(c), "td" | "th"))
                        .collect();
                    max_cols =
                        max_cols.max(cells.iter().map(|&c| span(&self.t, c, "colspan")).sum());
                    rows.push(cells);
                }
                "td" | "th" => {
                    rows.last_mut().expect("a row").push(child);
                    continue;
                }
                "table" => continue,
                _ => {}
            }
            self.t.n[child].tag = DONE.into();
        }
        let max_cols = max_cols.min(100);
        let mut header_done = false;
        let mut rowspans: std::collections::BTreeMap<usize, usize> = Default::default();
        let flush =
            |t: &mut Tree, row: Id, rowspans: &mut std::collections::BTreeMap<usize, usize>| loop {
                let col = t.kids(row).len();
                let Some(left) = rowspans.get_mut(&col) else {
                    break;
                };
                let pad = t.new_el("cell");
                t.append(row, pad);
                *left -= 1;
                if *left == 0 {
                    rowspans.remove(&col);
                }
            };
        for cells in rows {
            let row = self.t.new_el("row");
            let mut header = false;
            for cell in cells {
                let is_header = self.t.tag(cell) == "th" && !header_done;
                header |= is_header;
                flush(&mut self.t, row, &mut rowspans);
                let c = self.t.new_el("cell");
                if is_header {
                    self.t.n[c].attrs.push(("role".into(), "head".into()));
                }
                let colspan = span(&self.t, cell, "colspan");
                let rowspan = span(&self.t, cell, "rowspan");
                if rowspan > 1 {
                    let at = self.t.kids(row).len();
                    for col in at..at + colspan {
                        rowspans.insert(col, rowspan - 1);
                    }
                }
                self.fill_cell(c, cell, &nested);
                self.t.append(row, c);
                for _ in 1..colspan {
                    let pad = self.t.new_el("cell");
                    if is_header {
                        self.t.n[pad].attrs.push(("role".into(), "head".into()));
                    }
                    self.t.append(row, pad);
                }
                self.t.n[cell].tag = DONE.into();
            }
            flush(&mut self.t, row, &mut rowspans);
            while self.t.kids(row).len() < max_cols {
                let pad = self.t.new_el("cell");
                self.t.append(row, pad);
            }
            let filled = self
                .t
                .kids(row)
                .into_iter()
                .any(|c| !self.t.n[c].text.is_empty() || !self.t.childless(c));
            if filled {
                self.t.append(new, row);
            }
            header_done |= header;
        }
        (!self.t.childless(new)).then_some(new)
    }

    /// `main_extractor._fill_cell`: a cell's text and its blocks (lists in
    /// cells are left out, as trafilatura does unless it favours recall;
    /// nested tables are left to the main loop).
    fn fill_cell(&mut self, new: Id, cell: Id, nested: &HashSet<Id>) {
        if self.t.childless(cell) {
            if let Some(p) = self.process_node(cell) {
                self.t.n[new].text = self.t.n[p].text.clone();
                self.t.n[new].tail = self.t.n[p].tail.clone();
            }
            return;
        }
        self.t.n[new].text = self.t.n[cell].text.clone();
        self.t.n[new].tail = self.t.n[cell].tail.clone();
        self.t.n[cell].tag = DONE.into();
        let widened = !self.potential.contains(&"div");
        if widened {
            self.potential.push("div");
        }
        for child in self.t.descendants(cell) {
            let tag = self.t.tag(child).to_string();
            if tag == DONE {
                continue;
            }
            if nested.contains(&child) {
                let outer = self.t.ancestors(child).find(|&a| self.t.tag(a) == "table");
                if tag == "table" && outer.is_some_and(|o| !nested.contains(&o)) {
                    self.append_block(new, None, child);
                    self.t.n[child].tail.clear();
                }
                continue;
            }
            if self.separates_inline(child) && !has_chars(&self.t.n[child].tail) {
                let lb = self.t.new_el("lb");
                self.t.append(new, lb);
                self.t.n[child].tag = DONE.into();
                continue;
            }
            let processed = if matches!(tag.as_str(), "td" | "th") {
                self.t.n[child].tag = "cell".into();
                self.handle_textnode(child, true)
            } else if INLINE_CONSUMING.contains(&tag.as_str()) {
                self.handle_textnode(child, true)
                    .or((!self.t.childless(child)).then_some(child))
            } else if tag == "list" {
                self.append_block(new, None, child);
                continue;
            } else {
                self.handle_textelem(child)
            };
            self.define_newelem(processed, new, true);
            self.t.n[child].tag = DONE.into();
        }
        if widened {
            self.potential.retain(|&t| t != "div");
        }
    }

    /// `main_extractor.handle_textelem`.
    fn handle_textelem(&mut self, id: Id) -> Option<Id> {
        match self.t.tag(id) {
            "list" => self.handle_lists(id),
            "code" | "quote" => self.handle_quotes(id),
            "head" => self.handle_titles(id),
            "p" => self.handle_paragraphs(id, false),
            "lb" => {
                if !has_chars(&self.t.n[id].tail) {
                    return None;
                }
                let node = self.process_node(id)?;
                let p = self.t.new_el("p");
                self.t.n[p].text = self.t.n[node].tail.clone();
                Some(p)
            }
            "hi" | "ref" | "del" => {
                let node = self.process_node(id)?;
                let protected = self.t.n[id]
                    .parent
                    .is_some_and(|p| FORMATTING_PROTECTED.contains(&self.t.tag(p)));
                if protected {
                    return Some(node);
                }
                let p = self.t.new_el("p");
                self.t.append(p, node);
                Some(p)
            }
            "table" if self.potential.contains(&"table") => self.handle_table(id),
            "div" if self.t.a(id, "class").contains("w3-code") => self.handle_code_block(id),
            "div" if self.potential.contains(&"div") => {
                let node = self.handle_textnode(id, true)?;
                if !has_chars(&self.t.n[node].text) {
                    return None;
                }
                self.t.n[node].attrs.clear();
                self.t.n[node].tag = "p".into();
                Some(node)
            }
            _ => None,
        }
    }

    /// Concatenated text of an output element, trimmed (`_elem_text`).
    fn elem_text(&self, id: Id) -> String {
        trim(&self.t.text_content(id))
    }

    /// `main_extractor.extract_content`: the output elements, children of
    /// a new `body`.
    fn extract_content(&mut self, doc: &scraper::Html, root: Id) -> Id {
        let body = self.t.new_el("body");
        for rule in 0..5 {
            let Some(sub) = self
                .t
                .descendants(root)
                .into_iter()
                .find(|&d| self.body_rule(rule, d))
            else {
                continue;
            };
            self.prune(sub);
            if self.t.childless(sub) {
                continue;
            }
            // `//p//text()`: paragraph text anywhere in the document
            let top = self.t.top(sub);
            let t = &self.t;
            let p_text: usize = t
                .iter(top)
                .into_iter()
                .filter(|&d| t.tag(d) == "p" && !t.ancestors(d).any(|a| t.tag(a) == "p"))
                .map(|d| chars(&t.text_content(d)))
                .sum();
            if p_text < MIN_EXTRACTED_SIZE * 3 && !self.potential.contains(&"div") {
                self.potential.push("div");
            }
            let mut subelems = self.t.descendants(sub);
            let tags: HashSet<&str> = subelems.iter().map(|&d| self.t.tag(d)).collect();
            let inline_only = tags
                .iter()
                .all(|t| INLINE_FORMATTABLE.contains(t) || *t == "lb");
            if (tags.len() == 1 && tags.contains("lb"))
                || (self.t.tag(sub) == "div" && self.potential.contains(&"div") && inline_only)
            {
                subelems = vec![sub];
            }
            // the output's last element before this container's
            let start = self.t.n[body].last;
            let mut lead = None;
            if subelems != [sub] && has_chars(&self.t.n[sub].text) {
                let p = self.t.new_el("p");
                self.t.n[p].text = self.t.n[sub].text.clone();
                lead = self.process_node(p);
            }
            for elem in subelems {
                if self.t.top(elem) == body {
                    continue;
                }
                let tag = self.t.tag(elem).to_string();
                let tail = self.t.n[elem].tail.clone();
                let processed = self.handle_textelem(elem);
                if let Some(p) = processed {
                    self.t.append(body, p);
                    if self.t.top(elem) != body {
                        self.t.n[elem].tag = DONE.into();
                    }
                }
                let rebuilt = matches!(tag.as_str(), "code" | "quote" | "list" | "table");
                if rebuilt
                    && has_chars(&tail)
                    && processed.is_none_or(|p| self.t.n[p].tail.is_empty())
                {
                    let p = self.t.new_el("p");
                    self.t.n[p].text = tail;
                    if self.process_node(p).is_some() {
                        self.t.append(body, p);
                    }
                }
            }
            while let Some(last) = self.t.n[body].last {
                if !matches!(self.t.tag(last), "head" | "ref") {
                    break;
                }
                self.t.delete(last, false);
            }
            if self.t.kids(body).len() > 1 {
                if let Some(l) = lead {
                    let before = match start {
                        Some(s) => self.t.n[s].next,
                        None => self.t.n[body].first,
                    };
                    self.t.link(body, l, before);
                }
                break;
            }
        }
        if self.t.childless(body) || self.t.joined_len(body) < MIN_EXTRACTED_SIZE {
            // the page as it was before this extraction (trafilatura's
            // backup copy): parsed and cleaned again, its elements at the
            // same offset; those the extraction took are left out
            let backup = self.t.add_html(doc);
            self.clean_and_convert(backup);
            let consumed: HashSet<Id> = (root..backup)
                .filter(|&x| self.t.tag(x) == DONE)
                .map(|x| x - root + backup)
                .collect();
            self.recover_wild_text(backup, body, &consumed);
        }
        // repeated blocks
        let mut previous = String::new();
        for el in self.t.kids(body) {
            let current = self.elem_text(el);
            if !current.is_empty() && current == previous && chars(&current) > MIN_DUPLICATE_LENGTH
            {
                self.t.delete(el, false);
            } else {
                previous = current;
            }
        }
        for d in self.t.descendants(body) {
            if self.t.tag(d) == DONE {
                self.t.delete(d, false);
            }
        }
        self.t.strip_tags(body, |tag| tag == "div");
        body
    }

    /// `main_extractor.recover_wild_text`: paragraphs, quotes, code and
    /// tables of the whole (pruned) page that the output lacks.
    fn recover_wild_text(&mut self, root: Id, body: Id, consumed: &HashSet<Id>) {
        self.prune(root);
        let t = &self.t;
        let found: Vec<Id> = t
            .descendants(root)
            .into_iter()
            .filter(|&d| {
                matches!(t.tag(d), "code" | "p" | "quote" | "table")
                    || (t.tag(d) == "div" && t.a(d, "class").contains("w3-code"))
            })
            .collect();
        let texts: Vec<String> = t
            .kids(body)
            .into_iter()
            .map(|c| self.elem_text(c))
            .collect();
        let mut existing = texts
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        let mut seen: HashSet<String> = texts.into_iter().collect();
        let mut handled: HashSet<Id> = HashSet::new();
        for sub in found {
            if consumed.contains(&sub) || self.t.ancestors(sub).any(|a| handled.contains(&a)) {
                continue;
            }
            let Some(p) = self.handle_textelem(sub) else {
                continue;
            };
            if p == sub {
                handled.insert(sub);
            }
            let text = self.elem_text(p);
            let tail = self.t.n[p].tail.clone();
            let fragment = if has_chars(&tail) {
                trim(&format!("{text}{tail}"))
            } else {
                String::new()
            };
            let scan = chars(&existing) <= DEDUPE_SCAN_CAP;
            let duplicate = !text.is_empty()
                && (seen.contains(&text)
                    || (scan
                        && ((chars(&text) > MIN_DUPLICATE_LENGTH && existing.contains(&text))
                            || (!fragment.is_empty() && existing.contains(&fragment)))));
            if duplicate {
                continue;
            }
            self.t.append(body, p);
            if scan {
                existing.push('\n');
                existing.push_str(if fragment.is_empty() {
                    &text
                } else {
                    &fragment
                });
            }
            seen.insert(text);
        }
    }
}

impl Extraction {
    /// `baseline.baseline` (less its embedded-JSON sources): the text of
    /// the page's articles, else of its paragraphs, else all of its body,
    /// a text run per line. With its length.
    fn baseline(&mut self, root: Id) -> (String, usize) {
        let t = &self.t;
        let doomed: Vec<Id> = t
            .descendants(root)
            .into_iter()
            .filter(|&d| {
                matches!(
                    t.tag(d),
                    "aside" | "fencedframe" | "footer" | "script" | "style" | "svg" | "template"
                ) || (t.tag(d) == "div" && t.first_attr(d, "class", "id").contains("footer"))
            })
            .collect();
        for d in doomed {
            self.t.delete(d, true);
        }
        let t = &self.t;
        let attempt = |texts: Vec<String>, dedupe: bool| -> Option<(String, usize)> {
            let mut out = String::new();
            for text in texts {
                let keep = !text.is_empty()
                    && (!dedupe || chars(&text) <= MIN_DUPLICATE_LENGTH || !out.contains(&text));
                if keep {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(&text);
                }
            }
            let len = chars(&out);
            (len > MIN_BASELINE_LENGTH).then_some((out, len))
        };
        let articles: Vec<String> = t
            .descendants(root)
            .into_iter()
            .filter(|&d| t.tag(d) == "article" && !t.ancestors(d).any(|a| t.tag(a) == "article"))
            .map(|d| t.spaced_text(d))
            .filter(|s| chars(s) > MIN_BASELINE_LENGTH)
            .collect();
        if let Some(longest) = articles.iter().map(|a| chars(a)).max() {
            let kept = articles
                .into_iter()
                .filter(|a| chars(a) * 5 >= longest)
                .collect();
            if let Some(r) = attempt(kept, false) {
                return r;
            }
        }
        const SCRAPED: [&str; 6] = ["blockquote", "code", "p", "pre", "q", "quote"];
        let paragraphs = t
            .descendants(root)
            .into_iter()
            .filter(|&d| {
                SCRAPED.contains(&t.tag(d)) && !t.ancestors(d).any(|a| SCRAPED.contains(&t.tag(a)))
            })
            .map(|d| t.spaced_text(d))
            .collect();
        if let Some(r) = attempt(paragraphs, true) {
            return r;
        }
        let Some(body) = t
            .descendants(root)
            .into_iter()
            .find(|&d| t.tag(d) == "body")
        else {
            return (String::new(), 0);
        };
        let mut runs: Vec<String> = Vec::new();
        t.each_text(body, |text| {
            let run = trim(text);
            if !run.is_empty() {
                runs.push(run);
            }
        });
        let text = runs.join("\n");
        let len = chars(&text);
        (text, len)
    }
}

/// `xml.xmltotxt` without formatting: the output elements as text.
struct Writer<'a> {
    t: &'a Tree,
    out: String,
}

const SEPARATORS: [char; 3] = [' ', '\n', '|'];

impl Writer<'_> {
    fn last_is_separator(&self) -> bool {
        self.out
            .chars()
            .last()
            .is_none_or(|c| SEPARATORS.contains(&c))
    }

    fn push_spaced(&mut self, text: &str) {
        let text = match text.strip_prefix(' ') {
            Some(rest) if self.last_is_separator() => rest,
            _ => text,
        };
        self.out.push_str(text);
    }

    fn closes(&self, id: Id, tag: &str) -> bool {
        if self.t.tag(id) == tag {
            return self.t.childless(id);
        }
        match self.t.next(id) {
            None => true,
            Some(n) => tag == "item" && self.t.tag(n) == "item",
        }
    }

    fn opens_item(&self, mut id: Id) -> bool {
        while self.t.tag(id) != "item" {
            let Some(p) = self.t.n[id].parent else {
                return false;
            };
            if self.t.previous(id).is_some() || has_chars(&self.t.n[p].text) {
                return false;
            }
            id = p;
        }
        true
    }

    fn needs_marker(&self, item: Id) -> bool {
        if has_chars(&self.t.n[item].text) {
            return true;
        }
        for c in self.t.kids(item) {
            if self.t.tag(c) == "list" {
                return false;
            }
            if has_chars(&(self.t.text_content(c) + &self.t.n[c].tail)) {
                return true;
            }
        }
        false
    }

    fn tail(&mut self, id: Id, in_cell: bool, in_item: bool) {
        let tail = &self.t.n[id].tail;
        if tail.is_empty() {
            return;
        }
        let tag = self.t.tag(id);
        if in_cell || in_item || tag == "list" {
            let mut core = tail.trim().to_string();
            let starts = tail.chars().next().is_some_and(char::is_whitespace);
            if !core.is_empty() && (starts || !INLINE_FORMATTABLE.contains(&tag)) {
                core.insert(0, ' ');
            }
            let ends = tail.chars().last().is_some_and(char::is_whitespace);
            if ends
                && self
                    .t
                    .next(id)
                    .is_some_and(|n| INLINE_CARRIED.contains(&self.t.tag(n)))
            {
                core.push(' ');
            }
            let core = if in_cell {
                core.replace('\n', " ")
            } else {
                core
            };
            self.push_spaced(&core);
            return;
        }
        let tail = if NEWLINE_ELEMS.contains(&tag) {
            tail.trim_start()
        } else {
            tail
        };
        self.out.push_str(tail);
    }

    /// Consumes its inline children (`_consumes_inline_children`).
    fn consumes(&self, id: Id) -> bool {
        INLINE_CONSUMING.contains(&self.t.tag(id)) && !self.t.childless(id)
    }

    fn own_text(&self, id: Id) -> String {
        let e = &self.t.n[id];
        let mut text = if self.consumes(id) {
            let mut s = e.text.clone();
            for c in self.t.kids(id) {
                if self.t.tag(c) == "lb" {
                    s.push('\n');
                } else if INLINE_FORMATTABLE.contains(&self.t.tag(c)) {
                    s.push_str(&self.own_text(c));
                } else {
                    s.push_str(&self.t.n[c].text);
                }
                s.push_str(&self.t.n[c].tail);
            }
            s
        } else {
            e.text.clone()
        };
        if e.tag == "cell" {
            text = text.trim().to_string();
            if !text.is_empty() && e.first.is_some() {
                text.push(' ');
            }
        }
        text
    }

    /// `xml.process_element`, walked with an explicit stack.
    fn element(&mut self, root: Id) {
        enum Step {
            Open(Id, bool, bool),
            Close(Id, bool, bool, bool),
        }
        let mut stack = vec![Step::Open(root, false, false)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Open(id, in_cell, in_item) => {
                    let t = self.t;
                    let tag = t.tag(id);
                    let in_cell = in_cell || tag == "cell";
                    let in_item = in_item || tag == "item";
                    if tag == "cell" && t.previous(id).is_none() {
                        self.out.push_str("| ");
                    }
                    let last = self.out.chars().last();
                    let e = &t.n[id];
                    if NEWLINE_ELEMS.contains(&tag)
                        && !in_cell
                        && !in_item
                        && !self.last_is_separator()
                    {
                        self.out.push('\n');
                    } else if matches!(tag, "head" | "p" | "quote" | "table")
                        && !last.is_some_and(char::is_whitespace)
                        && !self.last_is_separator()
                        && (!e.text.is_empty()
                            || e.first.is_none()
                            || e.first.is_some_and(|f| t.tag(f) != "lb"))
                    {
                        self.out.push(' ');
                    }
                    let consumes = self.consumes(id);
                    let inline = !e.text.is_empty() || consumes;
                    if tag == "item" && !in_cell && self.needs_marker(id) {
                        let depth = t.ancestors(id).filter(|&a| t.tag(a) == "list").count();
                        self.out.push_str(&"  ".repeat(depth.saturating_sub(1)));
                        self.out.push_str("- ");
                    }
                    if inline && (tag != "item" || consumes || has_chars(&e.text)) {
                        let text = self.own_text(id);
                        self.out.push_str(&if in_cell {
                            text.replace('\n', " ")
                        } else {
                            text
                        });
                    }
                    if tag == "list"
                        && in_item
                        && !matches!(self.out.chars().last(), Some('\n') | None)
                    {
                        self.out.push('\n');
                    }
                    stack.push(Step::Close(id, in_cell, in_item, inline));
                    if !consumes {
                        for c in t.kids(id).into_iter().rev() {
                            stack.push(Step::Open(c, in_cell, in_item));
                        }
                    }
                }
                Step::Close(id, in_cell, in_item, inline) => {
                    let t = self.t;
                    let tag = t.tag(id);
                    if !inline {
                        if NEWLINE_ELEMS.contains(&tag) {
                            let opening_lb = tag == "lb" && in_item && self.opens_item(id);
                            if tag == "row" {
                                // a line under a header row
                                let cells = t.kids(id);
                                if cells.iter().any(|&c| t.a(c, "role") == "head") {
                                    self.out
                                        .push_str(&format!("\n|{}\n", "---|".repeat(cells.len())));
                                }
                            } else if !in_cell && !opening_lb {
                                self.out.push('\n');
                            }
                        } else if !matches!(tag, "cell" | "item") {
                            if in_cell {
                                self.tail(id, in_cell, in_item);
                            }
                            continue;
                        }
                    }
                    let last_in_item = in_item && self.closes(id, "item");
                    let last_in_cell = in_cell && self.closes(id, "cell");
                    if NEWLINE_ELEMS.contains(&tag) && !in_cell && !in_item {
                        self.out.push('\n');
                    } else if tag == "cell" {
                        self.out.push_str(" | ");
                    } else if (matches!(tag, "head" | "item") && in_cell && !last_in_cell)
                        || (!SPECIAL_FORMATTING.contains(&tag) && !last_in_item && !last_in_cell)
                    {
                        self.push_spaced(" ");
                    }
                    self.tail(id, in_cell, in_item);
                    if last_in_item && !in_cell {
                        self.out.push('\n');
                    }
                }
            }
        }
    }
}

/// The main content of a parsed page as text: one block per line, lines
/// trimmed, empty lines left out.
pub(super) fn main_text(doc: &scraper::Html) -> String {
    let mut x = Extraction {
        t: Tree { n: Vec::new() },
        potential: vec![
            "code", "del", "head", "hi", "lb", "list", "p", "quote", "table", "td", "th", "tr",
        ],
    };
    let root = x.t.add_html(doc);
    x.clean_and_convert(root);
    let body = x.extract_content(doc, root);
    // trafilatura's rescue of a short extraction: the baseline, when it
    // finds more text
    let found = x.t.joined_len(body);
    if found < MIN_EXTRACTED_SIZE {
        let raw = x.t.add_html(doc);
        let (text, len) = x.baseline(raw);
        if len > found {
            return text;
        }
    }
    // an `lb` whose tail is only the indentation of a pruned block
    for d in x.t.descendants(body) {
        if x.t.tag(d) == "lb"
            && !has_chars(&x.t.n[d].tail)
            && !x.t.ancestors(d).any(|a| x.t.tag(a) == "code")
        {
            x.t.n[d].tail.clear();
        }
    }
    let mut w = Writer {
        t: &x.t,
        out: String::new(),
    };
    for c in x.t.kids(body) {
        w.element(c);
    }
    w.out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_edits_keep_lxml_text_and_tail_semantics() {
        let doc = scraper::Html::parse_document(
            "<html><body><div>a <b>bold</b> c<i>it</i>\u{a0} d <p> x  y </p>tail</div></body></html>",
        );
        let mut t = Tree { n: Vec::new() };
        let root = t.add_html(&doc);
        let all = t.iter(root);
        for &id in &all {
            assert_eq!(t.collapsed_len(id), chars(&trim(&t.text_content(id))));
        }
        let find =
            |t: &Tree, tag: &str| t.iter(root).into_iter().find(|&d| t.tag(d) == tag).unwrap();
        let div = find(&t, "div");
        let before = t.text_content(div);
        // unwrapping keeps the text in place
        let b = find(&t, "b");
        t.strip(b);
        assert_eq!(t.text_content(div), before);
        assert_eq!(t.n[div].text, "a bold c");
        // deleting with the tail keeps it, without drops it
        let i = find(&t, "i");
        t.delete(i, true);
        assert_eq!(t.text_content(div), before.replace("it", ""));
        let p = find(&t, "p");
        t.delete(p, false);
        assert_eq!(trim(&t.text_content(div)), "a bold c d");
        // a copy is detached and equal in text
        let copy = t.deep_copy(div);
        assert_eq!(t.text_content(copy), t.text_content(div));
        assert!(t.n[copy].parent.is_none());
    }
}
