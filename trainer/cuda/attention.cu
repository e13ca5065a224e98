// Attention's memory-bound parts on the GPU, around the products (q k^T,
// p v and their gradients, batched GEMMs): the scores' bias, mask, softmax
// and dropout forward, the softmax and dropout backward, the position
// bias's gradient summed over the batch rows and then per bucket. The row
// kernels are the CPU's fused attention (trainer/src/kernels/attention.rs,
// lanes.rs) operation for operation, so that the same scores give the same
// probabilities bit for bit; compiled with --fmad=false.
//
//   forward   p = softmax((mask + pos) + scores) per row; pd = p * drop
//   backward  ds = dp * drop; ds = p * (ds - sum(ds * p)) per row
//
// Shapes: scores, p, pd, dp, drop [b, h, t, s]; pos [h, t, s] (null for
// cross-attention); mask [b, t, s] (0 or a large negative value). A row's
// reductions run in T5_LANES lanes (lane l adds the elements l, l + LANES,
// ... of the whole LANES-wide chunks, in order), then the lanes in order,
// then the tail: thread l of the row does lane l and thread 0 the rest, as
// the CPU's row_max, lane_sum and lane_dot. Deterministic: no atomics.

#ifndef T5_LANES
#error "T5_LANES is set by the host"
#endif

#define ROWS_PER_BLOCK 16

// A row's values: with K > 0 (rows of at most T5_LANES * K values) held in
// registers, K a thread (K = 8: the decoder's 114 keys; 32: T5's 512
// inputs), each read once and written once; with K = 0 (longer rows) in
// memory, where they are. The same code computes the same values in the
// same order for both: only where they live differs. Thread l of the row
// has its values j = l + k * T5_LANES, chunk k; the tail past the whole
// chunks, which thread 0 reduces, goes through shared memory (`tail`).
template <unsigned K>
struct RowValues {
    float v[K];
    __device__ static unsigned chunks(unsigned) { return K; }
    __device__ float get(const float*, unsigned k, unsigned) const { return v[k]; }
    __device__ void set(float*, unsigned k, unsigned, float y) { v[k] = y; }
};
template <>
struct RowValues<0> {
    __device__ static unsigned chunks(unsigned s) { return (s + T5_LANES - 1) / T5_LANES; }
    __device__ float get(const float* mem, unsigned, unsigned j) const { return mem[j]; }
    __device__ void set(float* mem, unsigned, unsigned j, float y) { mem[j] = y; }
};

// Thread 0's part of a row's reductions, over its lanes' partial results
// and the n tail values: the max (the tail's, then the lanes'), and the
// sum (the lanes in order from -0.0, then the tail in order from -0.0).
__device__ float row_max(const float* lanes, const float* tail, unsigned n) {
    float mx = NEG_INF;
    for (unsigned j = 0; j < n; j++) {
        mx = fmaxf(mx, tail[j]);
    }
    for (unsigned k = 0; k < T5_LANES; k++) {
        mx = fmaxf(mx, lanes[k]);
    }
    return mx;
}

__device__ float row_sum(const float* lanes, const float* tail, unsigned n) {
    float sum = -0.0f;
    for (unsigned k = 0; k < T5_LANES; k++) {
        sum += lanes[k];
    }
    float t = -0.0f;
    for (unsigned j = 0; j < n; j++) {
        t += tail[j];
    }
    return sum + t;
}

// One row of the forward (x its scores, p its position bias or null, m its
// mask), `live` when the row exists; every thread of the block calls it.
template <unsigned K>
__device__ void softmax_fwd_row(float* x, const float* p, const float* m, const float* drop,
                                float* pd, unsigned short* ready, u64 row, bool live, unsigned s,
                                float* lanes, float* row_v, float* tail) {
    unsigned l = threadIdx.x;
    unsigned full = s - s % T5_LANES;
    unsigned chunks = RowValues<K>::chunks(s);
    RowValues<K> v;
    // the biased scores and their lanes' max
    if (live) {
        float acc = NEG_INF;
        T5_UNROLL
        for (unsigned k = 0; k < chunks; k++) {
            unsigned j = l + k * T5_LANES;
            if (j < s) {
                float y = p ? (m[j] + p[j]) + x[j] : m[j] + x[j];
                v.set(x, k, j, y);
                if (j < full) {
                    acc = fmaxf(acc, y);
                } else {
                    tail[l] = y;
                }
            }
        }
        lanes[l] = acc;
    }
    __syncthreads();
    if (live && l == 0) {
        *row_v = row_max(lanes, tail, s - full);
    }
    __syncthreads();
    // the exponentials and their lanes' sums
    if (live) {
        float mx = *row_v;
        float acc = 0.0f;
        T5_UNROLL
        for (unsigned k = 0; k < chunks; k++) {
            unsigned j = l + k * T5_LANES;
            if (j < s) {
                float e = exp_fast(v.get(x, k, j) - mx);
                v.set(x, k, j, e);
                if (j < full) {
                    acc += e;
                } else {
                    tail[l] = e;
                }
            }
        }
        lanes[l] = acc;
    }
    __syncthreads();
    if (live && l == 0) {
        *row_v = 1.0f / row_sum(lanes, tail, s - full);
    }
    __syncthreads();
    if (live) {
        float inv = *row_v;
        T5_UNROLL
        for (unsigned k = 0; k < chunks; k++) {
            unsigned j = l + k * T5_LANES;
            if (j < s) {
                float y = v.get(x, k, j) * inv;
                if (drop) {
                    x[j] = y;
                    put(pd, ready, row * s + j, y * drop[row * s + j]);
                } else {
                    put(x, ready ? ready + row * s : 0, j, y);
                }
            }
        }
    }
}

