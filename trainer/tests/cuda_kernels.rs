//! The CUDA kernels compile with NVRTC on any machine (no GPU needed), so
//! a kernel that does not compile fails here, in CI. Running them and
//! checking them against their CPU twin (`trainer::device::twin`) needs the
//! device machine (`cfg(t5mix_gpu)`, or `--include-ignored` there).

use t5mix_trainer::device::twin::{self, FlatLayout};
use t5mix_trainer::device::{compile, KERNEL_FILES, LOSS};
use t5mix_trainer::optim::{Optimizer, OptimizerConfig};
mod common;

#[test]
#[cfg_attr(
    not(t5mix_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.88"
)]
fn kernels_compile_with_nvrtc_for_sm90() {
    common::gpu();
    for (file, flush_denormals) in KERNEL_FILES
        .into_iter()
        .flat_map(|f| [(f, true), (f, false)])
    {
        // the loss's f64 log comes from libdevice, which uses fma itself
        let library_fma = file.name == LOSS.name;
        let kernels = file.kernels;
        let c = file.compile("sm_90", flush_denormals).unwrap();
        assert!(c.cubin.starts_with(b"\x7fELF"), "a CUBIN is an ELF file");
        assert!(c.ptx.contains(".target sm_90"), "{}", &c.ptx[..400]);
        // every entry point listed, and only those
        for k in kernels {
            assert!(
                c.ptx.contains(&format!(".entry {k}(")),
                "{}: {k} missing",
                file.name
            );
        }
        assert_eq!(c.ptx.matches(".entry ").count(), kernels.len());
        // products and sums round as on the CPU: no fused multiply-add in
        // our f32 formulas (nor anywhere, but for library calls)
        assert!(
            !c.ptx.contains("fma.rn.f32"),
            "fused multiply-add in the PTX"
        );
        assert!(
            library_fma || !c.ptx.contains("fma.rn"),
            "fused multiply-add in the PTX"
        );
        // subnormals flushed in our f32 arithmetic as asked (libdevice's
        // f64 log has an ftz reciprocal of its own)
        assert_eq!(c.ptx.contains(".ftz.f32"), flush_denormals, "{}", file.name);
    }
}

#[test]
#[cfg_attr(
    not(t5mix_nvrtc),
    ignore = "needs NVRTC: pip install nvidia-cuda-nvrtc==13.0.88"
)]
fn a_kernel_that_does_not_compile_is_an_error_with_the_compiler_log() {
    common::gpu();
    let src = "extern \"C\" __global__ void k(float* x) { x[0] = undefined_thing(); }";
    let err = compile("bad.cu", src, "sm_90", true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.cu") && err.contains("undefined_thing"),
        "{err}"
    );
}

/// Room for a bf16 copy that a kernel writes with its output: `n` values
/// of a NaN no rounding of the tests' values gives; `values_read` false:
/// the kernel leaves the f32 values unwritten.
fn room(
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    n: usize,
    values_read: bool,
) -> t5mix_trainer::device::Bf16Copy {
    t5mix_trainer::device::Bf16Copy {
        bits: stream.clone_htod(&vec![0xffffu16; n]).unwrap(),
        values_read,
    }
}

/// Whether `ready` holds the bf16 bits of `v`, rounded as `half` rounds
/// (the kernels' `put`, the operands of the bf16 products).
fn ready_of(ready: &[u16], v: &[f32]) -> bool {
    ready.len() == v.len()
        && ready
            .iter()
            .zip(v)
            .all(|(r, v)| *r == half::bf16::from_f32(*v).to_bits())
}

