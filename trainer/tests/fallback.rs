//! The fused CPU kernels and the dfdx compositions that other devices (CUDA)
//! run give the same losses, logits and gradients. Its own test binary: the
//! switch is process-wide.

use dfdx::prelude::*;
use t5mix_trainer::model::{loss, Dropout, LossConfig, T5};
use t5mix_trainer::{Dev, Runtime};

mod common;

/// Loss, logits and gradients with the fused kernels on or off; the loss
/// through `forward_loss` (on the CPU: output layer and loss in one kernel)
/// or through `loss` of `forward`'s logits.
fn run(
    m: &T5<Dev>,
    fused: bool,
    smoothing: f32,
    one_kernel: bool,
    dropout: f32,
) -> (f32, Vec<f32>, Vec<Vec<f32>>) {
    let runtime = |fused_kernels| Runtime {
        fused_kernels,
        reuse_memory: false,
        flush_denormals: true,
    };
    runtime(fused).install(m.device());
    let b = common::two_examples();
    let cfg = LossConfig {
        label_smoothing: smoothing,
        ..LossConfig::default()
    };
    let logits = m
        .forward::<NoneTape>(&b, &mut Dropout::off(), NoneTape)
        .as_vec();
    // the same dropout masks in both runs (seed, step, micro-batch)
    let mut drop = Dropout::new(dropout, 7, 3, 0);
    let (l, _) = if one_kernel {
        m.forward_loss(&b, &mut drop, m.new_tape(), &cfg, 1.0)
    } else {
        let out = m.forward(&b, &mut drop, m.new_tape());
        loss(out, &b, &cfg, 1.0)
    };
    let value = l.retaped::<NoneTape>().as_vec()[0];
    let grads = m.param_grads(l.backward());
    runtime(true).install(m.device());
    (value, logits, grads)
}

#[test]
fn fused_kernels_equal_the_dfdx_compositions() {
    for ff in ["gated-gelu", "relu"] {
        let m = common::small_model(ff, 3, None);
        for (smoothing, one_kernel, dropout) in [
            (0.0, false, 0.0),
            (0.1, false, 0.0),
            (0.0, true, 0.0),
            (0.1, true, 0.0),
            (0.0, true, 0.2),
            (0.1, false, 0.2),
        ] {
            let (l1, x1, g1) = run(&m, true, smoothing, one_kernel, dropout);
            let (l0, x0, g0) = run(&m, false, smoothing, one_kernel, dropout);
            assert!(
                (l1 - l0).abs() <= 1e-5 * l0.abs(),
                "{ff} {one_kernel} {dropout}: loss {l1} vs {l0}"
            );
            let dx = t5mix_trainer::max_abs_diff(&x1, &x0);
            assert!(dx < 1e-5, "{ff}: logits differ by {dx}");
            for ((a, b), pi) in g1.iter().zip(&g0).zip(m.param_info()) {
                let scale = b.iter().fold(0f32, |s, x| s.max(x.abs())).max(1e-3);
                let d = t5mix_trainer::max_abs_diff(a, b);
                assert!(
                    d <= 1e-4 * scale,
                    "{ff} {one_kernel} {dropout} {}: gradients differ by {d} (scale {scale})",
                    pi.name
                );
            }
        }
    }
}