// forward: grid ceil(b h t / ROWS_PER_BLOCK) blocks of (T5_LANES,
// ROWS_PER_BLOCK). `scores` becomes p; pd (when drop is not null) the
// probabilities after dropout, as multiplied by v; `ready` (when not null)
// the bf16 bits of what is multiplied by v (pd, or p without dropout).
extern "C" __global__ void attn_softmax_fwd(float* scores, const float* pos, const float* mask,
                                            const float* drop, float* pd, unsigned short* ready,
                                            u64 b, unsigned heads, unsigned t, unsigned s) {
    __shared__ float lanes[ROWS_PER_BLOCK][T5_LANES];
    __shared__ float tail[ROWS_PER_BLOCK][T5_LANES];
    __shared__ float row_v[ROWS_PER_BLOCK];
    unsigned ty = threadIdx.y;
    u64 row = (u64)blockIdx.x * ROWS_PER_BLOCK + ty;
    bool live = row < b * heads * t;
    u64 bh = row / t, r = row % t;
    u64 bi = bh / heads, h = bh % heads;
    float* x = scores + row * s;
    const float* m = mask + (bi * t + r) * s;
    const float* p = pos ? pos + (h * t + r) * s : 0;
    if (s <= 8 * T5_LANES) {
        softmax_fwd_row<8>(x, p, m, drop, pd, ready, row, live, s, lanes[ty], &row_v[ty], tail[ty]);
    } else if (s <= 32 * T5_LANES) {
        softmax_fwd_row<32>(x, p, m, drop, pd, ready, row, live, s, lanes[ty], &row_v[ty],
                            tail[ty]);
    } else {
        softmax_fwd_row<0>(x, p, m, drop, pd, ready, row, live, s, lanes[ty], &row_v[ty], tail[ty]);
    }
}

// One row of the backward (d its dp, pr its probabilities), as the forward's.
template <unsigned K>
__device__ void softmax_bwd_row(float* d, const float* pr, const float* drop, float* ds,
                                unsigned short* ready, u64 row, bool live, unsigned s,
                                float* lanes, float* row_dot, float* tail) {
    unsigned l = threadIdx.x;
    unsigned full = s - s % T5_LANES;
    unsigned chunks = RowValues<K>::chunks(s);
    // dp after dropout (in memory: written back when dropout changed it),
    // and the probabilities
    RowValues<K> dv, pv;
    if (live) {
        float acc = 0.0f;
        T5_UNROLL
        for (unsigned k = 0; k < chunks; k++) {
            unsigned j = l + k * T5_LANES;
            if (j < s) {
                float y = drop ? d[j] * drop[row * s + j] : d[j];
                if (K > 0 || drop) {
                    dv.set(d, k, j, y);
                }
                float q = pr[j];
                if constexpr (K > 0) {
                    pv.set(nullptr, k, j, q);
                }
                if (j < full) {
                    acc += y * q;
                } else {
                    tail[l] = y * q;
                }
            }
        }
        lanes[l] = acc;
    }
    __syncthreads();
    if (live && l == 0) {
        *row_dot = row_sum(lanes, tail, s - full);
    }
    __syncthreads();
    if (live) {
        float dot = *row_dot;
        T5_UNROLL
        for (unsigned k = 0; k < chunks; k++) {
            unsigned j = l + k * T5_LANES;
            if (j < s) {
                put(ds ? ds + row * s : 0, ready ? ready + row * s : 0, j,
                    pv.get(pr, k, j) * (dv.get(d, k, j) - dot));
            }
        }
    }
}

// backward: same grid. dS from `dp` (dO v^T; scratch: it may get dp times
// the mask) in `ds` (dp itself, or null: the bf16 bits in `ready` alone;
// those when not null); p is the forward's probabilities before dropout.
extern "C" __global__ void attn_softmax_bwd(float* dp, const float* p, const float* drop,
                                            float* ds, unsigned short* ready, u64 rows,
                                            unsigned s) {
    __shared__ float lanes[ROWS_PER_BLOCK][T5_LANES];
    __shared__ float tail[ROWS_PER_BLOCK][T5_LANES];
    __shared__ float row_dot[ROWS_PER_BLOCK];
    unsigned ty = threadIdx.y;
    u64 row = (u64)blockIdx.x * ROWS_PER_BLOCK + ty;
    bool live = row < rows;
    float* d = dp + row * s;
    const float* pr = p + row * s;
    if (s <= 8 * T5_LANES) {
        softmax_bwd_row<8>(d, pr, drop, ds, ready, row, live, s, lanes[ty], &row_dot[ty],
                           tail[ty]);
    } else if (s <= 32 * T5_LANES) {
        softmax_bwd_row<32>(d, pr, drop, ds, ready, row, live, s, lanes[ty], &row_dot[ty],
                            tail[ty]);
    } else {
        softmax_bwd_row<0>(d, pr, drop, ds, ready, row, live, s, lanes[ty], &row_dot[ty],
                           tail[ty]);
    }
}