/// Values in [-scale/2, scale/2) from a fixed sequence.
fn values(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn optimizer_on_the_gpu_equals_its_cpu_twin_bit_for_bit() {
    common::gpu();
    use t5mix_trainer::device::optimizer::DeviceOptimizer;
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    // factored both ways, unfactored, and a tensor past one grid's stride
    let shapes = [(300, 1100), (1100, 256), (64, 96), (1, 512), (2048, 512)];
    let layout = FlatLayout::new(&shapes);
    for cfg in [OptimizerConfig::adamw(), OptimizerConfig::adafactor()] {
        let mut seed = 11u64;
        let mut cpu_p = values(&mut seed, layout.len, 2.0);
        let mut cpu_states = Optimizer::new(cfg, &shapes).states;
        let mut dev_p = stream.clone_htod(&cpu_p).unwrap();
        let mut dev = DeviceOptimizer::new(stream.clone(), cfg, layout.clone(), false).unwrap();
        for step in 0..3 {
            let mut cpu_g = values(&mut seed, layout.len, 0.1);
            let mut dev_g = stream.clone_htod(&cpu_g).unwrap();
            let norm = twin::clip_global_norm(&mut cpu_g, Some(1.0));
            dev.clip_global_norm(&mut dev_g, Some(1.0)).unwrap();
            assert_eq!(
                dev.grad_norm().unwrap().to_bits(),
                norm.to_bits(),
                "{cfg:?} step {step}"
            );
            twin::update(
                cfg,
                &layout,
                &mut cpu_p,
                &cpu_g,
                &mut cpu_states,
                step,
                1e-2,
            );
            dev.update(&mut dev_p, &dev_g, 1e-2).unwrap();
        }
        let got = stream.clone_dtoh(&dev_p).unwrap();
        let differ = got
            .iter()
            .zip(&cpu_p)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "{cfg:?}: {differ} of {} weights differ",
            got.len()
        );
        assert_eq!(
            dev.states().unwrap(),
            cpu_states,
            "{cfg:?}: optimizer state"
        );
    }
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn rms_norm_on_the_gpu_equals_the_cpu_norm_bit_for_bit() {
    common::gpu();
    use t5mix_trainer::device::norm::{cpu_backward, cpu_forward, weight_blocks, DeviceNorm};
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    let norm = DeviceNorm::new(stream.clone(), false).unwrap();
    // t5-v1_1-small's width and a width with a tail past the lanes
    for (rows, d) in [(4096, 512), (150, 72)] {
        let mut seed = 5u64;
        let x = values(&mut seed, rows * d, 2.0);
        let w = values(&mut seed, d, 2.0);
        let g = values(&mut seed, rows * d, 0.1);
        let (o, inv) = cpu_forward(&x, &w, 1e-6);
        let (mut dx, mut dw) = (values(&mut seed, rows * d, 0.1), values(&mut seed, d, 0.1));
        let (dx0, dw0) = (dx.clone(), dw.clone());
        cpu_backward(&x, &g, &inv, &w, &mut dx, &mut dw);
        let up = |v: &[f32]| stream.clone_htod(v).unwrap();
        let (gx, gw, gg) = (up(&x), up(&w), up(&g));
        let (mut go, mut ginv) = (up(&vec![0.0; rows * d]), up(&vec![0.0; rows]));
        // the copy alone first (the values unwritten), then both
        let mut ready = room(&stream, rows * d, false);
        for values_read in [false, true] {
            ready.values_read = values_read;
            norm.forward(
                &gx,
                &gw,
                (&mut go, Some(&mut ready)),
                &mut ginv,
                rows,
                d,
                1e-6,
            )
            .unwrap();
            let written = stream.clone_dtoh(&go).unwrap();
            assert_eq!(written == o, values_read, "{rows}x{d}: values written");
        }
        assert!(
            ready_of(&stream.clone_dtoh(&ready.bits).unwrap(), &o),
            "bf16 copy"
        );
        let (mut gdx, mut gdw) = (up(&dx0), up(&dw0));
        let mut partials = up(&vec![0.0; weight_blocks(rows) * d]);
        norm.backward(
            &gx,
            &gg,
            &ginv,
            &gw,
            (&mut gdx, Some(&mut ready)),
            (&mut gdw, &mut partials),
            rows,
            d,
        )
        .unwrap();
        let copy = stream.clone_dtoh(&ready.bits).unwrap();
        assert!(ready_of(&copy, &dx), "input gradient's bf16 copy");
        let down = |s: &cudarc::driver::CudaSlice<f32>| stream.clone_dtoh(s).unwrap();
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same(&down(&go), &o), "{rows}x{d}: output");
        assert!(same(&down(&ginv), &inv), "{rows}x{d}: inv");
        assert!(same(&down(&gdx), &dx), "{rows}x{d}: input gradient");
        assert!(same(&down(&gdw), &dw), "{rows}x{d}: weight gradient");
    }
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn loss_on_the_gpu_equals_the_cpu_loss() {
    common::gpu();
    use t5mix_trainer::device::loss::{cpu_forward, cpu_grad_in_place, DeviceLoss, LossSettings};
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    let loss = DeviceLoss::new(stream.clone(), false).unwrap();
    // t5-v1_1's vocabulary (a tail past the lanes: 32128 = 2008 * 16, so
    // also 1000), with and without label smoothing
    for (n, v) in [(912, 32128), (40, 1000)] {
        for smoothing in [0.0, 0.1] {
            let s = LossSettings { z: 1e-4, smoothing };
            let mut seed = 13u64;
            let x = values(&mut seed, n * v, 16.0);
            let targets: Vec<usize> = (0..n).map(|i| (i * 7919) % v).collect();
            let weights: Vec<f32> = (0..n).map(|i| (i % 5 != 2) as u32 as f32).collect();
            let g_out = values(&mut seed, n, 1.0);
            let rows = cpu_forward(&x, v, &targets, &weights, s);
            let mut d = x.clone();
            cpu_grad_in_place(&mut d, v, &targets, &weights, (&g_out, &rows), s);
            let t32: Vec<u32> = targets.iter().map(|&t| t as u32).collect();
            let (gx, gt, gw) = (
                stream.clone_htod(&x).unwrap(),
                stream.clone_htod(&t32).unwrap(),
                stream.clone_htod(&weights).unwrap(),
            );
            let mut grows = stream.clone_htod(&vec![0f32; 4 * n]).unwrap();
            loss.forward(&gx, (n, v), &gt, &gw, s, &mut grows).unwrap();
            let got_rows = stream.clone_dtoh(&grows).unwrap();
            let want_rows: Vec<f32> = rows.iter().flatten().copied().collect();
            // log-sum-exp may differ in its last bit on a rounding tie
            // (CUDA's and the host's f64 log); everything else is exact
            // when it does not
            let lse_ties = (0..n)
                .filter(|&i| got_rows[4 * i + 3].to_bits() != want_rows[4 * i + 3].to_bits())
                .count();
            assert!(
                lse_ties * 100 <= n,
                "{n}x{v}: {lse_ties} rows' log-sum-exp differ"
            );
            if lse_ties == 0 {
                assert_eq!(got_rows, want_rows, "{n}x{v} smoothing {smoothing}");
                let gg = stream.clone_htod(&g_out).unwrap();
                let mut gx = gx;
                // the copy alone (the logits stay), then both
                let mut alone = room(&stream, n * v, false);
                let r = Some(&mut alone);
                loss.grad_in_place(&mut gx, r, (n, v), &gt, &gw, (&gg, &grows), s)
                    .unwrap();
                assert!(
                    same_bits(&stream.clone_dtoh(&gx).unwrap(), &x),
                    "logits kept"
                );
                let mut ready = room(&stream, n * v, true);
                let r = Some(&mut ready);
                loss.grad_in_place(&mut gx, r, (n, v), &gt, &gw, (&gg, &grows), s)
                    .unwrap();
                let got = stream.clone_dtoh(&gx).unwrap();
                let copy = stream.clone_dtoh(&ready.bits).unwrap();
                assert!(ready_of(&copy, &got), "bf16 copy");
                assert_eq!(copy, stream.clone_dtoh(&alone.bits).unwrap(), "copy alone");
                let differ = got
                    .iter()
                    .zip(&d)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(differ, 0, "{n}x{v} smoothing {smoothing}: gradient");
            }
        }
    }
}

/// Whether two runs of values are the same bit for bit.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn activations_and_dropout_masks_on_the_gpu_equal_the_cpus() {
    common::gpu();
    use t5mix_trainer::device::elementwise::DeviceElementwise;
    use t5mix_trainer::kernels::activation;
    use t5mix_trainer::Dropout;
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    let ew = DeviceElementwise::new(stream.clone(), false).unwrap();
    let up = |v: &[f32]| stream.clone_htod(v).unwrap();
    let down = |s: &cudarc::driver::CudaSlice<f32>| stream.clone_dtoh(s).unwrap();
    // masks: from the stream's start, from inside a block, a large one
    let mut drop = Dropout::new(0.1, 42, 7, 3);
    for n in [1000, 37, 3 << 20] {
        let draw = drop.draw(n);
        let mut m = up(&vec![0.0; n]);
        ew.dropout_mask(&draw, &mut m).unwrap();
        assert!(same_bits(&down(&m), &draw.values()), "mask of {n}");
    }
    // t5-v1_1-small's hidden activation at batch 8 × 512, with and without
    // dropout; a and b side by side per row, as one product makes them
    let (rows, f) = (8 * 512, 1024);
    let n = rows * f;
    let mut seed = 21u64;
    let (a, b, g) = (
        values(&mut seed, n, 8.0),
        values(&mut seed, n, 2.0),
        values(&mut seed, n, 0.1),
    );
    let ab = t5mix_trainer::device::backend::join_rows(&a, &b, f);
    let mask = drop.draw(n).values();
    // each output with its bf16 copy, or without; with the copy alone
    // (values_read false) the gated activations leave their f32 output as
    // it was (zeros; ReLU works in place and writes it anyway)
    let copy = |r: &Option<t5mix_trainer::device::Bf16Copy>, v: &[f32]| match r {
        Some(r) => ready_of(&stream.clone_dtoh(&r.bits).unwrap(), v),
        None => true,
    };
    let cases = [
        (None, None),
        (Some(&mask[..]), None),
        (None, Some(true)),
        (Some(&mask[..]), Some(false)),
    ];
    for (mask, copy_of) in cases {
        let room = |n: usize| copy_of.map(|values_read| room(&stream, n, values_read));
        let values = |v: &[f32]| match copy_of {
            Some(false) => vec![0f32; v.len()],
            _ => v.to_vec(),
        };
        let dm = mask.map(up);
        let mut h = vec![0f32; n];
        activation::gated_forward(&mut h, &a, &b, mask);
        let dab = up(&ab);
        let (mut dh, mut r) = (up(&vec![0.0; n]), room(n));
        ew.gated_forward(&dab, dm.as_ref(), (&mut dh, r.as_mut()), (rows, f))
            .unwrap();
        assert!(same_bits(&down(&dh), &values(&h)), "gated forward");
        assert!(copy(&r, &h), "gated forward, bf16 copy");
        let (mut gg, mut gl) = (g.clone(), vec![0f32; n]);
        activation::gated_backward(&mut gg, &mut gl, &a, &b, mask);
        let (mut dgrad, mut r) = (up(&vec![0.0; 2 * n]), room(2 * n));
        let dg = (&mut dgrad, r.as_mut());
        ew.gated_backward(&up(&g), &dab, dm.as_ref(), dg, (rows, f))
            .unwrap();
        let want = t5mix_trainer::device::backend::join_rows(&gg, &gl, f);
        assert!(same_bits(&down(&dgrad), &values(&want)), "gated backward");
        assert!(copy(&r, &want), "gated backward, bf16 copy");
        // ReLU (compared as values: max may give either zero's sign)
        let mut h = a.clone();
        activation::relu_forward(&mut h, mask);
        let (mut dh, mut r) = (up(&a), room(n));
        ew.relu_forward((&mut dh, r.as_mut()), dm.as_ref(), n)
            .unwrap();
        assert_eq!(down(&dh), h, "ReLU forward");
        assert!(copy(&r, &down(&dh)), "ReLU forward, bf16 copy");
        let mut gg = g.clone();
        activation::relu_backward(&mut gg, &h, mask);
        let (mut dg, mut r) = (up(&g), room(n));
        ew.relu_backward((&mut dg, r.as_mut()), &dh, dm.as_ref(), n)
            .unwrap();
        assert_eq!(down(&dg), gg, "ReLU backward");
        assert!(copy(&r, &down(&dg)), "ReLU backward, bf16 copy");
    }
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn attention_kernels_on_the_gpu_equal_the_cpus() {
    common::gpu();
    use t5mix_trainer::device::attention::{
        cpu_bias_grad, cpu_bucket_grad, cpu_softmax_backward, cpu_softmax_forward, AttnShape,
        DeviceAttention, ScoresGrad,
    };
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    let att = DeviceAttention::new(stream.clone(), false).unwrap();
    let up = |v: &[f32]| stream.clone_htod(v).unwrap();
    let down = |s: &cudarc::driver::CudaSlice<f32>| stream.clone_dtoh(s).unwrap();
    // t5-v1_1-small's encoder at batch 4 × 512, and cross-attention
    // shapes with a tail past the lanes, with and without dropout: rows
    // held in registers (up to 8 and 32 values a lane) and a longer row
    // that goes through memory
    let shape = |b, heads, t, s| AttnShape { b, heads, t, s };
    for (sh, with_pos) in [
        (shape(4, 6, 512, 512), true),
        (shape(3, 2, 19, 37), false),
        (shape(2, 3, 5, 300), true),
        (shape(1, 2, 4, 600), false),
    ] {
        let n = sh.rows() * sh.s;
        let mut seed = 17u64;
        let scores = values(&mut seed, n, 8.0);
        let pos = with_pos.then(|| values(&mut seed, sh.heads * sh.t * sh.s, 4.0));
        let mask: Vec<f32> = (0..sh.b * sh.t * sh.s)
            .map(|i| if i % 11 == 4 { -1e9 } else { 0.0 })
            .collect();
        let dp = values(&mut seed, n, 1.0);
        let drop: Vec<f32> = (0..n).map(|i| if i % 9 == 2 { 0.0 } else { 1.1 }).collect();
        for drop in [None, Some(&drop[..])] {
            let case = format!("{sh:?} dropout {}", drop.is_some());
            let mut p = scores.clone();
            let pd = cpu_softmax_forward(&mut p, pos.as_deref(), &mask, drop, sh);
            let (gpos, gmask, gdrop) = (pos.as_deref().map(up), up(&mask), drop.map(up));
            let mut gp = up(&scores);
            let mut gpd = up(&vec![0.0; n]);
            // with the bf16 copy of what p · v reads, and of dS
            let mut ready = room(&stream, n, true);
            att.softmax_forward(
                &mut gp,
                gpos.as_ref(),
                &gmask,
                gdrop.as_ref().map(|d| (d, &mut gpd)),
                Some(&mut ready),
                sh,
            )
            .unwrap();
            assert!(same_bits(&down(&gp), &p), "{case}: probabilities");
            if let Some(pd) = &pd {
                assert!(same_bits(&down(&gpd), pd), "{case}: after dropout");
            }
            let used = pd.as_ref().unwrap_or(&p);
            let copy = stream.clone_dtoh(&ready.bits).unwrap();
            assert!(ready_of(&copy, used), "{case}: bf16 copy");
            // the copy alone: the probabilities after dropout unwritten
            // (the probabilities themselves are written in any case)
            let (mut gp2, mut gpd2) = (up(&scores), up(&vec![0.0; n]));
            let mut alone = room(&stream, n, false);
            att.softmax_forward(
                &mut gp2,
                gpos.as_ref(),
                &gmask,
                gdrop.as_ref().map(|d| (d, &mut gpd2)),
                Some(&mut alone),
                sh,
            )
            .unwrap();
            assert_eq!(
                stream.clone_dtoh(&alone.bits).unwrap(),
                copy,
                "{case}: copy alone"
            );
            assert!(
                same_bits(&down(&gp2), &p),
                "{case}: probabilities, copy alone"
            );
            assert!(
                down(&gpd2).iter().all(|&v| v == 0.0),
                "{case}: pd unwritten"
            );
            let mut ds = dp.clone();
            cpu_softmax_backward(&mut ds, &p, drop, sh);
            let mut gds = up(&dp);
            att.softmax_backward(&mut gds, &gp, gdrop.as_ref(), Some(&mut ready), sh)
                .unwrap();
            assert!(same_bits(&down(&gds), &ds), "{case}: scores' gradient");
            let copy = stream.clone_dtoh(&ready.bits).unwrap();
            assert!(ready_of(&copy, &ds), "{case}: scores' gradient's bf16 copy");
            // the copy alone (dp then scratch)
            let mut gdp = up(&dp);
            att.softmax_backward(&mut gdp, &gp, gdrop.as_ref(), Some(&mut alone), sh)
                .unwrap();
            let alone = stream.clone_dtoh(&alone.bits).unwrap();
            assert_eq!(alone, copy, "{case}: scores' gradient's copy alone");
            if with_pos {
                let d0 = values(&mut seed, sh.heads * sh.t * sh.s, 0.1);
                let mut dpos = d0.clone();
                cpu_bias_grad(&ds, &mut dpos, sh);
                // dS as the bf16 products read it: rounded as it is read,
                // or their copy (the same bits)
                let rounded: Vec<f32> = ds
                    .iter()
                    .map(|&v| half::bf16::from_f32(v).to_f32())
                    .collect();
                let mut dpos_r = d0.clone();
                cpu_bias_grad(&rounded, &mut dpos_r, sh);
                let bits = stream.clone_htod(&copy).unwrap();
                for (read, want) in [
                    (ScoresGrad::Rounded, &dpos_r),
                    (ScoresGrad::Bits(&bits), &dpos_r),
                    (ScoresGrad::Values, &dpos),
                ] {
                    let mut gdpos = up(&d0);
                    att.bias_grad(&gds, read, &mut gdpos, sh).unwrap();
                    let got = down(&gdpos);
                    assert!(same_bits(&got, want), "{case}: bias gradient, {read:?}");
                }
                let short = stream.clone_htod(&copy[1..]).unwrap();
                let e = att
                    .bias_grad(&gds, ScoresGrad::Bits(&short), &mut up(&d0), sh)
                    .unwrap_err();
                assert!(e.to_string().contains("bf16 values for"), "{e}");
                let mut gdpos = up(&d0);
                att.bias_grad(&gds, ScoresGrad::Values, &mut gdpos, sh)
                    .unwrap();
                // per bucket (T5's 32 bidirectional buckets)
                let (h, t, s, nb) = (sh.heads, sh.t, sh.s, 32);
                let buckets: Vec<u32> = (0..t * s)
                    .map(|i| {
                        t5mix_trainer::model::relative_position_bucket(
                            (i % s) as i64 - (i / s) as i64,
                            true,
                            nb,
                            128,
                        ) as u32
                    })
                    .collect();
                let t0 = values(&mut seed, nb * h, 0.1);
                let mut table = t0.clone();
                cpu_bucket_grad(&dpos, &buckets, &mut table, (h, t, s), nb);
                let mut gtable = up(&t0);
                let mut partials = up(&vec![0.0; h * t * nb]);
                let gb = stream.clone_htod(&buckets).unwrap();
                att.bucket_grad(&gdpos, &gb, &mut partials, &mut gtable, (h, t, s), nb)
                    .unwrap();
                assert!(same_bits(&down(&gtable), &table), "{case}: bucket gradient");
            }
        }
    }
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn heads_of_rows_on_the_gpu_equal_the_cpus() {
    common::gpu();
    use t5mix_trainer::device::backend::{Backend, CpuBackend, HeadsShape};
    use t5mix_trainer::device::cuda_backend::CudaBackend;
    use t5mix_trainer::device::products::Precision;
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    let be = CudaBackend::new(stream.clone(), Precision::F32, false).unwrap();
    // t5-v1_1-small's q, k and v at batch 4 × 512, cross-attention's k and
    // v, an odd shape, more rows than a grid has along y; there and back
    for (b, rows, parts, heads, d) in [
        (4, 512, 3, 6, 64),
        (2, 37, 2, 6, 64),
        (3, 7, 1, 5, 3),
        (3, 30_001, 2, 1, 1),
    ] {
        let sh = HeadsShape {
            b,
            rows,
            parts,
            heads,
            d,
        };
        let mut seed = 5u64;
        let x = values(&mut seed, sh.values(), 1.0);
        let want = CpuBackend.to_heads(&x, sh, None).unwrap();
        // with the bf16 copy, as laid out
        let mut ready = room(&stream, sh.values(), true);
        let got = be
            .to_heads(&stream.clone_htod(&x).unwrap(), sh, Some(&mut ready))
            .unwrap();
        assert!(
            same_bits(&stream.clone_dtoh(&got).unwrap(), &want),
            "{sh:?}"
        );
        let copy = stream.clone_dtoh(&ready.bits).unwrap();
        assert!(ready_of(&copy, &want), "{sh:?}: bf16 copy");
        // back from the parts apart
        let each = sh.values() / parts;
        let parts: Vec<_> = (0..parts)
            .map(|p| stream.clone_htod(&want[p * each..(p + 1) * each]).unwrap())
            .collect();
        let parts: Vec<_> = parts.iter().collect();
        let back = be.to_rows(&parts, sh, Some(&mut ready)).unwrap();
        assert!(
            same_bits(&stream.clone_dtoh(&back).unwrap(), &x),
            "{sh:?} back"
        );
        let copy = stream.clone_dtoh(&ready.bits).unwrap();
        assert!(ready_of(&copy, &x), "{sh:?} back: bf16 copy");
        assert!(same_bits(
            &stream
                .clone_dtoh(&be.to_rows(&parts, sh, None).unwrap())
                .unwrap(),
            &x
        ));
    }
    // a shape that is not the buffer's is an error, not a wild read
    let x = stream.clone_htod(&[0f32; 10]).unwrap();
    let sh = HeadsShape {
        b: 1,
        rows: 2,
        parts: 1,
        heads: 3,
        d: 2,
    };
    let e = be.to_heads(&x, sh, None).unwrap_err().to_string();
    assert!(e.contains("of 10 values"), "{e}");
    let e = be.to_rows(&[&x, &x], sh, None).unwrap_err().to_string();
    assert!(e.contains("of parts of [10, 10] values"), "{e}");
    // and so is a bf16 copy's room short of the output
    let sh = HeadsShape {
        heads: 5,
        d: 1,
        ..sh
    };
    let mut short = room(&stream, 9, true);
    let e = be
        .to_heads(&x, sh, Some(&mut short))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bf16 copy") && e.contains("9 values for 10"),
        "{e}"
    );
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn products_together_give_the_bits_of_products_alone() {
    common::gpu();
    use t5mix_trainer::device::backend::{Backend, Operand, Product};
    use t5mix_trainer::device::cuda_backend::CudaBackend;
    use t5mix_trainer::device::products::{GemmShape, Precision};
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    let mut seed = 9u64;
    let (x, w) = (
        values(&mut seed, 40 * 16, 1.0),
        values(&mut seed, 3 * 8 * 16, 1.0),
    );
    let (gx, gw) = (
        stream.clone_htod(&x).unwrap(),
        stream.clone_htod(&w).unwrap(),
    );
    // y_i = x · W_iᵀ for three weights in one buffer, and z = x[8..] (the
    // same buffer at another offset, another span) · W_0ᵀ
    let dense = |rows| GemmShape::dense((rows, 8, 16), false, true);
    for precision in [Precision::F32, Precision::Tf32, Precision::Bf16] {
        let be = CudaBackend::new(stream.clone(), precision, false).unwrap();
        // bf16: the weights as parameters (the pass's copy), or rounded
        // with the rest
        for params in [true, false] {
            if params {
                be.begin_pass(&gw).unwrap();
            } else {
                be.begin_pass(&stream.clone_htod(&[0f32; 1]).unwrap())
                    .unwrap();
            }
            let mut alone = Vec::new();
            for (rows, xo, wo) in [(40, 0, 0), (40, 0, 128), (40, 0, 256), (32, 16, 0)] {
                let mut c = stream.alloc_zeros::<f32>(rows * 8).unwrap();
                be.gemm(
                    &dense(rows),
                    (&gx, xo).into(),
                    (&gw, wo).into(),
                    (&mut c, 0),
                    false,
                )
                .unwrap();
                alone.push(stream.clone_dtoh(&c).unwrap());
            }
            let mut cs: Vec<_> = [40, 40, 40, 32]
                .map(|rows| stream.alloc_zeros::<f32>(rows * 8).unwrap())
                .into_iter()
                .collect();
            // together, x as it is and made ready ahead (Backend::ready)
            let x_ready = be.ready(&gx).unwrap();
            assert_eq!(x_ready.is_some(), precision == Precision::Bf16);
            for ready in [None, x_ready.as_ref()] {
                let products = cs
                    .iter_mut()
                    .zip([(40, 0, 0), (40, 0, 128), (40, 0, 256), (32, 16, 0)])
                    .map(|(c, (rows, xo, wo))| Product {
                        shape: dense(rows),
                        a: Operand {
                            at: (&gx, xo),
                            ready,
                        },
                        b: (&gw, wo).into(),
                        c: (c, 0),
                        accumulate: false,
                    })
                    .collect();
                be.gemms(products).unwrap();
                for (i, (c, want)) in cs.iter().zip(&alone).enumerate() {
                    let case = format!(
                        "{precision:?} parameters {params} x ready {}: product {i}",
                        ready.is_some()
                    );
                    assert!(same_bits(&stream.clone_dtoh(c).unwrap(), want), "{case}");
                }
            }
            // (and they differ from each other: the test sees a mix-up)
            assert!(!same_bits(&alone[0], &alone[1]) && !same_bits(&alone[0][..256], &alone[3]));
        }
    }
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn products_on_the_gpu_in_f32_tf32_and_bf16() {
    common::gpu();
    use t5mix_trainer::device::elementwise::DeviceElementwise;
    use t5mix_trainer::device::products::{cpu_gemm, DeviceProducts, GemmShape, Precision};
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    let blas = DeviceProducts::new(stream.clone()).unwrap();
    let ew = DeviceElementwise::new(stream.clone(), false).unwrap();
    let mut seed = 31u64;
    // bf16 operands: the kernel rounds as `half` does
    let x = values(&mut seed, 1 << 20, 1e3);
    let gx = stream.clone_htod(&x).unwrap();
    let mut gy = stream.alloc_zeros::<u16>(x.len()).unwrap();
    ew.to_bf16(&gx, &mut gy, x.len()).unwrap();
    let want: Vec<u16> = x
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_bits())
        .collect();
    assert_eq!(stream.clone_dtoh(&gy).unwrap(), want, "bf16 rounding");
    // a feed-forward's product (x · wᵀ), its weight gradient (gᵀ · x) and
    // attention's per-head scores (q · kᵀ, heads at a column offset)
    let (t, heads, dk) = (64, 4, 32);
    let shapes = [
        GemmShape::dense((256, 384, 512), false, true),
        GemmShape::dense((384, 512, 256), true, false),
        GemmShape {
            ld: (heads * dk, heads * dk, t),
            batch: heads,
            strides: (dk, dk, t * t),
            ..GemmShape::dense((t, t, dk), false, true)
        },
    ];
    for sh in shapes {
        let (la, lb, lc) = sh.spans();
        let (a, b, c0) = (
            values(&mut seed, la, 2.0),
            values(&mut seed, lb, 2.0),
            values(&mut seed, lc, 2.0),
        );
        let mut want = c0.clone();
        cpu_gemm(&sh, &a, &b, &mut want, (1.0, 1.0));
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (precision, tol) in [
            (Precision::F32, 1e-5),
            (Precision::Tf32, 1e-2),
            (Precision::Bf16, 3e-2),
        ] {
            let (ga, gb) = (
                stream.clone_htod(&a).unwrap(),
                stream.clone_htod(&b).unwrap(),
            );
            let mut gc = stream.clone_htod(&c0).unwrap();
            match precision {
                Precision::Bf16 => {
                    let mut ha = stream.alloc_zeros::<u16>(la).unwrap();
                    let mut hb = stream.alloc_zeros::<u16>(lb).unwrap();
                    ew.to_bf16(&ga, &mut ha, la).unwrap();
                    ew.to_bf16(&gb, &mut hb, lb).unwrap();
                    blas.gemm(&sh, &ha, &hb, &mut gc, (1.0, 1.0), false)
                        .unwrap();
                }
                p => blas
                    .gemm(&sh, &ga, &gb, &mut gc, (1.0, 1.0), p == Precision::Tf32)
                    .unwrap(),
            }
            let got = stream.clone_dtoh(&gc).unwrap();
            let worst = t5mix_trainer::max_abs_diff(&got, &want);
            eprintln!("{sh:?} {precision:?}: worst error {worst:e} of {scale:e}");
            assert!(
                worst <= tol * scale,
                "{sh:?} {precision:?}: {worst} of {scale}"
            );
        }
        // the same call twice gives the same bits (cuBLAS is deterministic
        // on one GPU)
        let (ga, gb) = (
            stream.clone_htod(&a).unwrap(),
            stream.clone_htod(&b).unwrap(),
        );
        let runs: Vec<Vec<f32>> = (0..2)
            .map(|_| {
                let mut gc = stream.clone_htod(&c0).unwrap();
                blas.gemm(&sh, &ga, &gb, &mut gc, (1.0, 1.0), true).unwrap();
                stream.clone_dtoh(&gc).unwrap()
            })
            .collect();
        assert!(same_bits(&runs[0], &runs[1]), "{sh:?}: two runs");
    }
    // a shape past its buffers is an error, not a fault
    let sh = GemmShape::dense((64, 64, 64), false, false);
    let small = stream.alloc_zeros::<f32>(100).unwrap();
    let mut c = stream.alloc_zeros::<f32>(64 * 64).unwrap();
    let err = blas
        .gemm(&sh, &small, &small, &mut c, (1.0, 0.0), false)
        .unwrap_err();
    assert!(err.to_string().contains("buffers hold"), "{err}");
}

/// A small model and a batch of random pairs for the flat step's checks.
fn small_model_and_batch(
    gated: bool,
) -> (
    t5mix_trainer::T5<dfdx::prelude::Cpu>,
    t5mix_trainer::model::Batch,
) {
    let mut cfg = t5mix_trainer::T5Config::named("micro").unwrap();
    cfg.vocab_size = 512;
    if !gated {
        cfg.feed_forward_proj = "relu".into();
        cfg.tie_word_embeddings = true;
    }
    let model = t5mix_trainer::T5::new(cfg, &dfdx::prelude::Cpu::default(), Some(5));
    let mut x = 3u64;
    let mut next = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                2 + ((x >> 33) % 500) as u32
            })
            .collect()
    };
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = (0..6).map(|i| (next(40 - i), next(12 + i))).collect();
    (model, t5mix_trainer::model::Batch::from_pairs(&pairs, 0))
}

