#!/usr/bin/env python3
"""The reference for pipeline/tests/vocab_settings.rs, computed at test time
with Python sentencepiece (the version seqio users run: 0.2.3):

    python3 scripts/spm_reference.py TRAIN_TEXT MODEL_PREFIX LINES RANDOM [KEY=VALUE ...]

trains a unigram model on TRAIN_TEXT with SentencePieceTrainer's flags
KEY=VALUE (writes MODEL_PREFIX.model), then prints one JSON object per line:
for each line of the file LINES (split on "\\n" only) the ids of
`EncodeAsIds` and the text `DecodeIds` gives back for them, then RANDOM
sequences of ids drawn with a fixed seed (byte pieces, pieces, controls,
unknowns) and their `DecodeIds` text. Nothing it prints is committed.
"""
import json
import random
import sys

import sentencepiece as spm


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    train, prefix, lines_path, n_random = sys.argv[1:5]
    flags = dict(a.split("=", 1) for a in sys.argv[5:])
    spm.SentencePieceTrainer.train(
        input=train, model_prefix=prefix, model_type="unigram", minloglevel=2,
        num_threads=1, **flags
    )
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    with open(lines_path, encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    out = sys.stdout
    for ids in sp.encode(lines, out_type=int):
        out.write(json.dumps({"ids": ids, "text": sp.decode(ids)}, ensure_ascii=False) + "\n")
    rng = random.Random(0)
    n = sp.get_piece_size()
    bytes_ = [i for i in range(n) if sp.is_byte(i)]
    for _ in range(int(n_random)):
        seq = []
        for _ in range(rng.randrange(1, 12)):
            if bytes_ and rng.random() < 0.5:
                seq.append(rng.choice(bytes_))
            else:
                seq.append(rng.randrange(n))
        # seqio's decode stops at EOS, DecodeIds does not: none drawn
        seq = [i for i in seq if i != sp.eos_id()] or [rng.choice(bytes_ or [0])]
        out.write(json.dumps({"random": seq, "text": sp.decode(seq)}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