// The position bias's gradient: dpos[h, r, j] += sum over the batch rows,
// in row order, of ds[bi, h, r, j] (the CPU's order), dS as the products
// read it: its bf16 bits (`bits` not null), ds rounded to bf16 (`round`),
// or ds. One thread a value.
extern "C" __global__ void attn_bias_grad(const float* ds, const unsigned short* bits, int round,
                                          float* dpos, u64 b, unsigned heads, unsigned t,
                                          unsigned s) {
    u64 per_row = (u64)heads * t * s;
    FOR_EACH(i, per_row) {
        float acc = dpos[i];
        for (u64 bi = 0; bi < b; bi++) {
            u64 at = bi * per_row + i;
            acc += bits ? bf16_value(bits[at]) : (round ? bf16_value(bf16_bits(ds[at])) : ds[at]);
        }
        dpos[i] = acc;
    }
}

// The bucket table's gradient from dpos [h, t, s] and the bucket of each
// (r, j) [t, s], in two fixed-order steps (no atomics): per (h, r) the sum
// of each bucket over j in order, into partials [h, t, nb]; then per
// (bucket, h) the rows' partials in row order, added to dtable [nb, h].
// nb <= 64 (T5 uses 32).
#define MAX_BUCKETS 64
extern "C" __global__ void bucket_partials(const float* dpos, const unsigned* buckets,
                                           float* partials, unsigned heads, unsigned t, unsigned s,
                                           unsigned nb) {
    u64 rows = (u64)heads * t;
    FOR_EACH(hr, rows) {
        float acc[MAX_BUCKETS];
        for (unsigned k = 0; k < nb; k++) {
            acc[k] = 0.0f;
        }
        u64 r = hr % t;
        for (unsigned j = 0; j < s; j++) {
            acc[buckets[r * s + j]] += dpos[hr * s + j];
        }
        for (unsigned k = 0; k < nb; k++) {
            partials[hr * nb + k] = acc[k];
        }
    }
}

extern "C" __global__ void CHAIN_KERNEL bucket_grad(const float* partials, float* dtable, unsigned heads,
                                       unsigned t, unsigned nb) {
    u64 n = (u64)nb * heads;
    FOR_EACH(i, n) {
        u64 k = i / heads, h = i % heads;
        const float* part = partials + h * t * nb + k;
        // (a chain of t sums: common.cuh's chain_sum)
        float acc = chain_sum(dtable[i], t, [&](u64 r) { return part[r * nb]; });
        dtable[i] = acc;
    }
}

// The position bias from its table [nb, h]: pos[h, r, j] = table[buckets[r,
// j], h].
extern "C" __global__ void position_bias(const float* table, const unsigned* buckets, float* pos,
                                         unsigned heads, unsigned t, unsigned s) {
    u64 per_head = (u64)t * s;
    u64 n = heads * per_head;
    FOR_EACH(i, n) {
        u64 h = i / per_head, rj = i % per_head;
        pos[i] = table[(u64)buckets[rj] * heads + h];
    }
}

// The attention masks from the segment ids (0: padding), the host's rule
// (model::is_masked): m[(r * tq + i) * tk + j] = T5_MASKED or 0. kind 0:
// the encoder's (tq = tk = s), 1: the decoder's self-attention (t x t),
// 2: cross-attention (t x s); dseg null when the rows are not packed.
// Grid-stride over b * tq * tk values.
extern "C" __global__ void attn_mask(const unsigned* eseg, const unsigned* dseg, u64 b, unsigned s,
                                     unsigned t, int kind, float* m) {
    u64 tq = kind == 0 ? s : t;
    u64 tk = kind == 1 ? t : s;
    u64 n = b * tq * tk;
    for (u64 x = (u64)blockIdx.x * blockDim.x + threadIdx.x; x < n; x += (u64)gridDim.x * blockDim.x) {
        u64 r = x / (tq * tk);
        u64 i = (x / tk) % tq, j = x % tk;
        const unsigned* e = eseg + r * s;
        const unsigned* d = dseg ? dseg + r * t : 0;
        bool masked;
        if (kind == 0) {
            masked = e[j] == 0 || (e[i] != 0 && e[i] != e[j]);
        } else if (kind == 1) {
            masked = j > i || (d && d[i] != d[j]);
        } else {
            masked = e[j] == 0 || (d && d[i] != 0 && d[i] != e[j]);
        }
        m[x] = masked ? T5_MASKED : 0.0f;
    }
}
