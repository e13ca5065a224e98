#!/usr/bin/env python3
"""Write the bundled crawl sample in data/crawl/ (deterministic; no third-party text).

    python3 scripts/make_crawl_sample.py

Outputs:
  data/crawl/sample.warc.wet.gz  Common Crawl WET framing, gzip (multi-member)
  data/crawl/sample.jsonl        C4-style JSON lines (text, url, timestamp)
  data/crawl-expected.json       which page should meet which rule

Every C4 rule is triggered at least once; the other pages are ordinary
English prose written for this project, so most of them survive cleaning.
"""
import gzip
import hashlib
import json
import os
import random

OUT = os.path.join(os.path.dirname(__file__), "..", "data", "crawl")

SENTENCES = [
    "The river rose slowly through the night and reached the old stone bridge by morning.",
    "Farmers in the valley had moved their cattle to higher ground two days earlier.",
    "A small bakery on the corner opened its doors at six, as it has done for forty years.",
    "The city council voted to repair the library roof before the winter rains arrive.",
    "Students from the technical college built a weather station on the school roof.",
    "Their measurements are shared every hour on a public noticeboard in the town square.",
    "The museum will show a collection of maps drawn by sailors in the eighteenth century.",
    "Most of the maps were donated by a family that kept them in an attic for generations.",
    "Cycling to work has become more popular since the new lanes were painted last spring.",
    "The mayor said that the number of cyclists doubled within a single year.",
    "Local bees produce a dark honey that tastes faintly of chestnut and heather.",
    "Beekeepers meet on the first Monday of every month to compare their notes.",
    "The orchestra rehearsed the symphony for three weeks before the opening concert.",
    "Tickets for the first night were sold out within an hour of going on sale.",
    "A new ferry now links the two islands, cutting the journey to twenty minutes.",
    "Fishermen welcomed the change because they can now sell their catch on both shores.",
    "The hospital opened a children's ward with bright murals painted by local artists.",
    "Nurses say the colourful walls help young patients feel calmer during long stays.",
    "Engineers tested the wind turbines on the ridge during the storm last week.",
    "All twelve machines kept turning and none of them needed repair afterwards.",
    "The village school celebrated its hundredth birthday with a picnic on the green.",
    "Former pupils travelled from across the country to share stories of their teachers.",
    "A rare owl was seen nesting in the church tower for the first time in decades.",
    "Bird watchers have agreed to keep the exact location quiet to protect the chicks.",
    "The old railway line will be turned into a walking path through the forest.",
    "Volunteers have already cleared most of the brambles from the first two miles.",
    "Rainfall this summer was well below the average of the past thirty years.",
    "Gardeners have been asked to collect rainwater in barrels whenever they can.",
    "The chess club won the regional tournament after a tense final round.",
    "Their youngest player, who is only eleven, won four of her five games.",
    "A bookshop that closed during the recession has reopened under new owners.",
    "They plan to host readings by local writers on Thursday evenings.",
    "The harbour wall was rebuilt with granite taken from the original quarry.",
    "Divers found the remains of a wooden ship while surveying the seabed.",
    "Archaeologists believe the ship sank during a storm about three hundred years ago.",
    "The finds will be cleaned and put on display at the maritime museum next year.",
    "Bus services on weekends will run every half hour from the start of next month.",
    "Passengers had complained that the old timetable left them waiting in the cold.",
    "The bakery's famous rye bread uses a starter that is older than the building.",
    "Visitors often ask for the recipe, but the owners have never written it down.",
    "A community garden has been planted on land that was once a car park.",
    "Neighbours grow beans, potatoes and herbs, and share the harvest each autumn.",
    "The observatory on the hill will open to the public on clear Friday nights.",
    "Astronomers will guide visitors through the planets visible in the evening sky.",
    "The bridge over the estuary was painted a deep green to match the original colour.",
    "Painters worked from hanging platforms for most of the summer to finish the job.",
    "The town's oldest resident turned one hundred and five on Saturday.",
    "She says the secret of a long life is a daily walk and a good sense of humour.",
    "Heavy snow closed the mountain pass for two days in the middle of February.",
    "Road crews worked through the night to clear the drifts and reopen the road.",
    "A survey found that most residents would like more trees planted along the main street.",
    "The council has promised to plant two hundred saplings before the end of the year.",
    "The choir recorded an album of folk songs collected from villages in the region.",
    "Profits from the album will pay for new instruments for the primary school.",
    "Local firefighters rescued a kitten that had climbed to the top of a tall pine.",
    "The kitten was returned to its owners, who had been searching for it all afternoon.",
    "A robotics team from the high school qualified for the national championship.",
    "Their robot sorts recycling by colour and shape faster than any of its rivals.",
    "The annual apple fair drew more than five thousand visitors over the weekend.",
    "Growers displayed over eighty varieties, many of them rarely seen in shops.",
]

