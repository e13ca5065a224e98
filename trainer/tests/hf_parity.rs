//! Parity with HF transformers on ../shared/data/hf-t5-tiny: the loader
//! (F32 and BF16, tied and untied), position buckets, encoder and decoder
//! states, logits, losses and greedy decoding.

use dfdx::prelude::*;
use serde_json::Value;
use t5mix_pipeline::shared_data::shared_file;
use t5mix_trainer::model::{
    loss, relative_position_bucket, Batch, Dropout, LossConfig, LossNormalization,
};
use t5mix_trainer::weights::load_model;
use t5mix_trainer::{Dev, T5};
mod common;

fn f32s(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(f32s).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("not a number: {other}"),
    }
}
fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as u32)
        .collect()
}

fn load(variant: &str) -> (T5<Dev>, Value) {
    let dir = shared_file(&format!("hf-t5-tiny/{variant}"));
    let dev = Dev::default();
    let model = load_model(&dir, &dev).unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    (model, reference)
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn relative_position_buckets_match_transformers() {
    let (_, r) = load("t5-v1_0-tiny");
    let b = &r["relative_position_buckets"];
    let rel = b["relative_position"].as_array().unwrap();
    for (i, rp) in rel.iter().enumerate() {
        let rp = rp.as_i64().unwrap();
        assert_eq!(
            relative_position_bucket(rp, true, 32, 128) as i64,
            b["bidirectional_encoder"][i].as_i64().unwrap(),
            "bidirectional {rp}"
        );
        assert_eq!(
            relative_position_bucket(rp, false, 32, 128) as i64,
            b["unidirectional_decoder"][i].as_i64().unwrap(),
            "causal {rp}"
        );
    }
}

/// Checks one example or padded row against the reference values.
#[allow(clippy::too_many_arguments)]
fn check_row(
    name: &str,
    enc: &[f32],
    dec: &[f32],
    logits: &[f32],
    row: &Value,
    s_valid: usize,
    t_valid: usize,
    vocab: usize,
    probe: &[usize],
    tol_logits: f32,
) {
    let d = 64;
    let want_enc = f32s(&row["encoder_last_hidden_state"]);
    let e = t5mix_trainer::max_abs_diff(&enc[..s_valid * d], &want_enc[..s_valid * d]);
    assert!(e < 1e-5, "{name}: encoder states differ by {e}");
    let want_dec = f32s(&row["decoder_last_hidden_state"]);
    let e2 = t5mix_trainer::max_abs_diff(&dec[..t_valid * d], &want_dec[..t_valid * d]);
    assert!(e2 < 2e-5, "{name}: decoder states differ by {e2}");
    let mut worst_logit = 0f32;
    let ls = &row["logits_summary"];
    for t in 0..t_valid {
        let lrow = &logits[t * vocab..(t + 1) * vocab];
        let got: Vec<f32> = probe.iter().map(|&i| lrow[i]).collect();
        let want = f32s(&ls["probe_values"][t]);
        let e = t5mix_trainer::max_abs_diff(&got, &want);
        assert!(
            e < tol_logits,
            "{name}: position {t}: probe logits differ by {e}"
        );
        worst_logit = worst_logit.max(e);
        let argmax = (0..vocab).fold(0, |b, i| if lrow[i] > lrow[b] { i } else { b });
        assert_eq!(
            argmax as i64,
            ls["argmax"][t].as_i64().unwrap(),
            "{name}: argmax at {t}"
        );
        let m = lrow.iter().cloned().fold(f32::MIN, f32::max);
        let lse = m + lrow
            .iter()
            .map(|x| ((x - m) as f64).exp())
            .sum::<f64>()
            .ln() as f32;
        let want_lse = ls["logsumexp"][t].as_f64().unwrap() as f32;
        assert!(
            (lse - want_lse).abs() < tol_logits,
            "{name}: logsumexp at {t}: {lse} vs {want_lse}"
        );
    }
    eprintln!(
        "{name}: max |diff| encoder {e:.1e}, decoder {e2:.1e}, probe logits {worst_logit:.1e}"
    );
}

/// The reference's padded batch as (input, label) pairs, padding removed.
fn padded_pairs(r: &Value) -> Vec<(Vec<u32>, Vec<u32>)> {
    let pb = &r["padded_batch"];
    let mut pairs = Vec::new();
    for i in 0..pb["rows"].as_array().unwrap().len() {
        let inp: Vec<u32> = ids(&pb["input_ids"][i]);
        let mask = ids(&pb["attention_mask"][i]);
        let labels: Vec<i64> = pb["labels"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        let inp: Vec<u32> = inp
            .iter()
            .zip(&mask)
            .filter(|(_, &m)| m == 1)
            .map(|(&x, _)| x)
            .collect();
        let lab: Vec<u32> = labels
            .iter()
            .filter(|&&x| x >= 0)
            .map(|&x| x as u32)
            .collect();
        pairs.push((inp, lab));
    }
    pairs
}

fn parity(variant: &str, tol_logits: f32) {
    let (model, r) = load(variant);
    let vocab = model.cfg.vocab_size;
    let probe: Vec<usize> = ids(&r["probe_ids"]).iter().map(|&x| x as usize).collect();
    let lcfg = LossConfig {
        z_loss: 0.0,
        label_smoothing: 0.0,
        normalization: LossNormalization::NumRealTargetTokens,
    };
    // single examples
    for ex in r["examples"].as_array().unwrap() {
        let name = ex["name"].as_str().unwrap();
        let inp = ids(&ex["input_ids"]);
        let lab = ids(&ex["labels"]);
        let batch = Batch::from_pairs(&[(inp.clone(), lab.clone())], 0);
        let dec_in: Vec<u32> = batch.dec_inputs.iter().map(|&x| x as u32).collect();
        assert_eq!(
            dec_in,
            ids(&ex["decoder_input_ids"]),
            "{name}: decoder inputs"
        );
        let mut off = Dropout::off();
        let enc = model.encode::<NoneTape>(&batch, &mut off, NoneTape);
        let dec = model.decode::<NoneTape>(&batch, enc.clone(), &mut off);
        let logits = model.logits(dec.clone()).as_vec();
        check_row(
            name,
            &enc.as_vec(),
            &dec.as_vec(),
            &logits,
            ex,
            inp.len(),
            lab.len(),
            vocab,
            &probe,
            tol_logits,
        );
        // the full first row
        if let Some(full) = ex.get("full_logits_rows").and_then(|f| f.get("0")) {
            let e = t5mix_trainer::max_abs_diff(&logits[..vocab], &f32s(full));
            assert!(e < tol_logits, "{name}: full logits row differs by {e}");
        }
        // losses
        let lg = model.forward::<NoneTape>(&batch, &mut off, NoneTape);
        let (l, parts) = loss(lg, &batch, &lcfg, 1.0);
        let want = ex["hf_loss"].as_f64().unwrap() as f32;
        assert!(
            (l.array() - want).abs() < 1e-4,
            "{name}: loss {} vs {want}",
            l.array()
        );
        let want_sum: f64 = f32s(&ex["token_loss"]).iter().map(|&x| x as f64).sum();
        assert!(
            (parts.cross_entropy - want_sum).abs() < 1e-3,
            "{name}: summed loss"
        );
        // greedy decoding with the KV cache
        let greedy = model.greedy(&batch, 10, false);
        let mut want_greedy = ids(&ex["greedy_ids"]);
        want_greedy.remove(0);
        assert_eq!(greedy[0], want_greedy, "{name}: greedy ids");
        let gen = model.greedy(&batch, 10, true);
        let mut want_gen = ids(&ex["hf_generate_ids"]);
        want_gen.remove(0);
        assert_eq!(gen[0], want_gen, "{name}: generate ids");
    }
    // the padded batch
    let pb = &r["padded_batch"];
    let rows = pb["rows"].as_array().unwrap();
    let pairs = padded_pairs(&r);
    let batch = Batch::from_pairs(&pairs, 0);
    assert_eq!(batch.enc_len, 147);
    assert_eq!(batch.dec_len, 37);
    let mut off = Dropout::off();
    let enc = model.encode::<NoneTape>(&batch, &mut off, NoneTape);
    let dec = model.decode::<NoneTape>(&batch, enc.clone(), &mut off);
    let logits = model.logits(dec.clone()).as_vec();
    let (encv, decv) = (enc.as_vec(), dec.as_vec());
    for (i, row) in rows.iter().enumerate() {
        let (s, t) = (batch.enc_len, batch.dec_len);
        check_row(
            &format!("padded row {i}"),
            &encv[i * s * 64..(i + 1) * s * 64],
            &decv[i * t * 64..(i + 1) * t * 64],
            &logits[i * t * vocab..(i + 1) * t * vocab],
            row,
            pairs[i].0.len(),
            pairs[i].1.len(),
            vocab,
            &probe,
            tol_logits,
        );
    }
    let lg = model.forward::<NoneTape>(&batch, &mut off, NoneTape);
    let (l, _) = loss(lg, &batch, &lcfg, 1.0);
    let want = pb["hf_loss"].as_f64().unwrap() as f32;
    assert!(
        (l.array() - want).abs() < 1e-4,
        "padded batch loss {} vs {want}",
        l.array()
    );
    let greedy = model.greedy(&batch, 10, true);
    for (i, row) in rows.iter().enumerate() {
        let mut want = ids(&row["hf_generate_ids"]);
        want.remove(0);
        assert_eq!(greedy[i], want, "padded row {i}: batched generate ids");
    }
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn v1_0_tied_f32_matches_transformers() {
    parity("t5-v1_0-tiny", 1e-5);
}

#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn v1_1_untied_bf16_matches_transformers() {
    parity("t5-v1_1-tiny", 1e-4);
}

/// What we save is an HF folder again: same names, shapes, values and
/// tying; loading it back gives the same outputs.
#[test]
#[cfg_attr(
    not(t5mix_shared_data),
    ignore = "needs ../shared/data (or T5MIX_SHARED_DATA)"
)]
fn saved_checkpoints_round_trip_in_hf_layout() {
    use t5mix_trainer::weights::{read_safetensors, save_model};
    for variant in ["t5-v1_0-tiny", "t5-v1_1-tiny"] {
        let (model, _) = load(variant);
        let dir = tempfile::tempdir().unwrap();
        save_model(&model, dir.path()).unwrap();
        let src = shared_file(&format!("hf-t5-tiny/{variant}"));
        let theirs = read_safetensors(&src.join("model.safetensors")).unwrap();
        let ours = read_safetensors(&dir.path().join("model.safetensors")).unwrap();
        let mut a: Vec<&String> = theirs.keys().collect();
        let mut b: Vec<&String> = ours.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{variant}: tensor names");
        for (k, (shape, v)) in &theirs {
            assert_eq!(&ours[k].0, shape, "{variant} {k}");
            assert_eq!(&ours[k].1, v, "{variant} {k}: widened values");
        }
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        let tied = variant == "t5-v1_0-tiny";
        assert_eq!(cfg["tie_word_embeddings"], tied);
        assert_eq!(cfg["scale_decoder_outputs"], tied);
        assert_eq!(cfg["model_type"], "t5");
        let back = load_model(dir.path(), &Dev::default()).unwrap();
        let batch = Batch::from_pairs(&[(vec![37, 32099, 10681, 1], vec![32099, 5295, 1])], 0);
        let x = model
            .forward::<NoneTape>(&batch, &mut Dropout::off(), NoneTape)
            .as_vec();
        let y = back
            .forward::<NoneTape>(&batch, &mut Dropout::off(), NoneTape)
            .as_vec();
        assert_eq!(x, y, "{variant}: outputs after the round trip");
    }
}

