// What every kernel file of the trainer shares; the host puts it in front
// of each (trainer/src/device/mod.rs), since NVRTC has no include path
// here. The element-wise functions are the CPU's (trainer/src/kernels/
// lanes.rs) operation for operation, so that with --fmad=false they round
// the same.

#ifndef T5_GELU_C
#error "T5_GELU_C and T5_SQRT_2_OVER_PI are set by the host"
#endif

typedef unsigned long long u64;

// -inf (NVRTC has no math.h)
#define NEG_INF __int_as_float(0xff800000)

// e^x as the CPU's exp_fast: x = k ln 2 + r, e^r by a degree-6 Taylor
// polynomial, 2^k from the exponent bits; inputs clamped to [-87.3, 88.4].
__device__ float exp_fast(float x) {
    const float LOG2E = 1.442695040888963407f;
    const float LN2_HI = 0.6933594f;
    const float LN2_LO = -2.1219444e-4f;
    const float SHIFT = 12582912.0f;
    const float LO = -87.33655f, HI = 88.37626f;
    x = x < LO ? LO : (x > HI ? HI : x);
    float t = x * LOG2E + SHIFT;
    float k = t - SHIFT;
    int ki = (int)(__float_as_uint(t) - __float_as_uint(SHIFT));
    float r = x - k * LN2_HI - k * LN2_LO;
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6.0f + r * (1.0f / 24.0f
              + r * (1.0f / 120.0f + r * (1.0f / 720.0f))))));
    return p * __uint_as_float(((unsigned)(ki + 127)) << 23);
}

// tanh from one exp_fast, as the CPU's tanh_fast.
__device__ float tanh_fast(float x) {
    x = x < -9.0f ? -9.0f : (x > 9.0f ? 9.0f : x);
    float e = exp_fast(2.0f * x);
    return (e - 1.0f) / (e + 1.0f);
}

// HF's gelu_new and its derivative, as the CPU's gelu_and_grad.
__device__ void gelu_and_grad(float x, float* y, float* dy) {
    float inner = T5_SQRT_2_OVER_PI * (x + T5_GELU_C * x * x * x);
    float t = tanh_fast(inner);
    *y = 0.5f * x * (1.0f + t);
    float dinner = T5_SQRT_2_OVER_PI * (1.0f + 3.0f * T5_GELU_C * x * x);
    *dy = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * dinner;
}

// Unrolls the loop that follows in full where NVRTC compiles it (a loop
// over a register array, which stays in registers only so); the CPU
// stand-in's compiler unrolls as it sees fit.
#ifdef __CUDACC_RTC__
#define T5_UNROLL _Pragma("unroll")
#else
#define T5_UNROLL
#endif

// acc + term(0) + term(1) + ... + term(n - 1), added in that order (each
// term converted to acc's type as it is added), the terms made (loaded)
// LOAD_AHEAD at a time ahead of their adds: a sum that
// is one long chain in a fixed order (a column of a weight gradient, an
// Adafactor row or column, a frequent token's rows) is then not paced by
// one load's latency a term.
#define LOAD_AHEAD 32

// A kernel of such chains, launched in blocks of T5_CHAIN_THREADS threads
// (the host's CHAIN_THREADS): told so, ptxas gives each thread the
// registers (at most 64: 32 such blocks a multiprocessor) to have all
// LOAD_AHEAD loads of a chain in flight at once, where it otherwise keeps
// about five.
#ifndef T5_CHAIN_THREADS
#error "T5_CHAIN_THREADS is set by the host"
#endif
#define CHAIN_KERNEL __launch_bounds__(T5_CHAIN_THREADS, 1024 / T5_CHAIN_THREADS)
template <class T, class F>
__device__ T chain_sum(T acc, u64 n, F term) {
    u64 i = 0;
    for (; i + LOAD_AHEAD <= n; i += LOAD_AHEAD) {
        decltype(term(0)) t[LOAD_AHEAD];
        T5_UNROLL
        for (unsigned u = 0; u < LOAD_AHEAD; u++) {
            t[u] = term(i + u);
        }
        T5_UNROLL
        for (unsigned u = 0; u < LOAD_AHEAD; u++) {
            acc += t[u];
        }
    }
    for (; i < n; i++) {
        acc += term(i);
    }
    return acc;
}

// Grid-stride loop over n elements.
#define FOR_EACH(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

// f32 to bf16 bits, rounded to nearest, ties to even; NaN stays NaN (quiet):
// the `half` crate's bf16::from_f32, bit for bit.
__device__ __forceinline__ unsigned short bf16_bits(float x) {
    unsigned u = __float_as_uint(x);
    unsigned short h = (unsigned short)(u >> 16);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        h |= 0x0040u;
    } else if ((u & 0x8000u) != 0 && (u & (3u * 0x8000u - 1u)) != 0) {
        h += 1;
    }
    return h;
}

// The f32 value of bf16 bits (exact).
__device__ __forceinline__ float bf16_value(unsigned short h) {
    return __uint_as_float((unsigned)h << 16);
}

// out[i] = v, and v's bf16 bits in ready[i] when ready is not null: a
// kernel writes the copy the bf16 products read (Backend::ready) with its
// output, instead of a rounding pass over it afterwards. out is null when
// nothing but those products reads the values (Readers::Products).
__device__ __forceinline__ void put(float* out, unsigned short* ready, u64 i, float v) {
    if (out) {
        out[i] = v;
    }
    if (ready) {
        ready[i] = bf16_bits(v);
    }
}