TOPIC_TITLES = ["Town news", "Weekend update", "Community notes", "Around the valley"]


def good_page(rng, n_lines, used_pairs):
    lines = []
    while len(lines) < n_lines:
        a, b = rng.sample(range(len(SENTENCES)), 2)
        if (a, b) in used_pairs:
            continue
        used_pairs.add((a, b))
        lines.append(SENTENCES[a] + " " + SENTENCES[b])
    return lines


def wet_record(url, date, text):
    body = text.encode("utf-8")
    head = (
        "WARC/1.0\r\n"
        "WARC-Type: conversion\r\n"
        f"WARC-Target-URI: {url}\r\n"
        f"WARC-Date: {date}\r\n"
        f"WARC-Record-ID: <urn:uuid:{hashlib.md5(url.encode() + date.encode()).hexdigest()}>\r\n"
        "Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("utf-8")
    return head + body + b"\r\n\r\n"


def main():
    rng = random.Random(20261126)
    used = set()
    os.makedirs(OUT, exist_ok=True)
    pages = []  # (url, date, text, expected)

    def add(url, date, lines, expect):
        pages.append((url, date, "\n".join(lines), expect))

    menu = ["Home", "About us", "Contact", "Subscribe to our newsletter"]
    for i in range(20):
        lines = [rng.choice(TOPIC_TITLES)] + good_page(rng, 4, used) + menu
        add(f"http://www.example.org/news/story-{i}", f"2019-04-{10 + i % 18:02d}T08:00:00Z", lines, "kept")

    g = lambda n: good_page(rng, n, used)  # noqa: E731
    add("http://example.org/rules/too-long-page", "2019-04-01T00:00:00Z",
        g(3) + ["word " * 40000], "too_long")
    add("http://example.org/rules/long-word", "2019-04-01T00:00:00Z",
        g(3) + ["This line holds a very long token " + "x" * 1001 + " and ends well."], "kept:too_long_word")
    add("http://example.org/rules/citations", "2019-04-01T00:00:00Z",
        g(3) + ["The bridge was finished in 1850.[1] It was repainted in 1990.[citation needed]"], "kept:citations")
    add("http://example.org/rules/ellipsis", "2019-04-01T00:00:00Z",
        g(3) + ["And then the story went on and on and on..."], "kept:no_endmark")
    add("http://example.org/rules/lorem", "2019-04-01T00:00:00Z",
        g(3) + ["Lorem ipsum dolor sit amet, consectetur adipiscing elit."], "lorem_ipsum")
    add("http://example.org/rules/javascript", "2019-04-01T00:00:00Z",
        g(3) + ["Please enable JavaScript in your browser to see this page."], "kept:javascript")
    add("http://example.org/rules/curly", "2019-04-01T00:00:00Z",
        g(3) + ["function show() { return the value of the counter here; }."], "curly_bracket")
    add("http://example.org/rules/policy", "2019-04-01T00:00:00Z",
        g(3) + ["By using this site you agree to our privacy policy and terms."], "kept:policy")
    add("http://example.org/rules/too-few", "2019-04-01T00:00:00Z",
        ["Short page.", "Only one real sentence is on this page today."], "too_few_sentences")
    # URL dedup: two versions of one URL; the newer one wins.
    add("https://www.example.org/rules/versioned/", "2019-03-01T00:00:00Z", g(3), "duplicate_url")
    add("http://example.org/rules/versioned?utm_source=feed", "2019-05-01T00:00:00Z", g(3), "kept:newest_url")
    # Line dedup: a page made only of lines that other pages keep.
    shared = g(2)
    add("http://example.org/rules/dup-a", "2019-04-02T00:00:00Z", shared + g(2), "kept:line_owner")
    add("http://example.org/rules/dup-b", "2019-04-02T00:00:00Z", shared + g(2), "kept:line_owner")
    # tfds gives each line to the page with the smallest md5(url): pick a URL
    # for the third page that loses to both others.
    h = lambda u: hashlib.md5(u.encode()).hexdigest()  # noqa: E731
    k = 0
    while h(f"http://example.org/rules/dup-c{k}") < max(h("http://example.org/rules/dup-a"),
                                                       h("http://example.org/rules/dup-b")):
        k += 1
    add(f"http://example.org/rules/dup-c{k}", "2019-04-02T00:00:00Z", shared, "dedup")
    add("http://example.org/rules/local-dup", "2019-04-02T00:00:00Z",
        (lambda x: x + x)(g(3)), "kept:local_duplicate")
    add("http://example.org/rules/german", "2019-04-03T00:00:00Z",
        ["Der Fluss stieg in der Nacht langsam an und erreichte am Morgen die alte Steinbrücke. "
         "Die Bauern im Tal hatten ihr Vieh schon zwei Tage vorher auf höheres Gelände gebracht.",
         "Eine kleine Bäckerei an der Ecke öffnet um sechs Uhr, wie sie es seit vierzig Jahren tut. "
         "Der Stadtrat hat beschlossen, das Dach der Bibliothek vor dem Winter zu reparieren.",
         "Studenten der Fachhochschule haben auf dem Dach der Schule eine Wetterstation gebaut. "
         "Ihre Messungen werden jede Stunde auf einer öffentlichen Tafel am Marktplatz gezeigt."],
        "language")
    add("http://example.org/rules/badword", "2019-04-03T00:00:00Z",
        g(3) + ["Someone wrote that the statue looks like a butt from the side."], "badwords")
    add("http://example.org/news/validation-635", "2019-04-04T00:00:00Z", g(4), "kept:validation")

    wet_path = os.path.join(OUT, "sample.warc.wet.gz")
    info = ("Software-Info: t5mix make_crawl_sample.py\r\nisPartOf: t5mix-sample\r\n").encode()
    warcinfo = (
        "WARC/1.0\r\nWARC-Type: warcinfo\r\nWARC-Date: 2019-04-26T19:04:32Z\r\n"
        f"WARC-Filename: sample.warc.wet.gz\r\nContent-Type: application/warc-fields\r\n"
        f"Content-Length: {len(info)}\r\n\r\n"
    ).encode() + info + b"\r\n\r\n"
    # Even pages go to the WET file (the too-long page among them: gzip keeps
    # it small), odd pages to the JSONL file.
    wet_pages = pages[0::2]
    json_pages = pages[1::2]
    with open(wet_path, "wb") as f:
        for blob in [warcinfo] + [wet_record(u, d, t) for u, d, t, _ in wet_pages]:
            # One gzip member per record, as Common Crawl does.
            f.write(gzip.compress(blob, mtime=0))
    with open(os.path.join(OUT, "sample.jsonl"), "w", encoding="utf-8") as f:
        for u, d, t, _ in json_pages:
            f.write(json.dumps({"text": t, "url": u, "timestamp": d}, ensure_ascii=False) + "\n")
    with open(os.path.join(OUT, "..", "crawl-expected.json"), "w", encoding="utf-8") as f:
        json.dump({u: e for u, _, _, e in pages}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
