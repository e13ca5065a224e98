#!/usr/bin/env python3
"""trafilatura's text (default settings) of each HTML response of a WARC, for
the extraction test (pipeline/tests/readers.rs) to compare ours with, at
test time. Prints one JSON object: {url: text}.

    python3 scripts/trafilatura_reference.py FILE.warc[.gz]

Reads the WARC itself (records framed by Content-Length, gzip members or
plain) so that it needs trafilatura alone; the HTTP body goes to
trafilatura as bytes (it finds the charset itself).
"""
import gzip
import json
import sys

import trafilatura


def records(path):
    raw = open(path, "rb").read()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    i = 0
    while True:
        start = data.find(b"WARC/", i)
        if start < 0:
            return
        end = data.find(b"\r\n\r\n", start)
        head = data[start:end].decode("utf-8", "replace").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        length = int(fields.get("content-length", "0"))
        yield fields, data[end + 4:end + 4 + length]
        i = end + 4 + length


def main():
    out = {}
    for fields, payload in records(sys.argv[1]):
        if fields.get("warc-type") != "response":
            continue
        head, _, body = payload.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or not status[1].startswith(b"2"):
            continue
        ctype = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-type:")]
        if ctype and b"html" not in ctype[0].lower():
            continue
        out[fields.get("warc-target-uri", "")] = trafilatura.extract(body) or ""
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
