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

// The parameter table of a batched launch: one entry of T5_FIELDS u64 per
// parameter (trainer/src/device/optimizer.rs writes it): its offset in the
// flat buffers, rows, columns, the offset of its second-moment statistics
// in the flat state, of its row and column sums in the flat sums, and its
// kind: FULL (one statistic per value),
// ROWS_FIRST (factored, v_row of length rows then v_col of length cols) or
// COLS_FIRST (factored, v_row of length cols then v_col of length rows).
#ifndef T5_FIELDS
#error "T5_FIELDS is set by the host"
#endif
#define F_AT 0
#define F_ROWS 1
#define F_COLS 2
#define F_STATE 3
#define F_SUMS 4
#define F_KIND 5
#define FULL 0
#define ROWS_FIRST 1
#define COLS_FIRST 2

// partials[k * T5_BLOCKS + b] = block b's share (grid T5_BLOCKS along x) of
// parameter k's sum: of squares of x[at..at + rows * cols] (what 0), or of
// its v_row (what 1: x is the flat state; 0 for an unfactored parameter).
extern "C" __global__ void sum_partials_by_param(const float* x, const u64* table, int what,
                                                 double* partials) {
    const u64* e = table + (u64)blockIdx.y * T5_FIELDS;
    u64 at = e[F_AT], n = e[F_ROWS] * e[F_COLS];
    if (what == 1) {
        at = e[F_STATE];
        n = e[F_KIND] == FULL ? 0 : (e[F_KIND] == ROWS_FIRST ? e[F_ROWS] : e[F_COLS]);
    }
    double* out = partials + (u64)blockIdx.y * T5_BLOCKS + blockIdx.x;
    // a block past the values adds nothing: its sum is +0, as block_sum's
    if ((u64)blockIdx.x * T5_THREADS >= n) {
        if (threadIdx.x == 0) {
            *out = 0.0;
        }
        return;
    }
    double acc = 0.0;
    for (u64 i = (u64)blockIdx.x * T5_THREADS + threadIdx.x; i < n;
         i += (u64)T5_BLOCKS * T5_THREADS) {
        double v = x[at + i];
        acc += what == 1 ? v : v * v;
    }
    double s = block_sum(acc);
    if (threadIdx.x == 0) {
        *out = s;
    }
}

