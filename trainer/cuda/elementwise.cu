// The feed-forward's activations and dropout on the GPU, bit for bit the
// CPU's fused feed-forward (trainer/src/kernels/products.rs, lanes.rs), and
// the dropout masks themselves, drawn from the same ChaCha8 stream as the
// CPU's (trainer/src/model/dropout.rs), so a GPU run drops what a CPU run
// drops and a resumed run what an uninterrupted one does.
//
//   gated forward   h = gelu_new(a) * b (* mask)
//   gated backward  g *= mask; db = g * gelu_new(a); da = g * gelu_new'(a) * b
//   relu forward    h = max(h, 0) (* mask)
//   relu backward   g = h > 0 ? g : 0 (* mask)
//
// Compiled with --fmad=false. A mask is absent when its pointer is null.

// ---- the feed-forward's activations (one thread per element) ----

// ab: rows of 2f values, a row of a (wi_0's product) and then one of b
// (wi_1's), as one product of the joined weights makes them; h, g, mask:
// rows of f values.
extern "C" __global__ void gated_fwd(const float* ab, const float* mask, float* h,
                                     unsigned short* ready, u64 rows, unsigned f) {
    u64 n = rows * f;
    FOR_EACH(i, n) {
        const float* r = ab + (i / f) * 2 * f + i % f;
        float y, dy;
        gelu_and_grad(r[0], &y, &dy);
        float v = y * r[f];
        if (mask) {
            v *= mask[i];
        }
        put(h, ready, i, v);
    }
}

// dab: a's gradient and then b's per row, as ab.
extern "C" __global__ void gated_bwd(const float* g, const float* ab, const float* mask,
                                     float* dab, unsigned short* ready, u64 rows, unsigned f) {
    u64 n = rows * f;
    FOR_EACH(i, n) {
        u64 at = (i / f) * 2 * f + i % f;
        float gi = g[i];
        if (mask) {
            gi *= mask[i];
        }
        float y, dy;
        gelu_and_grad(ab[at], &y, &dy);
        put(dab, ready, at + f, gi * y);
        put(dab, ready, at, gi * dy * ab[at + f]);
    }
}

extern "C" __global__ void relu_fwd(float* h, const float* mask, unsigned short* ready, u64 n) {
    FOR_EACH(i, n) {
        float v = fmaxf(h[i], 0.0f);
        if (mask) {
            v *= mask[i];
        }
        put(h, ready, i, v);
    }
}

extern "C" __global__ void relu_bwd(float* g, const float* h, const float* mask,
                                    unsigned short* ready, u64 n) {
    FOR_EACH(i, n) {
        float gi = h[i] > 0.0f ? g[i] : 0.0f;
        if (mask) {
            gi *= mask[i];
        }
        put(g, ready, i, gi);
    }
}

// ---- dropout masks from the ChaCha8 stream ----
//
// rand_chacha's ChaCha8Rng: the state is the constants "expand 32-byte k",
// the 8 key words (the seed, little-endian), a 64-bit block counter (words
// 12, 13) and a 64-bit stream (words 14, 15: 0). A block is the state after
// 4 double rounds plus the state; its 16 words are the stream's words
// 16c .. 16c + 15. Mask word w (of the stream's words from `start`) is
// `scale` when it is <= threshold, else 0: Dropout::mask's rule.

__device__ __forceinline__ unsigned rotl(unsigned x, int k) {
    return (x << k) | (x >> (32 - k));
}

#define QUARTER(a, b, c, d) \
    a += b; d = rotl(d ^ a, 16); \
    c += d; b = rotl(b ^ c, 12); \
    a += b; d = rotl(d ^ a, 8); \
    c += d; b = rotl(b ^ c, 7);

// One block of the stream: thread t makes block start / 16 + t and writes
// its words that fall in [start, start + n).
extern "C" __global__ void dropout_mask(u64 key01, u64 key23, u64 key45, u64 key67, u64 start,
                                        u64 n, unsigned threshold, float scale, float* mask) {
    u64 first = start / 16;
    u64 blocks = (start + n + 15) / 16 - first;
    u64 keys[4] = {key01, key23, key45, key67};
    for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < blocks;
         t += (u64)gridDim.x * blockDim.x) {
        u64 c = first + t;
        unsigned s[16] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u,
                          (unsigned)keys[0], (unsigned)(keys[0] >> 32),
                          (unsigned)keys[1], (unsigned)(keys[1] >> 32),
                          (unsigned)keys[2], (unsigned)(keys[2] >> 32),
                          (unsigned)keys[3], (unsigned)(keys[3] >> 32),
                          (unsigned)c, (unsigned)(c >> 32), 0u, 0u};
        unsigned x[16];
        for (int k = 0; k < 16; k++) {
            x[k] = s[k];
        }
        for (int r = 0; r < 4; r++) {
            QUARTER(x[0], x[4], x[8], x[12]);
            QUARTER(x[1], x[5], x[9], x[13]);
            QUARTER(x[2], x[6], x[10], x[14]);
            QUARTER(x[3], x[7], x[11], x[15]);
            QUARTER(x[0], x[5], x[10], x[15]);
            QUARTER(x[1], x[6], x[11], x[12]);
            QUARTER(x[2], x[7], x[8], x[13]);
            QUARTER(x[3], x[4], x[9], x[14]);
        }
        for (int k = 0; k < 16; k++) {
            u64 w = c * 16 + k;
            if (w >= start && w < start + n) {
                mask[w - start] = x[k] + s[k] <= threshold ? scale : 0.0f;
            }
        }
    }
}

