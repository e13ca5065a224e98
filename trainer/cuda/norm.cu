// T5's RMS norm on the GPU, forward and backward, bit for bit the CPU's
// fused kernel (trainer/src/kernels/norm.rs, lanes.rs): the same f32
// operations in the same order, so a GPU run and a CPU run agree exactly.
//
//   forward   o = x * inv * w, inv = 1 / sqrt(mean(x^2) + eps) per row
//   backward  dx += inv*w*g - x*c, c = (sum_k g_k w_k x_k) * inv^3 / d
//             dw += sum over rows of g * x * inv
//
// The CPU sums a row in T5_LANES lanes (lane l adds the elements
// l, l + LANES, ... of the whole LANES-wide chunks, in order), then the
// lanes in order from -0.0, then the tail; here thread l of the row does
// lane l and thread 0 the rest. The weight gradient is summed per block of
// T5_NORM_ROWS rows (each column in row order, from 0), then the blocks in
// order, as the CPU's parallel chunks. Compiled with --fmad=false.

#ifndef T5_LANES
#error "T5_LANES is set by the host"
#endif
#ifndef T5_NORM_ROWS
#error "T5_NORM_ROWS is set by the host"
#endif

// Rows per block of the row kernels: blockDim = (T5_LANES, ROWS_PER_BLOCK).
#define ROWS_PER_BLOCK 16

// forward: grid ceil(rows / ROWS_PER_BLOCK) blocks of (T5_LANES, ROWS_PER_BLOCK)
// `ready` (when not null): o's bf16 bits (common.cuh's put).
extern "C" __global__ void rms_norm_fwd(const float* x, const float* w, float* o,
                                        unsigned short* ready, float* inv, u64 rows, unsigned d,
                                        float eps) {
    __shared__ float lanes[ROWS_PER_BLOCK][T5_LANES];
    __shared__ float row_inv[ROWS_PER_BLOCK];
    unsigned l = threadIdx.x, ty = threadIdx.y;
    u64 r = (u64)blockIdx.x * ROWS_PER_BLOCK + ty;
    unsigned full = d - d % T5_LANES;
    const float* xr = x + r * d;
    if (r < rows) {
        float acc = 0.0f;
        for (unsigned j = l; j < full; j += T5_LANES) {
            acc += xr[j] * xr[j];
        }
        lanes[ty][l] = acc;
    }
    __syncthreads();
    if (r < rows && l == 0) {
        float s = -0.0f;
        for (unsigned k = 0; k < T5_LANES; k++) {
            s += lanes[ty][k];
        }
        float tail = -0.0f;
        for (unsigned j = full; j < d; j++) {
            tail += xr[j] * xr[j];
        }
        float ms = (s + tail) / (float)d;
        float i = 1.0f / sqrtf(ms + eps);
        row_inv[ty] = i;
        inv[r] = i;
    }
    __syncthreads();
    if (r < rows) {
        float i = row_inv[ty];
        for (unsigned j = l; j < d; j += T5_LANES) {
            put(o, ready, r * d + j, xr[j] * i * w[j]);
        }
    }
}

// backward, dx: same grid as the forward; adds to dx (the sum's bf16 bits
// in `ready` when not null).
extern "C" __global__ void rms_norm_bwd_x(const float* x, const float* g, const float* inv,
                                          const float* w, float* dx, unsigned short* ready,
                                          u64 rows, unsigned d) {
    __shared__ float lanes[ROWS_PER_BLOCK][T5_LANES];
    __shared__ float row_c[ROWS_PER_BLOCK];
    unsigned l = threadIdx.x, ty = threadIdx.y;
    u64 r = (u64)blockIdx.x * ROWS_PER_BLOCK + ty;
    unsigned full = d - d % T5_LANES;
    const float* xr = x + r * d;
    const float* gr = g + r * d;
    if (r < rows) {
        float acc = 0.0f;
        for (unsigned j = l; j < full; j += T5_LANES) {
            acc += gr[j] * w[j] * xr[j];
        }
        lanes[ty][l] = acc;
    }
    __syncthreads();
    if (r < rows && l == 0) {
        float dot = -0.0f;
        for (unsigned k = 0; k < T5_LANES; k++) {
            dot += lanes[ty][k];
        }
        for (unsigned j = full; j < d; j++) {
            dot += gr[j] * w[j] * xr[j];
        }
        float i = inv[r];
        row_c[ty] = dot * i * i * i / (float)d;
    }
    __syncthreads();
    if (r < rows) {
        float i = inv[r], c = row_c[ty];
        for (unsigned j = l; j < d; j += T5_LANES) {
            put(dx, ready, r * d + j, dx[r * d + j] + (i * w[j] * gr[j] - xr[j] * c));
        }
    }
}

// backward, the weight gradient's partial sums: partials[b * d + j] = sum
// over the rows of block b (T5_NORM_ROWS rows) of g * x * inv, in row order.
// grid (ceil(d / blockDim.x), at most 65,535): row blocks blockIdx.y,
// blockIdx.y + gridDim.y, ...
extern "C" __global__ void CHAIN_KERNEL rms_norm_bwd_w_partials(const float* x, const float* g, const float* inv,
                                                   float* partials, u64 rows, unsigned d) {
    unsigned j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) {
        return;
    }
    u64 blocks = (rows + T5_NORM_ROWS - 1) / T5_NORM_ROWS;
    for (u64 b = blockIdx.y; b < blocks; b += gridDim.y) {
        u64 end = (b + 1) * T5_NORM_ROWS < rows ? (b + 1) * T5_NORM_ROWS : rows;
        u64 r0 = b * T5_NORM_ROWS;
        float acc = chain_sum(0.0f, end - r0, [&](u64 u) {
            u64 r = r0 + u;
            return g[r * d + j] * x[r * d + j] * inv[r];
        });
        partials[b * d + j] = acc;
    }
}

// dw[j] += the blocks' partial sums, in block order (common.cuh's
// chain_sum: up to hundreds of sums a thread).
extern "C" __global__ void CHAIN_KERNEL rms_norm_bwd_w(const float* partials, u64 blocks, unsigned d, float* dw) {
    for (unsigned j = blockIdx.x * blockDim.x + threadIdx.x; j < d; j += gridDim.x * blockDim.x) {
        float acc = chain_sum(dw[j], blocks, [&](u64 b) { return partials[b * d + j]; });
        dw[j] = acc;
    }
}