/// The loss and every parameter's gradient that HF transformers + PyTorch
/// compute (f32, CPU) for `pairs` on the model in `dir`, at test time
/// (scripts/t5_grads_reference.py).
fn transformers_gradients(
    dir: &std::path::Path,
    pairs: &[(Vec<u32>, Vec<u32>)],
) -> t5mix_trainer::weights::NamedTensors {
    let tmp = tempfile::tempdir().unwrap();
    let batch = tmp.path().join("batch.json");
    let out = tmp.path().join("grads.safetensors");
    std::fs::write(&batch, serde_json::json!({ "pairs": pairs }).to_string()).unwrap();
    // the checkout this was built from, else (a binary carried to the
    // device machine) the one it runs in
    let built = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/t5_grads_reference.py"
    );
    let script = if std::path::Path::new(built).is_file() {
        built
    } else {
        "scripts/t5_grads_reference.py"
    };
    let run = std::process::Command::new("python3")
        .arg(script)
        .args([dir, &batch, &out])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    t5mix_trainer::weights::read_safetensors(&out).unwrap()
}

/// `got` (loss, gradients in the model's parameter order) against
/// transformers': the loss within `tol` of it (relative), each gradient
/// within `tol` of its parameter's largest (and every parameter there) —
/// or, for `rounded` products (TF32, bf16), each parameter's gradient
/// within `tol` in relative L2 error (single values move further: a
/// ReLU's input near 0 crossing it).
fn check_gradients(
    case: &str,
    model: &T5<Dev>,
    (loss, grads): (f32, &[Vec<f32>]),
    want: &t5mix_trainer::weights::NamedTensors,
    tol: f32,
    rounded: bool,
) -> f32 {
    let want_loss = want["loss"].1[0];
    assert!(
        (loss - want_loss).abs() <= tol * want_loss.abs(),
        "{case}: loss {loss} vs transformers' {want_loss}"
    );
    let mut worst_rel = 0f32;
    for (info, g) in model.param_info().iter().zip(grads) {
        let w = &want
            .get(&info.name)
            .unwrap_or_else(|| panic!("{case}: transformers has no gradient for {}", info.name))
            .1;
        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(scale > 0.0, "{case}: {} has a gradient", info.name);
        let worst = if rounded {
            t5mix_trainer::relative_l2_error(g, w) as f32
        } else {
            t5mix_trainer::max_abs_diff(g, w) / scale
        };
        assert!(
            worst <= tol,
            "{case}: {}: error {worst} ({})",
            info.name,
            if rounded {
                "relative L2"
            } else {
                "of the largest"
            }
        );
        worst_rel = worst_rel.max(worst);
    }
    assert_eq!(grads.len(), want.len() - 1, "{case}: parameters");
    worst_rel
}

