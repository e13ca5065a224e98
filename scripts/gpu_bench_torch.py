#!/usr/bin/env python3
"""One T5 training configuration timed in HF transformers + PyTorch, the anchor
that scripts/gpu-bench.sh sets our CUDA build against.

    python3 scripts/gpu_bench_torch.py CONFIG_JSON BATCH INPUTS TARGETS MODE [STEPS]
    python3 scripts/gpu_bench_torch.py --table RESULTS_JSONL

CONFIG_JSON: an HF T5 config.json, as t5mix writes it (`cargo bench -p
t5mix-trainer --bench train_step -- config NAME`), so both sides train the
same model. MODE: fp32 (TF32 off), tf32, bf16 (autocast, fused AdamW) or
bf16-compile (the same under torch.compile). Random token batches, AdamW
(lr 1e-3), no dropout, as the Rust bench. Prints one JSON line: median
ms/step, tokens/s, model TFLOP/s and MFU (against the GPU's dense peak for
the mode; `T5MIX_PEAK_TFLOPS` overrides it). Runs on the CPU too (a smoke
test: what it falls back to without CUDA, or with `--device=cpu`).

`--table` prints the side-by-side of the JSON lines of both sides (ours from
the train_step bench), model FLOPs counted here for both (the config files
beside RESULTS_JSONL), with our tokens/s over each PyTorch mode's.
"""
import json
import os
import statistics
import sys
import time

# dense peak TFLOP/s per mode (NVIDIA data sheets, SXM parts)
PEAKS = {
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
    "H100": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
}


def model_flops(cfg, batch, inputs, targets):
    """Matrix-product FLOPs of one training step (forward x 3): projections,
    attention scores and mixing, feed-forward and the output layer."""
    d, hk, ff = cfg["d_model"], cfg["num_heads"] * cfg["d_kv"], cfg["d_ff"]
    gated = cfg.get("feed_forward_proj", "relu").startswith("gated")
    ffn = (3 if gated else 2) * 2 * d * ff
    enc = inputs * (4 * 2 * d * hk + 2 * 2 * inputs * hk + ffn)
    dec = targets * (
        4 * 2 * d * hk  # self-attention q, k, v, o
        + 2 * 2 * targets * hk  # its scores and mixing
        + 2 * 2 * d * hk  # cross-attention q, o
        + 2 * 2 * inputs * hk  # its scores and mixing
        + ffn
    ) + inputs * 2 * 2 * d * hk  # cross-attention k, v of the encoder output
    head = targets * 2 * d * cfg["vocab_size"]
    forward = enc * cfg["num_layers"] + dec * cfg["num_decoder_layers"] + head
    return 3.0 * forward * batch


def table(results):
    rows = [json.loads(line) for line in open(results) if line.strip()]
    folder = os.path.dirname(os.path.abspath(results))
    device = next((r["device"] for r in rows if r.get("device", "cpu") != "cpu"), "cpu")
    peaks = next((p for k, p in PEAKS.items() if k in device), {})
    print(f"{device}, {time.strftime('%Y-%m-%d')}; ratio: t5mix tokens/s over PyTorch's, same precision")
    print(f"{'config':<34} {'side':<22} {'ms/step':>9} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'ratio':>6} "
          f"{'peak GiB':>8}")
    keys = []
    for r in rows:
        k = (r.get("config"), r.get("batch"), r.get("inputs"), r.get("targets"))
        if k not in keys:
            keys.append(k)
    for k in keys:
        group = [r for r in rows if (r.get("config"), r.get("batch"), r.get("inputs"), r.get("targets")) == k]
        cfg = json.load(open(os.path.join(folder, f"{k[0]}.json")))
        ok = [r for r in group if "error" not in r]
        # each row against the other side's row of the same precision
        same = {"fp32": "f32", "f32": "fp32", "tf32": "tf32", "bf16": "bf16", "bf16-compile": "bf16"}

        def other(r):
            mine, want = r["side"].split()[0], same.get(r["side"].split()[-1])
            return next((o for o in ok if o["side"].split()[0] != mine and o["side"].split()[-1] == want
                         and not (mine == "t5mix" and o["side"].endswith("compile"))), None)
        label = f"{k[0]} b{k[1]} {k[2]}/{k[3]}"
        for r in group:
            if "error" in r:
                print(f"{label:<34} {r['side']:<22} {r['error']}")
                continue
            flops = model_flops(cfg, r["batch"], r["inputs"], r["targets"])
            tflops = flops / (r["ms_per_step"] / 1e3) / 1e12
            mode = r["side"].split()[-1]
            peak = peaks.get("bf16" if mode.startswith("bf16") else "tf32" if mode == "tf32" else "fp32")
            mfu = f"{tflops / peak:.1%}" if peak else "-"
            o = other(r)
            ours, theirs = (r, o) if r["side"].startswith("t5mix") else (o, r)
            ratio = f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}" if o else "-"
            mem = f"{r['peak_gib']:.2f}" if r.get("peak_gib") is not None else "-"
            print(f"{label:<34} {r['side']:<22} {r['ms_per_step']:>9.1f} {r['tokens_per_s']:>10.0f} "
                  f"{tflops:>8.1f} {mfu:>6} {ratio:>6} {mem:>8}")


