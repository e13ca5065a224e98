//! Training-step benchmark: ms per step and tokens/s for the `tiny` config
//! (d_model 256, 4+4 layers, 8 heads, d_ff 1024 gated-GELU, vocab 32128,
//! batch 16, 128/32 tokens) and t5-v1_0-small (batch 8, 512/114), with
//! the time split into forward+loss, backward and optimizer.
//!
//! `cargo bench -p t5mix-trainer --bench train_step [-- tiny|small] [steps]`
//! prints the mean and median step; `RAYON_NUM_THREADS=1` for one thread,
//! `T5MIX_BENCH_DROPOUT=0.1` to train with dropout (the bar's runs: none).
//! `-- attention` times the fused attention alone (forward + backward of one
//! t5-v1_0-small encoder layer's attention, GFLOP/s of its six products).
//! For scripts/gpu-bench.sh (the side-by-side with PyTorch, same model):
//! `-- config NAME` prints a named config as HF's config.json, and
//! `-- step NAME BATCH INPUTS TARGETS STEPS [OPTIMIZER]` times that
//! configuration (dropout off) and ends with one JSON line;
//! `-- step-gpu … [OPTIMIZER] [f32|tf32|bf16]` the same with the whole step
//! on the GPU (the flat step, `device::step`: no CUDA build needed), or
//! with `cpu` for the precision the flat step's code on the CPU; with
//! `T5MIX_GPU_PROFILE=1` it also prints where the GPU's time went per
//! operation over the timed steps (`device::profile`).
//! Bar (HF transformers 5.24 / PyTorch 2.15 CPU, AdamW, this 2-core machine):
//! tiny 755 ms/step on 2 threads (1,370 on 1), t5-v1_0-small 5.2 s/step (9.4 s).

use std::time::Instant;

use dfdx::prelude::*;
use t5mix_trainer::model::{Batch, Dropout, LossConfig};
use t5mix_trainer::optim::{Optimizer, OptimizerConfig};
use t5mix_trainer::{Dev, T5Config, T5};

// as the `t5mix` binary
#[global_allocator]
static ALLOC: t5mix_trainer::ParallelZeroing = t5mix_trainer::ParallelZeroing;

fn batch(b: usize, s: usize, t: usize, seed: u64) -> Batch {
    let mut x = seed;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        2 + ((x >> 33) % 1000) as u32
    };
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = (0..b)
        .map(|_| {
            (
                (0..s).map(|_| next()).collect(),
                (0..t).map(|_| next()).collect(),
            )
        })
        .collect();
    Batch::from_pairs(&pairs, 0)
}

