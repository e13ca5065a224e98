//! Gradient bookkeeping: every parameter receives a gradient, and the
//! gradients agree with finite differences of the loss.

use dfdx::prelude::*;
use t5mix_trainer::model::{loss, Batch, Dropout, LossConfig, T5};
use t5mix_trainer::Dev;

mod common;

fn loss_of(model: &T5<Dev>, b: &Batch) -> f64 {
    let logits = model.forward::<NoneTape>(b, &mut Dropout::off(), NoneTape);
    let cfg = LossConfig::default();
    let value = loss(logits, b, &cfg, 1.0).0.array();
    let fused = model.forward_loss(b, &mut Dropout::off(), NoneTape, &cfg, 1.0);
    assert!((fused.0.array() - value).abs() <= 1e-5 * value.abs());
    value as f64
}

fn check(ff: &str) {
    let mut model = common::small_model(ff, 7, Some((8, 16)));
    let b = common::two_examples();
    let tape = model.new_tape();
    // the output layer and the loss as one kernel (on the CPU)
    let (l, _) = model.forward_loss(&b, &mut Dropout::off(), tape, &LossConfig::default(), 1.0);
    let grads = model.param_grads(l.backward());
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