// stats[k * 4 + slot] = the sum of parameter k's T5_BLOCKS partials (one
// block per parameter, k = blockIdx.x).
extern "C" __global__ void sum_partials(const double* partials, double* stats, unsigned slot) {
    const double* p = partials + (u64)blockIdx.x * T5_BLOCKS;
    double acc = 0.0;
    for (unsigned i = threadIdx.x; i < T5_BLOCKS; i += T5_THREADS) {
        acc += p[i];
    }
    double s = block_sum(acc);
    if (threadIdx.x == 0) {
        stats[(u64)blockIdx.x * 4 + slot] = s;
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

// Adafactor, one launch per kernel for all parameters, each parameter's
// arithmetic in its twin's order: the sums and moments with parameter k =
// blockIdx.y (grid-stride loops along x), y and the update a chunk of a
// parameter a block.

// The sum of g^2 + eps1 over n values `stride` apart, in index order (in
// double; common.cuh's chain_sum: a column of the embedding is a chain of
// 32,128).
__device__ double line_sum(const float* g, u64 n, u64 stride) {
    return chain_sum(0.0, n, [&](u64 i) {
        float x = g[i * stride];
        return x * x + T5_ADAFACTOR_EPS1;
    });
}

// The factored parameters' sums of g^2 + eps1 over each row (sums[0..rows])
// and over each column (sums[rows..rows + cols]), in index order: one
// thread per row or column, as the CPU loops (small blocks, so that a
// matrix's few columns spread over many multiprocessors).
extern "C" __global__ void CHAIN_KERNEL adafactor_sums(const float* grads, const u64* table, double* sums) {
    const u64* e = table + (u64)blockIdx.y * T5_FIELDS;
    if (e[F_KIND] == FULL) {
        return;
    }
    u64 rows = e[F_ROWS], cols = e[F_COLS];
    const float* g = grads + e[F_AT];
    double* out = sums + e[F_SUMS];
    for (u64 k = (u64)blockIdx.x * blockDim.x + threadIdx.x; k < rows + cols;
         k += (u64)gridDim.x * blockDim.x) {
        out[k] = k < rows ? line_sum(g + k * cols, cols, 1) : line_sum(g + (k - rows), rows, cols);
    }
}

// v = decay * v + mix * (sum / count) for each statistic of the factored
// parameters: v_row from the sums along its dimension over the other
// dimension's length, v_col likewise.
extern "C" __global__ void adafactor_moments(float* state, const double* sums, const u64* table,
                                             float decay, float mix) {
    const u64* e = table + (u64)blockIdx.y * T5_FIELDS;
    u64 kind = e[F_KIND];
    if (kind == FULL) {
        return;
    }
    u64 rows = e[F_ROWS], cols = e[F_COLS];
    u64 n_row = kind == ROWS_FIRST ? rows : cols, n_col = kind == ROWS_FIRST ? cols : rows;
    // the sums of v_row's dimension, then of v_col's
    const double* s = sums + e[F_SUMS];
    const double* s_row = kind == ROWS_FIRST ? s : s + rows;
    const double* s_col = kind == ROWS_FIRST ? s + rows : s;
    float* v = state + e[F_STATE];
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n_row + n_col;
         i += (u64)gridDim.x * blockDim.x) {
        if (i < n_row) {
            v[i] = decay * v[i] + mix * (float)(s_row[i] / (double)n_col);
        } else {
            u64 j = i - n_row;
            v[i] = decay * v[i] + mix * (float)(s_col[j] / (double)n_row);
        }
    }
}

// The row of value idx of a parameter with `cols` columns: a 32-bit
// division where the parameter has fewer than 2^32 values (every T5's).
__device__ __forceinline__ u64 row_of(u64 idx, u64 cols, u64 count) {
    return count <= 0xffffffffull ? (u64)((unsigned)idx / (unsigned)cols) : idx / cols;
}

// Adafactor's element-wise kernels take a chunk of a parameter a block:
// chunks[2 * c] the parameter, chunks[2 * c + 1] the chunk's first value,
// T5_CHUNK values (or to the parameter's end).
#ifndef T5_CHUNK
#error "T5_CHUNK is set by the host"
#endif

// y, the scaled gradient: factored, g * rsqrt(v_row / mean(v_row)) *
// rsqrt(v_col) with stats[k * 4 + 0] the sum of v_row; full, v = decay * v
// + mix * (g^2 + eps1) and y = g / sqrt(v).
extern "C" __global__ void adafactor_y(const float* g, float* state, const u64* table,
                                       const u64* chunks, const double* stats, float decay,
                                       float mix, float* y) {
    u64 k = chunks[2 * blockIdx.x], start = chunks[2 * blockIdx.x + 1];
    const u64* e = table + k * T5_FIELDS;
    u64 kind = e[F_KIND], rows = e[F_ROWS], cols = e[F_COLS], at = e[F_AT];
    u64 count = rows * cols;
    u64 end = start + T5_CHUNK < count ? start + T5_CHUNK : count;
    float* v = state + e[F_STATE];
    int rows_first = kind == ROWS_FIRST;
    u64 n_row = rows_first ? rows : cols;
    const float* v_row = v;
    const float* v_col = v + n_row;
    float row_mean = kind == FULL ? 0.0f : (float)(stats[k * 4] / (double)n_row);
    for (u64 idx = start + threadIdx.x; idx < end; idx += blockDim.x) {
        u64 f = at + idx;
        float gi = g[f];
        if (kind == FULL) {
            float vi = decay * v[idx] + mix * (gi * gi + T5_ADAFACTOR_EPS1);
            v[idx] = vi;
            y[f] = gi / sqrtf(vi);
            continue;
        }
        u64 i = row_of(idx, cols, count), j = idx - i * cols;
        u64 a = rows_first ? i : j, b = rows_first ? j : i;
        float row_factor = 1.0f / sqrtf(v_row[a] / row_mean);
        float col_factor = 1.0f / sqrtf(v_col[b]);
        y[f] = gi * row_factor * col_factor;
    }
}

// p -= scale * y / max(rms(y) / clipping, 1), scale = lr * max(rms(p), eps2)
// with parameter scaling (else lr), a chunk a block as adafactor_y.
// stats[k * 4 + 1] = the sum of y^2, stats[k * 4 + 2] = the sum of p^2
// (taken before the update).
extern "C" __global__ void adafactor_apply(float* p, const float* y, const u64* table,
                                           const u64* chunks, const double* stats, float lr,
                                           float clipping, int param_scale) {
    u64 k = chunks[2 * blockIdx.x], start = chunks[2 * blockIdx.x + 1];
    const u64* e = table + k * T5_FIELDS;
    u64 count = e[F_ROWS] * e[F_COLS], at = e[F_AT];
    u64 end = start + T5_CHUNK < count ? start + T5_CHUNK : count;
    const double* st = stats + k * 4;
    float update_scale = lr;
    if (param_scale) {
        float rms_p = (float)sqrt(st[2] / (double)count);
        update_scale *= fmaxf(rms_p, T5_ADAFACTOR_EPS2);
    }
    float denom = 1.0f;
    if (clipping > 0.0f) {
        float rms_y = (float)sqrt(st[1] / (double)count);
        denom = fmaxf(rms_y / clipping, 1.0f);
    }
    for (u64 idx = start + threadIdx.x; idx < end; idx += blockDim.x) {
        u64 f = at + idx;
        p[f] -= update_scale * (y[f] / denom);
    }
}