/// The loss of `pairs` and its gradient by the flat step on `be` (the
/// GPU's code path), in the model's parameter order.
fn flat_gradients<B: t5mix_trainer::device::backend::Backend>(
    be: &B,
    model: &T5<Dev>,
    batch: &Batch,
) -> (f32, Vec<Vec<f32>>) {
    let flat = model.flat_model();
    let host: Vec<Vec<f32>> = model.params.iter().map(|p| p.as_vec()).collect();
    let params = be.upload(&flat.layout.flatten(&host)).unwrap();
    let mut grads = be.zeros(flat.layout.len).unwrap();
    let out = flat
        .loss_and_grads(
            be,
            &params,
            &mut grads,
            batch,
            &mut Dropout::off(),
            &MEAN_CE,
            1.0,
        )
        .unwrap();
    let grads = be.download(&grads).unwrap();
    (out.loss, flat.layout.split(&grads))
}

/// transformers' loss: the mean cross-entropy over real label tokens.
const MEAN_CE: LossConfig = LossConfig {
    z_loss: 0.0,
    label_smoothing: 0.0,
    normalization: LossNormalization::NumRealTargetTokens,
};

/// The loss and gradients of the reference's padded batch (3 rows,
/// 147/37 tokens) against transformers', computed at test time: the dfdx
/// model's and the flat step's (on the CPU), tied (v1.0) and untied
/// gated (v1.1), within 1e-4.
#[test]
#[cfg_attr(
    not(all(t5mix_shared_data, t5mix_py_transformers, t5mix_py_torch)),
    ignore = "needs ../shared/data and python3 with torch and transformers 5.24.0"
)]
fn gradients_match_transformers() {
    for variant in ["t5-v1_0-tiny", "t5-v1_1-tiny"] {
        let (model, r) = load(variant);
        let pairs = padded_pairs(&r);
        let want = transformers_gradients(&shared_file(&format!("hf-t5-tiny/{variant}")), &pairs);
        let batch = Batch::from_pairs(&pairs, 0);
        let (l, _) =
            model.forward_loss(&batch, &mut Dropout::off(), model.new_tape(), &MEAN_CE, 1.0);
        let loss = l.array();
        let grads = model.param_grads(l.backward());
        let worst = check_gradients(
            &format!("{variant} model"),
            &model,
            (loss, &grads),
            &want,
            1e-4,
            false,
        );
        eprintln!("{variant}: the model's worst gradient error {worst:e} of the largest");
        let got = flat_gradients(&t5mix_trainer::device::backend::CpuBackend, &model, &batch);
        let worst = check_gradients(
            &format!("{variant} flat step"),
            &model,
            (got.0, &got.1),
            &want,
            1e-4,
            false,
        );
        eprintln!("{variant}: the flat step's worst gradient error {worst:e} of the largest");
    }
}

