// The output layer's loss on the GPU: t5x's cross-entropy (with label
// smoothing) plus z-loss per row of logits, forward and backward, in the
// CPU fused loss's order (trainer/src/kernels/loss.rs, lanes.rs): the row's
// max and sum of exponentials in T5_LANES lanes (the exponentials by the
// CPU's exp_fast, the sums in f64), then the lanes in order, then the tail.
// The one step that can round differently is log(): CUDA's and the host's
// are each within an ulp in f64, so the f32 log-sum-exp can differ in its
// last bit on a tie (rare). Compiled with --fmad=false.
//
//   forward   rows[4i..4i+4] = (w (ce + z lse^2), w ce, w z lse^2, lse)
//   backward  x_j <- scale e^(x_j - lse) - shift, x_t -= target (in place)

#ifndef T5_LANES
#error "T5_LANES is set by the host"
#endif

#define ROWS_PER_BLOCK 16

// forward: grid ceil(n / ROWS_PER_BLOCK) blocks of (T5_LANES, ROWS_PER_BLOCK).
// rule = (z, smoothing, confidence, low, constant) as LossRule::new.
extern "C" __global__ void row_loss_fwd(const float* x, u64 n, unsigned v, const unsigned* targets,
                                        const float* weights, float z, float smoothing,
                                        float confidence, float low, float constant, float* rows) {
    __shared__ float maxes[ROWS_PER_BLOCK][T5_LANES];
    __shared__ double sums[ROWS_PER_BLOCK][T5_LANES];
    __shared__ float row_m[ROWS_PER_BLOCK];
    unsigned l = threadIdx.x, ty = threadIdx.y;
    u64 i = (u64)blockIdx.x * ROWS_PER_BLOCK + ty;
    unsigned full = v - v % T5_LANES;
    const float* row = x + i * v;
    if (i < n) {
        float acc = NEG_INF;
        for (unsigned j = l; j < full; j += T5_LANES) {
            acc = fmaxf(acc, row[j]);
        }
        maxes[ty][l] = acc;
    }
    __syncthreads();
    if (i < n && l == 0) {
        float m = NEG_INF;
        for (unsigned j = full; j < v; j++) {
            m = fmaxf(m, row[j]);
        }
        for (unsigned k = 0; k < T5_LANES; k++) {
            m = fmaxf(m, maxes[ty][k]);
        }
        row_m[ty] = m;
    }
    __syncthreads();
    if (i < n) {
        float m = row_m[ty];
        double acc = 0.0;
        for (unsigned j = l; j < full; j += T5_LANES) {
            acc += (double)exp_fast(row[j] - m);
        }
        sums[ty][l] = acc;
    }
    __syncthreads();
    if (i < n && l == 0) {
        float m = row_m[ty];
        double s = -0.0;
        for (unsigned k = 0; k < T5_LANES; k++) {
            s += sums[ty][k];
        }
        double tail = -0.0;
        for (unsigned j = full; j < v; j++) {
            tail += (double)exp_fast(row[j] - m);
        }
        float lse = m + (float)log(s + tail);
        unsigned t = targets[i];
        float ce = lse - row[t];
        if (smoothing > 0.0f) {
            double sum = -0.0;
            for (unsigned j = 0; j < v; j++) {
                sum += (double)row[j];
            }
            ce = lse - (confidence - low) * row[t] - low * (float)sum - constant;
        }
        float w = weights[i];
        float zl = z * lse * lse;
        rows[4 * i] = w * (ce + zl);
        rows[4 * i + 1] = w * ce;
        rows[4 * i + 2] = w * zl;
        rows[4 * i + 3] = lse;
    }
}

// backward: from the logits x (n x v) the loss's gradient in `out` (x
// itself, or null: the bf16 bits in `ready` alone; those when not null),
// from the upstream gradient per row g_out and the forward's rows; a row
// without gradient (g_out · weight = 0) is zeros. No logits-sized buffer of
// its own: the output layer's products read the gradient where the logits
// were. grid (ceil(v / blockDim.x), at most 65,535): rows blockIdx.y,
// blockIdx.y + gridDim.y, ...
extern "C" __global__ void row_loss_grad(const float* x, float* out, unsigned short* ready, u64 n,
                                         unsigned v, const unsigned* targets,
                                         const float* weights, const float* g_out,
                                         const float* rows, float z, float confidence,
                                         float low) {
    for (u64 i = blockIdx.y; i < n; i += gridDim.y) {
        const float* row = x + i * v;
        float g = g_out[i] * weights[i];
        unsigned first = blockIdx.x * blockDim.x + threadIdx.x, stride = gridDim.x * blockDim.x;
        if (g == 0.0f) {
            for (unsigned j = first; j < v; j += stride) {
                put(out, ready, i * v + j, 0.0f);
            }
            continue;
        }
        float lse = rows[4 * i + 3];
        float scale = g * (1.0f + 2.0f * z * lse);
        float shift = g * low;
        float target = g * (confidence - low);
        unsigned t = targets[i];
        for (unsigned j = first; j < v; j += stride) {
            float dj = scale * exp_fast(row[j] - lse) - shift;
            if (j == t) {
                dj -= target;
            }
            put(out, ready, i * v + j, dj);
        }
    }
}
