#!/usr/bin/env python3
"""The reference for trainer/tests/hf_parity.rs's gradient test, computed at
test time with HF transformers + PyTorch in float32 on the CPU:

    python3 scripts/t5_grads_reference.py MODEL_DIR BATCH_JSON OUT_SAFETENSORS

loads the T5 in MODEL_DIR (`T5ForConditionalGeneration`, float32, eval mode:
no dropout), runs the batch of BATCH_JSON (`{"pairs": [[input ids, label
ids], ...]}`: inputs padded with 0 under an attention mask, labels padded
with -100, the decoder inputs transformers' shift of the labels) with its
loss (the mean cross-entropy over the real label tokens) and backward, and
writes the loss (`loss`, one value) and the gradient of every parameter
under its transformers name to OUT_SAFETENSORS. Nothing it writes is
committed.
"""
import json
import sys

import torch
from safetensors.torch import save_file
from transformers import T5ForConditionalGeneration


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model_dir, batch_path, out = sys.argv[1:]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = T5ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    pairs = json.load(open(batch_path))["pairs"]
    s = max(len(p[0]) for p in pairs)
    t = max(len(p[1]) for p in pairs)
    input_ids = torch.tensor([p[0] + [0] * (s - len(p[0])) for p in pairs])
    mask = torch.tensor([[1] * len(p[0]) + [0] * (s - len(p[0])) for p in pairs])
    labels = torch.tensor([p[1] + [-100] * (t - len(p[1])) for p in pairs])
    loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    tensors = {"loss": loss.detach().reshape(1).contiguous()}
    for name, p in model.named_parameters():
        if p.grad is not None:
            tensors[name] = p.grad.detach().contiguous()
    save_file(tensors, out)


if __name__ == "__main__":
    main()
