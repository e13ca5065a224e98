// The CPU stand-in's cuBLAS (libcublas.so): the strided batched product
// the trainer's GPU code uses (cublasGemmStridedBatchedEx), column-major
// as cuBLAS, on host memory (the driver stand-in's device memory), with
// cuBLAS's argument checks. f32 or bf16 operands, f32 results and sums
// (each in k order); TF32 compute rounds f32 operands to TF32 first (10
// mantissa bits, to nearest) as the tensor cores do. With beta = 0, C is
// not read (it may hold anything, NaN included), as cuBLAS promises.
// With T5MIX_STANDIN_HOST_ONLY=1 (driver.cpp) products are checked, counted
// and not computed.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "env.h"

typedef int cublasStatus_t;
enum { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_NOT_SUPPORTED = 15 };
enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
enum { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 };
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };

namespace {

struct Handle {
    int unused;
};

float bits_to_f32(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

float tf32(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    if ((b & 0x7f800000u) == 0x7f800000u) return x;  // inf, NaN
    return bits_to_f32((b + 0x1000u) & ~0x1fffu);
}

// element i of an operand of `type`
float load(const void* p, int type, int64_t i, bool round_tf32) {
    if (type == CUDA_R_16BF) {
        return bits_to_f32((uint32_t) static_cast<const uint16_t*>(p)[i] << 16);
    }
    float x = static_cast<const float*>(p)[i];
    return round_tf32 ? tf32(x) : x;
}

int64_t max1(int64_t a) { return a > 1 ? a : 1; }

const bool host_only = standin_host_only();
std::atomic<unsigned long long> products;
__attribute__((destructor)) void print_calls() {
    if (host_only) fprintf(stderr, "CUDA stand-in calls: products %llu\n", products.load());
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(void** h) {
    *h = new Handle();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(void* h) {
    delete static_cast<Handle*>(h);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(void*, void*) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(void*, int) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace_v2(void*, void*, size_t) { return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t cublasGemmStridedBatchedEx(void* handle, int ta, int tb, int m, int n, int k,
                                          const void* alpha, const void* a, int atype, int lda,
                                          long long stride_a, const void* b, int btype, int ldb,
                                          long long stride_b, const void* beta, void* c, int ctype,
                                          int ldc, long long stride_c, int batch, int compute,
                                          int /*algo*/) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    bool types = atype == btype && (atype == CUDA_R_32F || atype == CUDA_R_16BF) &&
                 ctype == CUDA_R_32F &&
                 (compute == CUBLAS_COMPUTE_32F ||
                  (compute == CUBLAS_COMPUTE_32F_FAST_TF32 && atype == CUDA_R_32F));
    if (!types) return CUBLAS_STATUS_NOT_SUPPORTED;
    bool ops = (ta == CUBLAS_OP_N || ta == CUBLAS_OP_T) && (tb == CUBLAS_OP_N || tb == CUBLAS_OP_T);
    if (!ops || m < 0 || n < 0 || k < 0 || batch < 0 || lda < max1(ta == CUBLAS_OP_N ? m : k) ||
        ldb < max1(tb == CUBLAS_OP_N ? k : n) || ldc < max1(m)) {
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    products.fetch_add(1, std::memory_order_relaxed);
    if (host_only) return CUBLAS_STATUS_SUCCESS;
    bool round = compute == CUBLAS_COMPUTE_32F_FAST_TF32;
    float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    float* cf = static_cast<float*>(c);
    for (int64_t p = 0; p < batch; p++) {
        for (int64_t j = 0; j < n; j++) {
            for (int64_t i = 0; i < m; i++) {
                float acc = 0.0f;
                for (int64_t l = 0; l < k; l++) {
                    int64_t ai = p * stride_a + (ta == CUBLAS_OP_N ? i + l * lda : l + i * lda);
                    int64_t bi = p * stride_b + (tb == CUBLAS_OP_N ? l + j * ldb : j + l * ldb);
                    acc += load(a, atype, ai, round) * load(b, btype, bi, round);
                }
                float& out = cf[p * stride_c + i + j * ldc];
                out = be == 0.0f ? al * acc : al * acc + be * out;
            }
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