// ---- bf16 operands for the tensor-core products ----

// y = the bf16 bits of x (common.cuh's bf16_bits).
extern "C" __global__ void to_bf16(const float* x, unsigned short* y, u64 n) {
    FOR_EACH(i, n) {
        y[i] = bf16_bits(x[i]);
    }
}

// ---- what the step does between the kernels above ----

// out = x + y * mask (a residual connection; no mask: x + y), out of
// place: x stays for the backward.
extern "C" __global__ void residual(float* out, const float* x, const float* y, const float* mask,
                                    u64 n) {
    FOR_EACH(i, n) {
        float v = y[i];
        if (mask) {
            v *= mask[i];
        }
        out[i] = x[i] + v;
    }
}

// An attention's projections between the rows they come in, [b, rows,
// parts, heads, d] (each row the parts' heads side by side: q, k, v), and
// heads of rows, [b, heads, rows, d] a part, where every (batch row, head)
// pair's matrix is one block, so that one batched product covers them all:
// the parts at h0, h1, h2 (h1 null: one after the other from h0).
// back = 0: rows to heads; 1: heads to rows. `ready` (when not null):
// the bf16 bits of what is written, in its layout (the heads' parts one
// after the other); the destination (h0, or x) null: the bits alone.
// Grid (blocks over a row's parts * heads * d values, rows along y in
// steps of the grid): reads and writes in runs of d; the index arithmetic
// in 32 bits but for one division a row (64-bit divisions are long
// instruction sequences, and this kernel moves tens of millions of values).
extern "C" __global__ void heads_layout(float* x, float* h0, float* h1, float* h2,
                                        unsigned short* ready, u64 b, unsigned rows,
                                        unsigned parts, unsigned heads, unsigned d, int back) {
    u64 part = b * rows * heads * d;
    unsigned width = parts * heads * d;
    for (u64 k = blockIdx.y; k < b * rows; k += gridDim.y) {
        u64 bi = k / rows;
        unsigned r = (unsigned)(k - bi * rows);
        for (unsigned e = blockIdx.x * blockDim.x + threadIdx.x; e < width;
             e += gridDim.x * blockDim.x) {
            unsigned c = e % d, ph = e / d;
            unsigned h = ph % heads, p = ph / heads;
            float* hp = h1 ? (p == 0 ? h0 : p == 1 ? h1 : h2) : h0 + p * part;
            u64 at = ((bi * heads + h) * rows + r) * d + c;
            u64 i = k * width + e;
            if (back) {
                put(x, ready, i, hp[at]);
            } else {
                put(h0 ? hp : 0, ready ? ready + p * part : 0, at, x[i]);
            }
        }
    }
}

// out = x * mask (no mask: a copy).
extern "C" __global__ void mul_masked(float* out, const float* x, const float* mask, u64 n) {
    FOR_EACH(i, n) {
        out[i] = mask ? x[i] * mask[i] : x[i];
    }
}

// x *= s.
extern "C" __global__ void scale(float* x, float s, u64 n) {
    FOR_EACH(i, n) {
        x[i] *= s;
    }
}

// Rows of d values: x[i] = table[ids[i]].
extern "C" __global__ void embed(const float* table, const unsigned* ids, float* x, u64 rows,
                                 unsigned d) {
    u64 n = rows * d;
    FOR_EACH(i, n) {
        x[i] = table[(u64)ids[i / d] * d + i % d];
    }
}

// The embedding's gradient in a fixed order: for each distinct token u
// (tokens[u]) and column c, dtable[token, c] += dx[p, c] over its rows p =
// positions[starts[u] .. starts[u + 1]], in row order. No atomics: one
// thread owns each (token, column).
extern "C" __global__ void CHAIN_KERNEL embed_grad(const float* dx, const unsigned* tokens,
                                      const unsigned* starts, const unsigned* positions,
                                      u64 ntok, unsigned d, float* dtable) {
    u64 n = ntok * d;
    FOR_EACH(i, n) {
        u64 u = i / d, c = i % d;
        float* dst = dtable + (u64)tokens[u] * d + c;
        // (a frequent token's rows are a long chain: common.cuh's chain_sum)
        const unsigned* rows = positions + starts[u];
        float acc = chain_sum(*dst, starts[u + 1] - starts[u],
                              [&](u64 k) { return dx[(u64)rows[k] * d + c]; });
        *dst = acc;
    }
}