/// The same on the GPU: the flat step in f32 (TF32 off) within 1e-4 of
/// transformers; with rounded products each parameter's gradient within
/// a relative L2 error of 5e-2 (TF32: 10 mantissa bits in the operands)
/// or 1e-1 (bf16: 7 bits), f32 sums. The rounding's share, measured with
/// the CPU stand-in's emulated TF32 and bf16 (2026-12-04): v1.1 (gated
/// GELU) at most 1.9e-3 (TF32) and 1.4e-2 (bf16), as the bits predict;
/// v1.0 at most 2.6e-2 and 4.4e-2, its ReLU inputs near 0 crossing over.
#[test]
#[cfg_attr(
    not(all(
        any(t5mix_gpu, t5mix_cuda_standin),
        t5mix_shared_data,
        t5mix_py_transformers,
        t5mix_py_torch
    )),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA), ../shared/data \
              and python3 with torch and transformers 5.24.0"
)]
fn gradients_on_the_gpu_match_transformers() {
    common::gpu();
    use t5mix_trainer::device::cuda_backend::CudaBackend;
    use t5mix_trainer::device::products::Precision;
    let ctx = t5mix_trainer::device::gpu_context(0).unwrap();
    for variant in ["t5-v1_0-tiny", "t5-v1_1-tiny"] {
        let (model, r) = load(variant);
        let pairs = padded_pairs(&r);
        let want = transformers_gradients(&shared_file(&format!("hf-t5-tiny/{variant}")), &pairs);
        let batch = Batch::from_pairs(&pairs, 0);
        for (precision, tol) in [
            (Precision::F32, 1e-4),
            (Precision::Tf32, 5e-2),
            (Precision::Bf16, 1e-1),
        ] {
            let be = CudaBackend::new(ctx.default_stream(), precision, true).unwrap();
            let got = flat_gradients(&be, &model, &batch);
            let case = format!("{variant} GPU {precision}");
            let rounded = precision != Precision::F32;
            let worst = check_gradients(&case, &model, (got.0, &got.1), &want, tol, rounded);
            let how = if rounded {
                "relative L2"
            } else {
                "of the largest"
            };
            eprintln!("{case}: worst gradient error {worst:e} ({how})");
        }
    }
}
