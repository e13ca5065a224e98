// t5mix's optimizer step on the GPU: AdamW, t5x's Adafactor and global-norm
// clipping over parameters, gradients and moments in flat device buffers,
// so that nothing goes to the host per step but the logged norm.
//
// Compiled at run time by NVRTC (trainer/src/device/mod.rs) with
// --fmad=false, IEEE division and square root, and flush-to-zero as the CPU
// trainer runs: every element-wise formula rounds as its CPU twin does
// (trainer/src/device/twin.rs, trainer/src/optim.rs).
//
// Deterministic: no atomics. Sums run in f64 in a fixed order that depends
// only on T5_THREADS and T5_BLOCKS (set by the host, one home for both
// sides): thread t of block b adds the elements i = b*T + t, i + B*T, ... in
// index order, then the block adds its threads' sums pairwise in a fixed
// tree (block_sum), then one block adds the blocks' sums the same way.
// The twin reproduces that order on the CPU.

#ifndef T5_THREADS
#error "T5_THREADS is set by the host"
#endif
#ifndef T5_BLOCKS
#error "T5_BLOCKS is set by the host"
#endif

// The sum of one value per thread of the block, pairwise: thread t adds
// t + s for s = T/2, T/4, ..., 1. Every thread gets the sum.
__device__ double block_sum(double x) {
    __shared__ double sh[T5_THREADS];
    sh[threadIdx.x] = x;
    __syncthreads();
    for (unsigned s = T5_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            sh[threadIdx.x] += sh[threadIdx.x + s];
        }
        __syncthreads();
    }
    double total = sh[0];
    __syncthreads();
    return total;
}

// partials[b] = the sum of squares of block b's share of x (grid T5_BLOCKS).
extern "C" __global__ void sumsq_partials(const float* x, u64 n, double* partials) {
    double acc = 0.0;
    for (u64 i = (u64)blockIdx.x * T5_THREADS + threadIdx.x; i < n;
         i += (u64)T5_BLOCKS * T5_THREADS) {
        double v = x[i];
        acc += v * v;
    }
    double s = block_sum(acc);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = s;
    }
}

// out[slot] = the sum of the T5_BLOCKS partials (one block).
extern "C" __global__ void sum_partials(const double* partials, double* out, unsigned slot) {
    double acc = 0.0;
    for (unsigned i = threadIdx.x; i < T5_BLOCKS; i += T5_THREADS) {
        acc += partials[i];
    }
    double s = block_sum(acc);
    if (threadIdx.x == 0) {
        out[slot] = s;
    }
}

// Global-norm clipping: with sumsq the gradients' sum of squares, scales
// them by max_norm / norm when the norm is larger (optim::clip_global_norm).
extern "C" __global__ void clip_by_norm(float* g, u64 n, const double* sumsq, double max_norm) {
    double norm = sqrt(sumsq[0]);
    if (!(norm > max_norm && norm > 0.0)) {
        return;
    }
    float s = (float)(max_norm / norm);
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        g[i] *= s;
    }
}

// AdamW on one flat buffer (optim::adamw_chunk): lr_t and eps_t carry the
// bias corrections, decay = lr * weight_decay.
extern "C" __global__ void adamw(float* p, const float* g, float* m, float* v, u64 n, float b1,
                                 float b2, float lr_t, float decay, float eps_t) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        float pi = p[i];
        pi -= decay * pi;
        pi -= lr_t * mi / (sqrtf(vi) + eps_t);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi;
    }
}

#ifndef T5_ADAFACTOR_EPS1
#error "T5_ADAFACTOR_EPS1 and T5_ADAFACTOR_EPS2 are set by the host (optim.rs)"
#endif

// Adafactor, factored second moment of a rows x cols parameter (row-major):
// sums of g^2 + eps1 over each row and over each column, in index order
// (one thread per row or column, as the CPU loops).
extern "C" __global__ void adafactor_row_sums(const float* g, u64 rows, u64 cols, double* out) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < rows; i += (u64)gridDim.x * blockDim.x) {
        double acc = 0.0;
        for (u64 j = 0; j < cols; j++) {
            float x = g[i * cols + j];
            acc += (double)(x * x + T5_ADAFACTOR_EPS1);
        }
        out[i] = acc;
    }
}

extern "C" __global__ void adafactor_col_sums(const float* g, u64 rows, u64 cols, double* out) {
    for (u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += (u64)gridDim.x * blockDim.x) {
        double acc = 0.0;
        for (u64 i = 0; i < rows; i++) {
            float x = g[i * cols + j];
            acc += (double)(x * x + T5_ADAFACTOR_EPS1);
        }
        out[j] = acc;
    }
}

// v = decay * v + mix * (sum / count) for each statistic.
extern "C" __global__ void adafactor_moments(float* v, const double* sums, u64 n, double count,
                                             float decay, float mix) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        v[i] = decay * v[i] + mix * (float)(sums[i] / count);
    }
}

// partials of the sum of x (not squared), for the mean of v_row.
extern "C" __global__ void sum_f32_partials(const float* x, u64 n, double* partials) {
    double acc = 0.0;
    for (u64 i = (u64)blockIdx.x * T5_THREADS + threadIdx.x; i < n;
         i += (u64)T5_BLOCKS * T5_THREADS) {
        acc += (double)x[i];
    }
    double s = block_sum(acc);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = s;
    }
}

// y = g * rsqrt(v_row / mean(v_row)) * rsqrt(v_col), rows_first telling
// whether v_row indexes the rows (cols >= rows) or the columns.
extern "C" __global__ void adafactor_factored_y(const float* g, const float* v_row, const float* v_col,
                                                u64 rows, u64 cols, int rows_first,
                                                const double* stats, float* y) {
    float row_mean = (float)(stats[0] / (double)(rows_first ? rows : cols));
    u64 n = rows * cols;
    for (u64 k = (u64)blockIdx.x * blockDim.x + threadIdx.x; k < n; k += (u64)gridDim.x * blockDim.x) {
        u64 i = k / cols, j = k % cols;
        u64 a = rows_first ? i : j, b = rows_first ? j : i;
        float row_factor = 1.0f / sqrtf(v_row[a] / row_mean);
        float col_factor = 1.0f / sqrtf(v_col[b]);
        y[k] = g[k] * row_factor * col_factor;
    }
}

// Adafactor, full second moment: v = decay * v + mix * (g^2 + eps1),
// y = g / sqrt(v).
extern "C" __global__ void adafactor_full_y(const float* g, float* v, float* y, u64 n, float decay,
                                            float mix) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        float gi = g[i];
        float vi = decay * v[i] + mix * (gi * gi + T5_ADAFACTOR_EPS1);
        v[i] = vi;
        y[i] = gi / sqrtf(vi);
    }
}

// p -= scale * y / max(rms(y) / clipping, 1), scale = lr * max(rms(p), eps2)
// with parameter scaling (else lr). stats[1] = sum of y^2, stats[2] = sum
// of p^2 (taken before the update).
extern "C" __global__ void adafactor_apply(float* p, const float* y, u64 n, const double* stats,
                                           float lr, float clipping, int param_scale) {
    float update_scale = lr;
    if (param_scale) {
        float rms_p = (float)sqrt(stats[2] / (double)n);
        update_scale *= fmaxf(rms_p, T5_ADAFACTOR_EPS2);
    }
    float denom = 1.0f;
    if (clipping > 0.0f) {
        float rms_y = (float)sqrt(stats[1] / (double)n);
        denom = fmaxf(rms_y / clipping, 1.0f);
    }
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        p[i] -= update_scale * (y[i] / denom);
    }
}
