#!/usr/bin/env python3
"""HTML -> main text, ours against trafilatura and resiliparse, in one run.

    pip install trafilatura lxml_html_clean resiliparse
    cargo doc --no-deps && cargo build --release --example warc_text
    python3 scripts/bench-warc-extract.py [../shared/data/resiliparse-cc-warc/warcfile.warc.gz]

Pages: the response records of the shared Common Crawl WARC, a WARC this
script writes from the rustdoc HTML under target/doc (real pages with
navigation, sidebars and footers), and one of mdBook pages from the Rust
toolchain's documentation (`rustc --print sysroot`, when installed). For each page: the token-level F1
(whitespace tokens, multiset overlap) between trafilatura's text (default
settings, the reference, computed here) and ours (`--extractor main` and
`plain`), and resiliparse's `extract_plain_text(main_content=True)`, as the
median and the mean over the pages, and the median with word tokens (runs
of letters and digits: trafilatura breaks lines at some inline elements,
e.g. every link inside rustdoc's `<code>`, which whitespace tokens count as
differences); then pages/s of each over the same pages. Nothing it prints
is committed.
"""
import collections
import glob
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import time

import trafilatura
from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def rustdoc_warc(path, limit=300):
    pages = sorted(glob.glob(os.path.join(ROOT, "target/doc/**/*.html"), recursive=True))
    pages = [p for p in pages if "/src/" not in p][:limit]
    return write_warc(path, pages, os.path.join(ROOT, "target/doc"))


def mdbook_warc(path, limit=300):
    """mdBook pages of the Rust toolchain's own documentation (the book, the
    reference, Rust by Example, the nomicon, ...): every 4th page in path
    order, up to `limit`. Nobody tuned the extractor to them."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True).stdout.strip()
    html = os.path.join(sysroot, "share/doc/rust/html")
    books = ["book", "reference", "rust-by-example", "nomicon", "edition-guide", "cargo", "rustc"]
    pages = sorted(p for b in books for p in glob.glob(os.path.join(html, b, "**/*.html"), recursive=True))
    pages = [p for p in pages if os.path.getsize(p) > 2000][::4][:limit]
    return write_warc(path, pages, html) if pages else 0


def write_warc(path, pages, base):
    with gzip.open(path, "wb") as f:
        for i, p in enumerate(pages):
            body = open(p, "rb").read()
            http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body
            url = "https://docs.example/" + os.path.relpath(p, base)
            head = (
                "WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: %s\r\n"
                "WARC-Date: 2026-12-03T00:00:00Z\r\nWARC-Record-ID: <urn:uuid:%08d>\r\n"
                "Content-Type: application/http; msgtype=response\r\nContent-Length: %d\r\n\r\n"
                % (url, i, len(http))
            ).encode()
            f.write(head + http + b"\r\n\r\n")
    return len(pages)


def html_pages(path):
    out = {}
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f, record_types=WarcRecordType.response, parse_http=True):
            body = rec.reader.read()
            ctype = rec.http_headers.get("Content-Type", "") if rec.http_headers else ""
            if "html" not in ctype.lower():
                continue
            out[rec.headers.get("WARC-Target-URI")] = bytes_to_str(body, detect_encoding(body))
    return out


def f1(a, b, tokens=str.split):
    ta, tb = collections.Counter(tokens(a)), collections.Counter(tokens(b))
    if not ta and not tb:
        return 1.0
    common = sum((ta & tb).values())
    if common == 0:
        return 0.0
    p, r = common / sum(ta.values()), common / sum(tb.values())
    return 2 * p * r / (p + r)


BINARY = os.path.join(ROOT, "target/release/examples/warc_text")


def ours_seconds(extractor, html, repeat=5):
    """The seconds our extractor takes over the pages, HTML in, text out:
    the same decoded HTML strings the Python extractors get, timed by the
    binary itself (as they are timed in this process, without start-up)."""
    path = os.path.join(ROOT, "out/bench-warc/pages.jsonl")
    with open(path, "w") as f:
        for _ in range(repeat):
            for u, h in html.items():
                f.write(json.dumps({"url": u, "html": h}) + "\n")
    run = subprocess.run([BINARY, extractor, "--html", path], capture_output=True, text=True, check=True)
    return float(re.search(r"pages in ([0-9.]+) s", run.stderr).group(1)) / repeat


def ours(extractor, files):
    """Our text of each page, read from the WARC files as `t5mix clean`
    reads them (HTTP headers, charsets and all)."""
    run = subprocess.run([BINARY, extractor, *files], capture_output=True, text=True, check=True)
    pages = {}
    for line in run.stdout.splitlines():
        d = json.loads(line)
        pages[d["url"]] = d["text"]
    return pages


def main():
    shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        ROOT, "../shared/data/resiliparse-cc-warc/warcfile.warc.gz")
    docs = os.path.join(ROOT, "out/bench-warc/rustdoc.warc.gz")
    os.makedirs(os.path.dirname(docs), exist_ok=True)
    n = rustdoc_warc(docs)
    books = os.path.join(ROOT, "out/bench-warc/mdbook.warc.gz")
    m = mdbook_warc(books)
    print(f"pages: {n} rustdoc pages, {m} mdBook pages, and {shared}")
    sets = [("Common Crawl WARC", [shared]), ("rustdoc", [docs])] + ([("mdBook (Rust toolchain docs)", [books])] if m else [])
    for name, files in sets:
        html = {}
        for f in files:
            html.update(html_pages(f))
        t = time.perf_counter()
        ref = {u: trafilatura.extract(h) or "" for u, h in html.items()}
        traf_s = time.perf_counter() - t
        t = time.perf_counter()
        res = {u: extract_plain_text(h, main_content=True) for u, h in html.items()}
        res_s = time.perf_counter() - t
        main_pages, main_s = ours("main", files), ours_seconds("main", html)
        plain_pages, plain_s = ours("plain", files), ours_seconds("plain", html)
        mb = sum(len(h.encode()) for h in html.values()) / 1e6
        print(f"\n{name}: {len(html)} HTML pages, {mb:.1f} MB")
        print(f"{'token F1 vs trafilatura:':<34} {'median':>7} {'mean':>7} {'words':>7} {'pages/s':>9} {'MB/s':>7} {'speed':>7}")
        rows = [
            ("trafilatura 2.x (reference)", ref, traf_s),
            ("resiliparse main_content", res, res_s),
            ("t5mix --extractor main", main_pages, main_s),
            ("t5mix --extractor plain", plain_pages, plain_s),
        ]
        words = re.compile(r"\w+").findall
        for label, pages, secs in rows:
            scores = [f1(pages.get(u, ""), ref[u]) for u in html]
            word_scores = [f1(pages.get(u, ""), ref[u], words) for u in html]
            print(
                f"{label:<34} {statistics.median(scores):>7.3f} {statistics.mean(scores):>7.3f} "
                f"{statistics.median(word_scores):>7.3f} {len(html) / secs:>9.1f} {mb / secs:>7.2f} "
                f"{traf_s / secs:>6.1f}x"
            )
    print("\n(one thread each, HTML in and text out: the same decoded pages for each extractor; F1 of t5mix from its own WARC reading)")


if __name__ == "__main__":
    main()