/// Times `steps` training steps (after one warm-up step); returns the
/// median seconds per step.
fn run(
    name: &str,
    cfg: T5Config,
    b: usize,
    s: usize,
    t: usize,
    steps: usize,
    optimizer: &str,
) -> f64 {
    // the bar's configuration: no dropout; `T5MIX_BENCH_DROPOUT=0.1` turns it on
    let dropout: f32 = std::env::var("T5MIX_BENCH_DROPOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let dev = Dev::default();
    // as `t5mix train` does; DFDX_CACHE=1 turns dfdx's allocation cache on
    t5mix_trainer::Runtime::default().install(&dev);
    if std::env::var_os("DFDX_CACHE").is_some() {
        dev.enable_cache();
    }
    let model = T5::new(cfg, &dev, Some(0));
    let mut model = model;
    let shapes: Vec<(usize, usize)> = model.params.iter().map(|p| *p.shape()).collect();
    let mut opt = Optimizer::new(OptimizerConfig::named(optimizer).unwrap(), &shapes);
    let lcfg = LossConfig::default();
    let (mut tf, mut tb, mut to) = (0.0, 0.0, 0.0);
    let mut total = 0.0;
    let mut each = Vec::with_capacity(steps);
    // as `Trainer::run`: the optimizer keeps its own copy of the weights
    let mut host: Vec<Vec<f32>> = model.params.iter().map(|p| p.as_vec()).collect();
    for step in 0..steps + 1 {
        let bt = batch(b, s, t, step as u64);
        let t0 = Instant::now();
        let mut drop = Dropout::new(dropout, 0, step as u64, 0);
        let (l, _) = model.forward_loss(&bt, &mut drop, model.new_tape(), &lcfg, 1.0);
        let t1 = Instant::now();
        let grads = model.param_grads(l.backward());
        let t2 = Instant::now();
        opt.update(&mut host, &grads, 1e-3);
        model.set_params(&host);
        let t3 = Instant::now();
        if step > 0 {
            // the first step warms allocations up
            tf += (t1 - t0).as_secs_f64();
            tb += (t2 - t1).as_secs_f64();
            to += (t3 - t2).as_secs_f64();
            total += (t3 - t0).as_secs_f64();
            each.push((t3 - t0).as_secs_f64());
        }
    }
    let n = steps as f64;
    each.sort_by(f64::total_cmp);
    let median = each.get(each.len() / 2).copied().unwrap_or(0.0);
    let tokens = (b * (s + t)) as f64;
    println!(
        "{name}: {:.0} ms/step (median {:.0}; {:.0} forward+loss, {:.0} backward, {:.0} optimizer), {:.0} tokens/s, {} threads, {optimizer}, dropout {dropout}",
        total / n * 1e3,
        median * 1e3,
        tf / n * 1e3,
        tb / n * 1e3,
        to / n * 1e3,
        tokens * n / total,
        rayon::current_num_threads()
    );
    median
}

/// Seconds per call of `f` (one warm-up call, then the mean of 10).
fn time_per_call(mut f: impl FnMut()) -> f64 {
    f();
    let reps = 10;
    let t0 = Instant::now();
    for _ in 0..reps {
        f();
    }
    t0.elapsed().as_secs_f64() / reps as f64
}

/// Prints `name: ms, GFLOP/s` for a product of `flops` taking `s` seconds.
fn report(name: &str, s: f64, flops: f64) {
    println!("{name}: {:.1} ms, {:.0} GFLOP/s", s * 1e3, flops / s / 1e9);
}

/// Times `steps` whole steps of the flat step (`device::step`: on the GPU
/// with the device optimizer, or with precision `cpu` the same code on the
/// CPU; after two warm-up steps, each step waited for); returns the median
/// seconds per step and, on a GPU, the most memory its buffers held.
fn run_flat(
    cfg: T5Config,
    (b, s, t): (usize, usize, usize),
    steps: usize,
    optimizer: &str,
    precision: &str,
) -> (f64, Option<u64>) {
    use t5mix_trainer::device::step::DeviceStep;
    let model = T5::new(cfg, &Cpu::default(), Some(0));
    let flat = model.flat_model();
    let host: Vec<Vec<f32>> = model.params.iter().map(|p| p.as_vec()).collect();
    let params = flat.layout.flatten(&host);
    drop(model);
    let opt = OptimizerConfig::named(optimizer).unwrap();
    if precision == "cpu" {
        t5mix_trainer::Runtime::default().install(&Dev::default());
        let st = DeviceStep::cpu(flat, &params, opt).expect("the flat step");
        time_flat(Box::new(st), (b, s, t), steps)
    } else {
        let st = DeviceStep::new(flat, &params, 0, (opt, precision.parse().unwrap()), true)
            .expect("a GPU");
        time_flat(Box::new(st), (b, s, t), steps)
    }
}

fn time_flat(
    mut st: Box<dyn t5mix_trainer::device::step::TrainStep>,
    (b, s, t): (usize, usize, usize),
    steps: usize,
) -> (f64, Option<u64>) {
    let lcfg = LossConfig::default();
    let mut each = Vec::with_capacity(steps);
    let mut bt = batch(b, s, t, 0);
    for step in 0..steps + 2 {
        if step == 2 {
            // (the warm-up steps left out of a profile)
            st.profile(2).expect("the profile");
        }
        // the next batch, sent while this step runs (as `t5mix train`)
        let next = batch(b, s, t, step as u64 + 1);
        let t0 = Instant::now();
        let out = st
            .step(
                (&bt, Some(&next)),
                &mut Dropout::off(),
                &lcfg,
                (1e-3, Some(1.0)),
            )
            .expect("a step");
        st.synchronize().expect("the GPU");
        let dt = t0.elapsed().as_secs_f64();
        eprintln!("step {step}: loss {:.4}, {:.1} ms", out.loss, dt * 1e3);
        if step >= 2 {
            each.push(dt);
        }
        bt = next;
    }
    if let Some(report) = st.profile(steps).expect("the profile") {
        eprintln!("{report}");
    }
    each.sort_by(f64::total_cmp);
    let median = each.get(each.len() / 2).copied().unwrap_or(0.0);
    (median, st.peak_memory().ok().flatten())
}

/// Matmul throughput of dfdx (gemm crate) on the tiny model's shapes.
fn matmuls() {
    let dev = Dev::default();
    t5mix_trainer::Runtime::default().install(&dev);
    let shapes = [
        ("ff in   [2048x256]@[256x1024]", 2048, 256, 1024),
        ("ff out  [2048x1024]@[1024x256]", 2048, 1024, 256),
        ("qkvo    [2048x256]@[256x256]", 2048, 256, 256),
        ("logits  [512x256]@[256x32128]", 512, 256, 32128),
    ];
    for (name, m, k, n) in shapes {
        let a: Tensor<(usize, usize), f32, Dev> = dev.ones_like(&(m, k));
        let b: Tensor<(usize, usize), f32, Dev> = dev.ones_like(&(k, n));
        let s = time_per_call(|| {
            let _ = a.clone().matmul(b.clone());
        });
        report(name, s, 2.0 * (m * k * n) as f64);
    }
    // weight gradients: xᵀ @ dy with x a transposed view (as in backward)
    for (name, m, k, n) in [
        ("dW ff   [256x2048]@[2048x1024]", 2048, 256, 1024),
        ("dW lm   [256x512]@[512x32128]", 512, 256, 32128),
    ] {
        let x: Tensor<(usize, usize), f32, Dev> = dev.ones_like(&(m, k));
        let dy: Tensor<(usize, usize), f32, Dev> = dev.ones_like(&(m, n));
        let s = time_per_call(|| {
            let _ = x.clone().permute::<_, Axes2<1, 0>>().matmul(dy.clone());
        });
        report(name, s, 2.0 * (m * k * n) as f64);
    }
    // the dense layer as the model called it: [16x128x256] @ W[1024x256]ᵀ
    let x: Tensor<(usize, usize, usize), f32, Dev> = dev.ones_like(&(16, 128, 256));
    let w: Tensor<(usize, usize), f32, Dev> = dev.ones_like(&(1024, 256));
    let x2: Tensor<(usize, usize), f32, Dev> = dev.ones_like(&(2048, 256));
    let f = 2.0 * (2048 * 256 * 1024) as f64;
    report(
        "dense 3-D x Wᵀ",
        time_per_call(|| {
            let _ = x.clone().matmul(w.clone().permute::<_, Axes2<1, 0>>());
        }),
        f,
    );
    report(
        "dense as one 2-D product",
        time_per_call(|| {
            let _ = x2.clone().matmul(w.clone().permute::<_, Axes2<1, 0>>());
        }),
        f,
    );
    // attention scores: 128 batched [128x32]@[32x128]
    let q: Tensor<(usize, usize, usize, usize), f32, Dev> = dev.ones_like(&(16, 8, 128, 32));
    let k: Tensor<(usize, usize, usize, usize), f32, Dev> = dev.ones_like(&(16, 8, 32, 128));
    report(
        "scores  16x8 x [128x32]@[32x128]",
        time_per_call(|| {
            let _ = q.clone().matmul(k.clone());
        }),
        2.0 * (16 * 8 * 128 * 32 * 128) as f64,
    );
}

/// The fused attention, forward and backward, on one t5-v1_0-small encoder
/// layer's shapes (batch 8, 512 tokens, 8 heads of 64, position bias).
fn attention() {
    let dev = Dev::default();
    t5mix_trainer::Runtime::default().install(&dev);
    let (b, t, h, dk) = (8, 512, 8, 64);
    let x: [Tensor<(usize, usize, usize), f32, Dev>; 3] =
        std::array::from_fn(|_| dev.sample_normal_like(&(b, t, h * dk)));
    let pos: Tensor<(usize, usize, usize), f32, Dev> = dev.sample_normal_like(&(h, t, t));
    let mask = vec![0f32; b * t * t];
    let mut call = || {
        let [q, k, v] = x.clone().map(|x| x.leaky_traced());
        let p = pos.clone().leaky_traced();
        let out = t5mix_trainer::kernels::attention_cpu(q, k, v, Some(p), &mask, None, h)
            .unwrap_or_else(|_| panic!("the fused attention runs on the CPU"));
        let _ = out.sum().backward();
    };
    let s = time_per_call(&mut call);
    // forward q·kᵀ and p·v, backward four products of the same size
    report(
        "attention fwd+bwd, 8 x 8 heads [512x64], position bias",
        s,
        6.0 * 2.0 * (b * h * t * t * dk) as f64,
    );
}

/// The JSON line scripts/gpu-bench.sh reads (with the most memory the
/// GPU step's buffers held, in GiB).
fn print_result(
    side: &str,
    name: &str,
    (b, s, t): (usize, usize, usize),
    (median, peak): (f64, Option<u64>),
) {
    let mut line = serde_json::json!({
        "side": side,
        "config": name,
        "batch": b,
        "inputs": s,
        "targets": t,
        "ms_per_step": (median * 1e5).round() / 100.0,
        "tokens_per_s": ((b * (s + t)) as f64 / median).round(),
    });
    if let Some(p) = peak {
        line["peak_gib"] = ((p as f64 / (1u64 << 30) as f64 * 1000.0).round() / 1000.0).into();
    }
    println!("{line}");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let which = args.first().map(String::as_str).unwrap_or("tiny");
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let optimizer = args.get(2).map(String::as_str).unwrap_or("adamw");
    if which == "matmul" {
        matmuls();
        return;
    }
    if which == "config" {
        let cfg = T5Config::named(args.get(1).map_or("tiny", String::as_str)).unwrap();
        println!("{}", serde_json::to_string_pretty(&cfg).unwrap());
        return;
    }
    if which == "step" || which == "step-gpu" {
        let gpu = which == "step-gpu";
        let usage =
            "step[-gpu] NAME BATCH INPUTS TARGETS STEPS [OPTIMIZER] [f32|tf32|bf16|cpu (step-gpu)]";
        let num = |i: usize| -> usize { args.get(i).and_then(|a| a.parse().ok()).expect(usage) };
        let name = args.get(1).expect(usage);
        let mut cfg = T5Config::named(name).unwrap();
        cfg.dropout_rate = 0.0;
        let (b, s, t) = (num(2), num(3), num(4));
        let optimizer = args.get(6).map_or("adamw", String::as_str);
        let (median, side) = if gpu {
            let precision = args.get(7).map_or("tf32", String::as_str);
            let median = run_flat(cfg, (b, s, t), num(5), optimizer, precision);
            let side = match precision {
                "cpu" => "cpu flat f32".to_string(),
                p => format!("gpu {p}"),
            };
            (median, side)
        } else {
            let median = run(name, cfg, b, s, t, num(5), optimizer);
            let side = if cfg!(feature = "cuda") {
                "cuda f32"
            } else {
                "cpu f32"
            };
            ((median, None), side.to_string())
        };
        print_result(&format!("t5mix {side}"), name, (b, s, t), median);
        return;
    }
    if which == "attention" {
        attention();
        return;
    }
    if which == "forward" {
        // forward passes only (no tape), to see the non-matmul share
        let dev = Dev::default();
        t5mix_trainer::Runtime::default().install(&dev);
        let model = T5::new(T5Config::named("tiny").unwrap(), &dev, Some(0));
        let bt = batch(16, 128, 32, 1);
        let _ = model.forward::<NoneTape>(&bt, &mut Dropout::off(), NoneTape);
        let t0 = Instant::now();
        for _ in 0..steps {
            let _ = model.forward::<NoneTape>(&bt, &mut Dropout::off(), NoneTape);
        }
        println!(
            "tiny forward (no tape): {:.0} ms",
            t0.elapsed().as_secs_f64() * 1e3 / steps as f64
        );
        return;
    }
    if which == "tiny-relu" {
        let mut cfg = T5Config::named("tiny").unwrap();
        cfg.feed_forward_proj = "relu".into();
        cfg.dropout_rate = 0.0;
        run("tiny with ReLU", cfg, 16, 128, 32, steps, optimizer);
    }
    if which == "tiny-smallvocab" {
        let mut cfg = T5Config::named("tiny").unwrap();
        cfg.vocab_size = 1024;
        run("tiny with vocab 1024", cfg, 16, 128, 32, steps, optimizer);
    }
    if which == "tiny" || which == "all" {
        run(
            "tiny (batch 16, 128/32)",
            T5Config::named("tiny").unwrap(),
            16,
            128,
            32,
            steps,
            optimizer,
        );
    }
    if which == "small" || which == "all" {
        let mut cfg = T5Config::named("t5-v1_0-small").unwrap();
        cfg.dropout_rate = 0.0;
        run(
            "t5-v1_0-small (batch 8, 512/114)",
            cfg,
            8,
            512,
            114,
            steps,
            optimizer,
        );
    }
}
