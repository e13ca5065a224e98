//! Gradient bookkeeping: every parameter receives a gradient, and the
//! gradients agree with finite differences of the loss.

use dfdx::prelude::*;
use t5mix_trainer::model::{loss, Batch, Dropout, LossConfig, T5};
use t5mix_trainer::{Dev, T5Config};

fn small(ff: &str) -> T5<Dev> {
    let mut cfg = T5Config::named("micro").unwrap();
    cfg.vocab_size = 96;
    cfg.d_model = 16;
    cfg.d_kv = 4;
    cfg.d_ff = 24;
    cfg.num_heads = 2;
    cfg.feed_forward_proj = ff.into();
    cfg.tie_word_embeddings = ff == "relu";
    cfg.relative_attention_num_buckets = 8;
    cfg.relative_attention_max_distance = 16;
    T5::new(cfg, &Dev::default(), Some(7))
}

fn batch() -> Batch {
    Batch::from_pairs(
        &[
            (vec![5, 9, 11, 40, 2, 77, 1], vec![8, 3, 1]),
            (vec![21, 13, 1], vec![4, 50, 61, 1]),
        ],
        0,
    )
}

fn loss_of(model: &T5<Dev>, b: &Batch) -> f64 {
    let logits = model.forward::<NoneTape>(b, &mut Dropout::off(), NoneTape);
    loss(logits, b, &LossConfig::default(), 1.0).0.array() as f64
}

fn check(ff: &str) {
    let mut model = small(ff);
    let b = batch();
    let tape = model.new_tape();
    let logits = model.forward(&b, &mut Dropout::off(), tape);
    let (l, _) = loss(logits, &b, &LossConfig::default(), 1.0);
    let grads = model.param_grads(&l.backward());
    for (pi, g) in model.param_info().iter().zip(&grads) {
        let max = g.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.0, "{ff}: parameter {} gets no gradient", pi.name);
    }
    // finite differences on the largest entries of each parameter
    // small steps: ReLU kinks must not fall inside the difference
    let h = if ff == "relu" { 2e-3f32 } else { 1e-2 };
    for (i, g) in grads.iter().enumerate() {
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &j in order.iter().take(2) {
            let mut v = model.params[i].as_vec();
            let orig = v[j];
            v[j] = orig + h;
            model.params[i].copy_from(&v);
            let up = loss_of(&model, &b);
            v[j] = orig - h;
            model.params[i].copy_from(&v);
            let down = loss_of(&model, &b);
            v[j] = orig;
            model.params[i].copy_from(&v);
            let numeric = (up - down) / (2.0 * h as f64);
            let analytic = g[j] as f64;
            let err = (numeric - analytic).abs() / analytic.abs().max(1e-1);
            assert!(
                err < 3e-2,
                "{ff}: {}[{j}]: analytic {analytic} vs numeric {numeric}",
                model.param_info()[i].name
            );
        }
    }
}

#[test]
fn gated_gelu_untied_gradients() {
    check("gated-gelu");
}

#[test]
fn relu_tied_gradients() {
    check("relu");
}