/// [`small_model_and_batch`] as the flat step sees it: the model, the
/// batch and the parameters in one buffer.
fn flat_model_and_batch(
    gated: bool,
) -> (
    t5mix_trainer::model::flat::FlatModel,
    t5mix_trainer::model::Batch,
    Vec<f32>,
) {
    let (model, batch) = small_model_and_batch(gated);
    let flat = model.flat_model();
    let host: Vec<Vec<f32>> = model.params.iter().map(|p| p.as_vec()).collect();
    let params = flat.layout.flatten(&host);
    (flat, batch, params)
}

/// The flat step's loss and gradients on a GPU backend: `batch` through
/// the model of `flat` with the parameters `gp`, dropout at `rate` (the
/// masks drawn as the CPU draws them).
fn gpu_loss_and_grads(
    be: &t5mix_trainer::device::cuda_backend::CudaBackend,
    flat: &t5mix_trainer::model::flat::FlatModel,
    gp: &cudarc::driver::CudaSlice<f32>,
    batch: &t5mix_trainer::model::Batch,
    rate: f32,
) -> (f32, Vec<f32>) {
    use t5mix_trainer::model::{Dropout, LossConfig};
    let stream = be.stream();
    let mut gg = stream.alloc_zeros::<f32>(flat.layout.len).unwrap();
    let out = flat
        .loss_and_grads(
            be,
            gp,
            &mut gg,
            batch,
            &mut Dropout::new(rate, 1, 2, 0),
            &LossConfig::default(),
            1.0,
        )
        .unwrap();
    (out.loss, stream.clone_dtoh(&gg).unwrap())
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn the_flat_step_on_the_gpu_equals_the_cpus() {
    common::gpu();
    use t5mix_trainer::device::backend::CpuBackend;
    use t5mix_trainer::device::cuda_backend::CudaBackend;
    use t5mix_trainer::device::products::Precision;
    use t5mix_trainer::model::{Dropout, LossConfig};
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    for gated in [true, false] {
        let (flat, batch, params) = flat_model_and_batch(gated);
        let loss = LossConfig::default();
        let mut want = vec![0f32; flat.layout.len];
        let cpu = flat
            .loss_and_grads(
                &CpuBackend,
                &params,
                &mut want,
                &batch,
                &mut Dropout::new(0.1, 1, 2, 0),
                &loss,
                1.0,
            )
            .unwrap();
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (precision, tol) in [
            (Precision::F32, 1e-4),
            (Precision::Tf32, 2e-2),
            (Precision::Bf16, 5e-2),
        ] {
            let be = CudaBackend::new(stream.clone(), precision, false).unwrap();
            let gp = stream.clone_htod(&params).unwrap();
            let runs: Vec<(f32, Vec<f32>)> = (0..2)
                .map(|_| gpu_loss_and_grads(&be, &flat, &gp, &batch, 0.1))
                .collect();
            let case = format!("gated {gated} {precision:?}");
            assert!(
                (runs[0].0 - cpu.loss).abs() <= tol * cpu.loss.abs(),
                "{case}: loss {} vs {}",
                runs[0].0,
                cpu.loss
            );
            let worst = t5mix_trainer::max_abs_diff(&runs[0].1, &want);
            let relative = t5mix_trainer::relative_l2_error(&runs[0].1, &want);
            eprintln!(
                "{case}: loss {} vs {}, worst gradient error {worst:e} of {scale:e}, \
                 relative L2 error {relative:e}",
                runs[0].0, cpu.loss
            );
            if precision == Precision::F32 {
                assert!(worst <= tol * scale, "{case}: gradient {worst} of {scale}");
            } else {
                // rounded operands move a ReLU's pre-activations near 0 to
                // the other side, and with them single gradients by a few
                // percent of the largest: the whole gradient's error is
                // what the rounding bounds
                assert!(
                    relative <= tol as f64,
                    "{case}: relative gradient error {relative}"
                );
            }
            // deterministic: the same step twice gives the same bits
            assert_eq!(runs[0].0.to_bits(), runs[1].0.to_bits(), "{case}: loss");
            assert!(same_bits(&runs[0].1, &runs[1].1), "{case}: gradients");
        }
    }
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn kept_bf16_copies_give_the_bits_of_rounding_per_product() {
    common::gpu();
    use t5mix_trainer::device::cuda_backend::CudaBackend;
    use t5mix_trainer::device::products::Precision;
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    // gated and ReLU; with dropout (the sublayers' output gradients go
    // through their masks, not kept) and without (the residual stream's
    // gradient kept by the norms' backward)
    for (gated, rate) in [(true, 0.0), (true, 0.1), (false, 0.0), (false, 0.1)] {
        let (flat, batch, params) = flat_model_and_batch(gated);
        let gp = stream.clone_htod(&params).unwrap();
        let runs: Vec<(f32, Vec<f32>)> = [true, false]
            .into_iter()
            .map(|keep| {
                let be = CudaBackend::new(stream.clone(), Precision::Bf16, false)
                    .unwrap()
                    .keeping_copies(keep);
                gpu_loss_and_grads(&be, &flat, &gp, &batch, rate)
            })
            .collect();
        let case = format!("gated {gated} dropout {rate}");
        assert_eq!(runs[0].0.to_bits(), runs[1].0.to_bits(), "{case}: loss");
        assert!(same_bits(&runs[0].1, &runs[1].1), "{case}: gradients");
    }
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn bf16_copies_come_from_the_kernels_that_write_the_values() {
    common::gpu();
    use t5mix_trainer::device::cuda_backend::CudaBackend;
    use t5mix_trainer::device::products::Precision;
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    // without dropout, a step rounds two activations in passes of their
    // own (the encoder's output, read by every cross-attention, and the
    // decoder's, read by the output layer); every other operand of the
    // bf16 products is made by the kernel that writes it (rounding each
    // product's operands instead: many)
    for gated in [true, false] {
        let (flat, batch, params) = flat_model_and_batch(gated);
        let gp = stream.clone_htod(&params).unwrap();
        for (keep, want) in [(true, Some(2)), (false, None)] {
            let be = CudaBackend::new(stream.clone(), Precision::Bf16, false)
                .unwrap()
                .keeping_copies(keep)
                .profiling(true);
            gpu_loss_and_grads(&be, &flat, &gp, &batch, 0.0);
            let rounded = be.profiled_calls("bf16 operands");
            let products = be.profiled_calls("products (cuBLAS)");
            match want {
                Some(n) => assert_eq!(rounded, n, "gated {gated}: rounding passes"),
                None => assert!(rounded > products / 2, "gated {gated}: {rounded}"),
            }
        }
    }
    // the f32 values beside a copy that products alone read are not even
    // allocated (the step above ran with them so; any read of them would
    // have left the one-value stand-in)
    use t5mix_trainer::device::backend::{Backend, Readers};
    for (keep, readers, want) in [
        (true, Readers::Products, 1),
        (true, Readers::Any, 1000),
        (false, Readers::Products, 1000),
    ] {
        let be = CudaBackend::new(stream.clone(), Precision::Bf16, false)
            .unwrap()
            .keeping_copies(keep);
        let copy = be.ready_output(1000, readers).unwrap();
        let values = be.output_for(1000, copy.as_ref()).unwrap();
        assert_eq!(values.len(), want, "keep {keep}, {readers:?}");
    }
}

#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn training_on_the_gpu_gives_the_same_weights_twice_and_learns() {
    common::gpu();
    use t5mix_trainer::device::products::Precision;
    use t5mix_trainer::device::step::{DeviceStep, TrainStep};
    use t5mix_trainer::model::{Dropout, LossConfig};
    let (model, batch) = small_model_and_batch(true);
    let host: Vec<Vec<f32>> = model.params.iter().map(|p| p.as_vec()).collect();
    for (cfg, precision) in [
        (OptimizerConfig::adamw(), Precision::Tf32),
        (OptimizerConfig::adafactor(), Precision::Bf16),
    ] {
        let runs: Vec<(Vec<f32>, Vec<f32>)> = (0..2)
            .map(|_| {
                let flat = model.flat_model();
                let params = flat.layout.flatten(&host);
                let mut s = DeviceStep::new(flat, &params, 0, (cfg, precision), false).unwrap();
                let losses = (0..8)
                    .map(|step| {
                        let mut drop = Dropout::new(0.1, 9, step, 0);
                        // (the same batch again next: its inputs sent ahead)
                        let batches = (&batch, Some(&batch));
                        s.step(
                            batches,
                            &mut drop,
                            &LossConfig::default(),
                            (1e-2, Some(1.0)),
                        )
                        .unwrap()
                        .loss
                    })
                    .collect();
                (losses, s.params().unwrap())
            })
            .collect();
        let case = format!("{cfg:?} {precision:?}");
        eprintln!("{case}: losses {:?}", runs[0].0);
        assert!(same_bits(&runs[0].1, &runs[1].1), "{case}: weights differ");
        assert!(same_bits(&runs[0].0, &runs[1].0), "{case}: losses differ");
        assert!(
            runs[0].0[7] < runs[0].0[0] * 0.9,
            "{case}: the loss went from {} to {}",
            runs[0].0[0],
            runs[0].0[7]
        );
    }
}

/// The attention masks built on the GPU from the segment ids are the
/// host's, bit for bit: padded and packed rows, packed and not.
#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn attention_masks_on_the_gpu_equal_the_cpus() {
    common::gpu();
    use t5mix_trainer::device::backend::{Backend, CpuBackend};
    use t5mix_trainer::device::cuda_backend::CudaBackend;
    use t5mix_trainer::device::products::Precision;
    use t5mix_trainer::model::Batch;
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let gpu = CudaBackend::new(ctx.default_stream(), Precision::F32, true).unwrap();
    // three rows: padded, two packed examples, full; 9 inputs, 6 targets
    let (b, s, t) = (3, 9, 6);
    let enc_segments = vec![
        1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ];
    let dec_segments = vec![1, 1, 0, 0, 0, 0, 1, 1, 1, 2, 2, 0, 1, 1, 1, 1, 1, 1];
    for packed in [false, true] {
        let batch = Batch {
            batch: b,
            enc_len: s,
            dec_len: t,
            enc_tokens: vec![5; b * s],
            dec_inputs: vec![5; b * t],
            targets: vec![5; b * t],
            weights: vec![1.0; b * t],
            enc_segments: enc_segments.clone(),
            dec_segments: packed.then(|| dec_segments.clone()),
        };
        let want = CpuBackend.attention_masks(&batch).unwrap();
        let got = gpu.attention_masks(&batch).unwrap();
        for (k, (w, g)) in want.iter().zip(&got).enumerate() {
            let g = gpu.download(g).unwrap();
            assert!(same_bits(w, &g[..w.len()]), "packed {packed}: mask {k}");
            assert!(w.iter().any(|&x| x != 0.0) && w.contains(&0.0));
        }
    }
}

/// The embedding's gradient grouped by token, on the GPU as on the CPU, bit
/// for bit: a frequent token's rows (a chain of 100 sums, past the loads
/// the kernel makes ahead) and rare ones, into a table at an offset in a
/// flat buffer.
#[test]
#[cfg_attr(
    not(any(t5mix_gpu, t5mix_cuda_standin)),
    ignore = "needs an NVIDIA GPU or a C++ compiler (the CPU stand-in of CUDA)"
)]
fn embedding_gradient_on_the_gpu_equals_the_cpus() {
    common::gpu();
    use t5mix_trainer::device::backend::{Backend, CpuBackend, TokenIndex};
    use t5mix_trainer::device::cuda_backend::CudaBackend;
    use t5mix_trainer::device::products::Precision;
    let ctx = cudarc::driver::CudaContext::new(0).expect("a GPU");
    let stream = ctx.default_stream();
    let be = CudaBackend::new(stream.clone(), Precision::F32, false).unwrap();
    let (vocab, d, off) = (50, 72, 5);
    let ids: Vec<usize> = (0..300)
        .map(|i| if i % 3 == 0 { 7 } else { (i * 13) % vocab })
        .collect();
    let mut seed = 9u64;
    let dx = values(&mut seed, ids.len() * d, 1.0);
    let t0 = values(&mut seed, off + vocab * d, 0.1);
    let mut want = t0.clone();
    let rows = TokenIndex::new(&CpuBackend, &ids).unwrap();
    CpuBackend
        .embed_grad(&dx, &rows, (&mut want, off), d)
        .unwrap();
    let mut got = stream.clone_htod(&t0).unwrap();
    let rows = TokenIndex::new(&be, &ids).unwrap();
    be.embed_grad(&stream.clone_htod(&dx).unwrap(), &rows, (&mut got, off), d)
        .unwrap();
    assert!(same_bits(&stream.clone_dtoh(&got).unwrap(), &want));
}