def main():
    if sys.argv[1:2] == ["--table"]:
        table(sys.argv[2])
        return
    import torch  # here: --table needs neither
    import transformers

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) < 5:
        sys.exit(__doc__)
    path, batch, inputs, targets, mode = args[:5]
    steps = int(args[5]) if len(args) > 5 else 20
    batch, inputs, targets = int(batch), int(inputs), int(targets)
    if mode not in ("fp32", "tf32", "bf16", "bf16-compile"):
        sys.exit(f"unknown mode {mode!r}: fp32, tf32, bf16 or bf16-compile")
    device = "cuda" if torch.cuda.is_available() and "--device=cpu" not in sys.argv else "cpu"
    cfg = json.load(open(path))
    torch.backends.cuda.matmul.allow_tf32 = mode != "fp32"
    torch.backends.cudnn.allow_tf32 = mode != "fp32"
    torch.manual_seed(0)
    hf = transformers.T5Config(**{**cfg, "dropout_rate": 0.0})
    model = transformers.T5ForConditionalGeneration(hf).to(device).train()
    fused = device == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=fused)
    bf16 = mode.startswith("bf16")
    step_model = torch.compile(model) if mode == "bf16-compile" else model
    gen = torch.Generator().manual_seed(1)

    def batch_of():
        ids = torch.randint(2, 1002, (batch, inputs), generator=gen)
        labels = torch.randint(2, 1002, (batch, targets), generator=gen)
        return ids.to(device), labels.to(device)

    def step(ids, labels):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = step_model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    warmup = 3 if mode != "bf16-compile" else 6
    for _ in range(warmup):
        step(*batch_of())
    sync()
    times = []
    for _ in range(steps):
        ids, labels = batch_of()
        t0 = time.perf_counter()
        step(ids, labels)
        sync()
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    flops = model_flops(cfg, batch, inputs, targets)
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = next((p for k, p in PEAKS.items() if k in gpu), None)
    peak = float(os.environ.get("T5MIX_PEAK_TFLOPS", 0)) or (
        peak and peak["bf16" if bf16 else mode]
    )
    tflops = flops / (ms / 1e3) / 1e12
    print(json.dumps({
        "side": f"pytorch {mode}",
        "config": os.path.basename(path).removesuffix(".json"),
        "device": gpu,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "batch": batch,
        "inputs": inputs,
        "targets": targets,
        "ms_per_step": round(ms, 2),
        "tokens_per_s": round(batch * (inputs + targets) / (ms / 1e3)),
        "model_tflops": round(tflops, 2),
        "mfu": round(tflops / peak, 4) if peak else None,
        # the most memory the caching allocator's tensors held (ours: the
        # memory pool's high-water mark)
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if device == "cuda" else None,
    }))


if __name__ == "__main__":
    main()
