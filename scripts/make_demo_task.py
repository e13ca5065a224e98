#!/usr/bin/env python3
"""Writes the demo's supervised task, `demo_reviews` (data/demo_tasks.toml):
short made-up reviews labelled "positive" or "negative", balanced, so the
majority-class baseline is 50%. Whether a review is positive is decided by
its judgement words (one or two adjectives from two lists, among neutral
filler sentences), which a micro T5 learns in a few hundred CPU steps.

    python3 scripts/make_demo_task.py data/demo_reviews

Deterministic (Python's `random.Random` with a fixed seed; Python 3 only,
standard library only): the committed files are exactly what this writes.
"""
import json
import os
import random
import sys

SUBJECTS = [
    "the hotel", "the food", "the service", "the room", "the film", "the book",
    "the staff", "the price", "the music", "the coffee", "the city tour",
    "the beach", "the rental car", "the phone", "the game", "the show",
    "the garden", "the museum", "the train ride", "the concert", "the pizza",
    "the bakery", "the course", "the app", "the museum shop", "the guide",
]
POSITIVE = [
    "great", "wonderful", "excellent", "lovely", "amazing", "perfect",
    "friendly", "clean", "beautiful", "fantastic", "pleasant", "delicious",
    "helpful", "comfortable", "superb", "brilliant", "charming", "fun",
]
NEGATIVE = [
    "terrible", "awful", "dirty", "rude", "boring", "horrible", "poor",
    "noisy", "bad", "disappointing", "broken", "slow", "overpriced", "ugly",
    "cold", "dreadful", "messy", "useless",
]
TEMPLATES = [
    "{S} was {a}.",
    "Honestly, {s} was {a}.",
    "We thought {s} was {a} and told our friends.",
    "{S} was {a}, and {t} was {b} too.",
    "In short: {a}.",
    "I found {s} {a}.",
    "{S} felt {a} from start to finish.",
    "All in all {s} was {a}.",
]
FILLERS = [
    "We went there on a Tuesday.",
    "My sister came along.",
    "It was our second visit this year.",
    "We stayed for two nights.",
    "The weather was mild.",
    "We booked it online a week before.",
    "It is close to the station.",
    "We arrived in the afternoon.",
    "There were many people that day.",
    "I paid with a card.",
]


def review(rng, positive):
    words = POSITIVE if positive else NEGATIVE
    s, t = rng.sample(SUBJECTS, 2)
    a, b = rng.sample(words, 2)
    core = rng.choice(TEMPLATES).format(S=s.capitalize(), s=s, t=t, a=a, b=b)
    parts = [core]
    for _ in range(rng.randrange(3)):
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(FILLERS))
    return " ".join(parts)


def write(path, n, rng):
    labels = ["positive"] * (n // 2) + ["negative"] * (n - n // 2)
    rng.shuffle(labels)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, label in enumerate(labels):
            row = {"idx": i, "text": review(rng, label == "positive"), "label": label}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = random.Random(20261203)
    write(os.path.join(out, "train.jsonl"), 2000, rng)
    write(os.path.join(out, "validation.jsonl"), 200, rng)


if __name__ == "__main__":
    main()
