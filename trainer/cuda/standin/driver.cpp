// The CPU stand-in's CUDA driver (libcuda.so): one "GPU" whose memory is
// host memory and whose streams run every operation at once, in the order
// issued. Kernels come from the NVRTC stand-in (nvrtc.cpp) as shared
// objects and run on the CPU (kernel_host.h). Only the calls the trainer's
// GPU code makes through cudarc are here.
//
// What it checks as a GPU would, and more: grid and block limits (a grid
// past 65,535 blocks along y or z is refused), copies within their
// allocations, and device memory reads past an allocation's end (each
// allocation ends at a page that cannot be touched: the test crashes).
// New allocations are filled with 0xff bytes (NaN as f32), so a kernel that
// reads a value nobody wrote spreads NaN instead of passing by luck.
// T5MIX_STANDIN_MEMORY=<bytes> makes a GPU of that much memory: an
// allocation past it fails with CUDA_ERROR_OUT_OF_MEMORY, as a full GPU's.
//
// With T5MIX_STANDIN_HOST_ONLY=1 it does no device work: kernels are
// checked and not run, memory is neither guarded, filled nor set
// (cuBLAS's stand-in skips its products too), copies to the host read
// zeros, and at exit it prints how many calls of each kind the process
// made. A step timed so is the host's own cost of issuing it, the GPU
// taken as infinitely fast (scripts/host-overhead.sh).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <malloc.h>
#include <map>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <unistd.h>

#include "env.h"

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

namespace {

struct Context {
    int unused;
};
struct Stream {
    int unused;
};
struct Pool {
    int unused;
};
struct Event {
    std::chrono::steady_clock::time_point at;
};
struct Module {
    void* lib;
    int (*launch)(void (*)(void**), const unsigned*, const unsigned*, void**);
};
struct Function {
    Module* module;
    void (*thunk)(void**);
};

const bool host_only = standin_host_only();
// host-only allocations up to 32 MiB (glibc's most) come from the heap,
// kept once grown: few system calls a step once it has reached the step's
// peak (set at the first allocation)
void keep_heap() {
    static bool kept = [] {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, -1);
        return true;
    }();
    (void)kept;
}
// T5MIX_STANDIN_MEMORY=<bytes>: the device memory (0: the host's)
const size_t memory_limit = [] {
    const char* v = getenv("T5MIX_STANDIN_MEMORY");
    return v ? (size_t)strtoull(v, nullptr, 10) : 0;
}();
enum Call { LAUNCH, ALLOC, FREE, TO_DEVICE, TO_HOST, ON_DEVICE, MEMSET, EVENT, SYNC, CALLS };
const char* const call_names[CALLS] = {"kernel launches", "allocations", "frees",
                                       "copies to the device", "copies to the host",
                                       "copies on the device", "memsets", "event records",
                                       "synchronizations"};
std::atomic<unsigned long long> calls[CALLS];
void count(Call c) { calls[c].fetch_add(1, std::memory_order_relaxed); }
__attribute__((destructor)) void print_calls() {
    if (!host_only) return;
    for (int c = 0; c < CALLS; c++) {
        fprintf(stderr, "CUDA stand-in calls: %s %llu\n", call_names[c], calls[c].load());
    }
}

Context the_context;
Pool the_pool;
const size_t PAGE = 4096;

// live allocations: start -> (bytes asked, bytes mapped, mapping)
struct Allocation {
    size_t bytes, mapped;
    char* map;
};
std::mutex memory_lock;
std::map<uintptr_t, Allocation> allocations;
size_t live_bytes = 0;  // the bytes asked by the live allocations
size_t peak_bytes = 0;  // their most since the start (or the last reset)

// one kernel at a time in the process: a module's statics are its blocks'
// shared memory
std::mutex launch_lock;

// whether `bytes` more fit in the device memory, counted as used when so
bool reserve(size_t bytes) {
    std::lock_guard<std::mutex> g(memory_lock);
    if (memory_limit && bytes > memory_limit - live_bytes) return false;
    live_bytes += bytes;
    if (live_bytes > peak_bytes) peak_bytes = live_bytes;
    return true;
}

void unreserve(size_t bytes) {
    std::lock_guard<std::mutex> g(memory_lock);
    live_bytes -= bytes;
}

CUresult allocate(CUdeviceptr* out, size_t bytes) {
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    if (!reserve(bytes)) return CUDA_ERROR_OUT_OF_MEMORY;
    size_t body = (bytes + 7) / 8 * 8;
    char *start, *map;
    size_t mapped = 0;  // 0: from the heap (freed by free)
    if (host_only) {
        // no guard page: the host's cost of a step, not the stand-in's
        // system calls
        keep_heap();
        map = start = static_cast<char*>(aligned_alloc(256, (body + 255) / 256 * 256));
    } else {
        mapped = (body + PAGE - 1) / PAGE * PAGE + PAGE;
        void* m = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        map = m == MAP_FAILED ? nullptr : static_cast<char*>(m);
        if (map) {
            // the page after the allocation's end can't be read or written
            mprotect(map + mapped - PAGE, PAGE, PROT_NONE);
            start = map + mapped - PAGE - body;
            memset(start, 0xff, body);
        }
    }
    if (!map) {
        unreserve(bytes);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    count(ALLOC);
    std::lock_guard<std::mutex> g(memory_lock);
    allocations[(uintptr_t)start] = {bytes, mapped, map};
    *out = (CUdeviceptr)(uintptr_t)start;
    return CUDA_SUCCESS;
}

CUresult release(CUdeviceptr p) {
    std::lock_guard<std::mutex> g(memory_lock);
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end()) return CUDA_ERROR_INVALID_VALUE;
    live_bytes -= it->second.bytes;
    if (it->second.mapped) {
        munmap(it->second.map, it->second.mapped);
    } else {
        free(it->second.map);
    }
    allocations.erase(it);
    count(FREE);
    return CUDA_SUCCESS;
}

// whether [p, p + n) lies in one live allocation
bool within(CUdeviceptr p, size_t n) {
    std::lock_guard<std::mutex> g(memory_lock);
    auto it = allocations.upper_bound((uintptr_t)p);
    if (it == allocations.begin()) return false;
    --it;
    return (uintptr_t)p + n <= it->first + it->second.bytes;
}

CUresult copy(void* dst, const void* src, size_t n, CUdeviceptr dev_a, CUdeviceptr dev_b) {
    if ((dev_a && !within(dev_a, n)) || (dev_b && !within(dev_b, n))) {
        fprintf(stderr, "CUDA stand-in: a copy of %zu bytes outside its allocation\n", n);
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (n) memmove(dst, src, n);
    return CUDA_SUCCESS;
}

// the size of an ELF64 file from its header: the section headers come last
size_t elf_size(const unsigned char* h) {
    if (memcmp(h, "\x7f" "ELF", 4) != 0 || h[4] != 2) return 0;
    uint64_t shoff;
    uint16_t shentsize, shnum;
    memcpy(&shoff, h + 0x28, 8);
    memcpy(&shentsize, h + 0x3a, 2);
    memcpy(&shnum, h + 0x3c, 2);
    return shoff + (size_t)shentsize * shnum;
}

}  // namespace

extern "C" {

CUresult cuInit(unsigned) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int* v) {
    *v = 13000;
    return CUDA_SUCCESS;
}
CUresult cuGetErrorName(CUresult e, const char** s) {
    *s = e == CUDA_SUCCESS ? "CUDA_SUCCESS" : "CUDA_ERROR (CPU stand-in)";
    return CUDA_SUCCESS;
}
CUresult cuGetErrorString(CUresult e, const char** s) { return cuGetErrorName(e, s); }

CUresult cuDeviceGetCount(int* n) {
    *n = 1;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    snprintf(name, len, "CPU stand-in of a CUDA GPU (t5mix tests)");
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetAttribute(int* v, int attribute, CUdevice) {
    switch (attribute) {
        case 1: *v = 1024; break;   // threads per block
        case 2: *v = 1024; break;   // block x
        case 3: *v = 1024; break;   // block y
        case 4: *v = 64; break;     // block z
        case 5: *v = 2147483647; break;
        case 6: *v = 65535; break;  // grid y
        case 7: *v = 65535; break;  // grid z
        case 10: *v = 32; break;    // warp size
        case 16: *v = 1; break;     // multiprocessors
        case 41: *v = 1; break;     // unified addressing
        case 75: *v = 9; break;     // compute capability: sm_90, as the H200
        case 76: *v = 0; break;
        case 115: *v = 1; break;    // memory pools
        default: *v = 0;
    }
    return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
    *bytes = memory_limit ? memory_limit
                          : (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGE_SIZE);
    return CUDA_SUCCESS;
}
CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
    cuDeviceTotalMem_v2(total, 0);
    if (memory_limit) {
        std::lock_guard<std::mutex> g(memory_lock);
        *free = memory_limit - live_bytes;
    } else {
        *free = (size_t)sysconf(_SC_AVPHYS_PAGES) * (size_t)sysconf(_SC_PAGE_SIZE);
    }
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice) {
    *ctx = &the_context;
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(void*) { return CUDA_SUCCESS; }
CUresult cuCtxGetCurrent(void** ctx) {
    *ctx = &the_context;
    return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize() {
    count(SYNC);
    return CUDA_SUCCESS;
}

CUresult cuStreamCreate(void** s, unsigned) {
    *s = new Stream();
    return CUDA_SUCCESS;
}
CUresult cuStreamDestroy_v2(void* s) {
    delete static_cast<Stream*>(s);
    return CUDA_SUCCESS;
}
CUresult cuStreamSynchronize(void*) {
    count(SYNC);
    return CUDA_SUCCESS;
}
CUresult cuStreamWaitEvent(void*, void*, unsigned) { return CUDA_SUCCESS; }

CUresult cuEventCreate(void** e, unsigned) {
    *e = new Event{std::chrono::steady_clock::now()};
    return CUDA_SUCCESS;
}
CUresult cuEventDestroy_v2(void* e) {
    delete static_cast<Event*>(e);
    return CUDA_SUCCESS;
}
CUresult cuEventRecord(void* e, void*) {
    count(EVENT);
    static_cast<Event*>(e)->at = std::chrono::steady_clock::now();
    return CUDA_SUCCESS;
}
CUresult cuEventSynchronize(void*) {
    count(SYNC);
    return CUDA_SUCCESS;
}
CUresult cuEventQuery(void*) { return CUDA_SUCCESS; }
CUresult cuEventElapsedTime(float* ms, void* a, void* b) {
    *ms = std::chrono::duration<float, std::milli>(static_cast<Event*>(b)->at -
                                                   static_cast<Event*>(a)->at)
              .count();
    return CUDA_SUCCESS;
}
CUresult cuEventElapsedTime_v2(float* ms, void* a, void* b) { return cuEventElapsedTime(ms, a, b); }

CUresult cuDeviceGetDefaultMemPool(void** pool, CUdevice) {
    *pool = &the_pool;
    return CUDA_SUCCESS;
}
CUresult cuDeviceGetMemPool(void** pool, CUdevice d) { return cuDeviceGetDefaultMemPool(pool, d); }
// The pool holds every allocation: its memory in use (7), reserved (5) and
// their high-water marks (8, 6) are the live bytes and their peak; setting
// a high-water mark (to 0) resets it to the bytes in use.
enum { RESERVED_MEM_CURRENT = 5, RESERVED_MEM_HIGH = 6, USED_MEM_CURRENT = 7, USED_MEM_HIGH = 8 };
CUresult cuMemPoolSetAttribute(void*, int attribute, void*) {
    if (attribute == RESERVED_MEM_HIGH || attribute == USED_MEM_HIGH) {
        std::lock_guard<std::mutex> g(memory_lock);
        peak_bytes = live_bytes;
    }
    return CUDA_SUCCESS;
}
CUresult cuMemPoolGetAttribute(void*, int attribute, void* v) {
    std::lock_guard<std::mutex> g(memory_lock);
    uint64_t value = 0;
    if (attribute == RESERVED_MEM_CURRENT || attribute == USED_MEM_CURRENT) value = live_bytes;
    if (attribute == RESERVED_MEM_HIGH || attribute == USED_MEM_HIGH) value = peak_bytes;
    // (the reuse policies, 1 to 3, are ints; the rest 64-bit)
    memcpy(v, &value, attribute <= 3 ? 4 : 8);
    return CUDA_SUCCESS;
}
CUresult cuMemPoolTrimTo(void*, size_t) { return CUDA_SUCCESS; }

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t n) { return allocate(p, n); }
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t n, void*) { return allocate(p, n); }
CUresult cuMemFree_v2(CUdeviceptr p) { return release(p); }
CUresult cuMemFreeAsync(CUdeviceptr p, void*) { return release(p); }

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    count(TO_DEVICE);
    return copy((void*)(uintptr_t)dst, src, n, dst, 0);
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void*) {
    return cuMemcpyHtoD_v2(dst, src, n);
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    count(TO_HOST);
    if (host_only) {
        // no kernel wrote it: zeros (a finite loss, a zero gradient norm)
        if (!within(src, n)) return CUDA_ERROR_INVALID_VALUE;
        memset(dst, 0, n);
        return CUDA_SUCCESS;
    }
    return copy(dst, (const void*)(uintptr_t)src, n, src, 0);
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void*) {
    return cuMemcpyDtoH_v2(dst, src, n);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    count(ON_DEVICE);
    return copy((void*)(uintptr_t)dst, (const void*)(uintptr_t)src, n, dst, src);
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void*) {
    return cuMemcpyDtoD_v2(dst, src, n);
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    count(MEMSET);
    if (!within(dst, n)) return CUDA_ERROR_INVALID_VALUE;
    if (!host_only) memset((void*)(uintptr_t)dst, v, n);
    return CUDA_SUCCESS;
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void*) {
    return cuMemsetD8_v2(dst, v, n);
}

// A module: the NVRTC stand-in's shared object, written to a file of its
// own (so that each load has its own statics) and opened.
CUresult cuModuleLoadData(void** out, const void* image) {
    size_t n = elf_size(static_cast<const unsigned char*>(image));
    if (n == 0) return CUDA_ERROR_INVALID_IMAGE;
    static std::mutex lock;
    static unsigned count = 0;
    std::lock_guard<std::mutex> g(lock);
    const char* tmp = getenv("TMPDIR");
    std::string path = std::string(tmp && *tmp ? tmp : "/tmp") + "/t5mix-cuda-standin-module-" +
                       std::to_string(getpid()) + "-" + std::to_string(count++) + ".so";
    FILE* f = fopen(path.c_str(), "wb");
    if (!f) return CUDA_ERROR_INVALID_IMAGE;
    bool written = fwrite(image, 1, n, f) == n;
    written = fclose(f) == 0 && written;
    void* lib = written ? dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL) : nullptr;
    if (!lib) fprintf(stderr, "CUDA stand-in: loading a module: %s\n", dlerror());
    unlink(path.c_str());
    if (!lib) return CUDA_ERROR_INVALID_IMAGE;
    auto launch = (decltype(Module::launch))dlsym(lib, "t5emu_launch");
    if (!launch) return CUDA_ERROR_INVALID_IMAGE;
    *out = new Module{lib, launch};
    return CUDA_SUCCESS;
}
CUresult cuModuleUnload(void* m) {
    Module* module = static_cast<Module*>(m);
    dlclose(module->lib);
    delete module;
    return CUDA_SUCCESS;
}
CUresult cuModuleGetFunction(void** f, void* m, const char* name) {
    Module* module = static_cast<Module*>(m);
    auto thunk = (void (*)(void**))dlsym(module->lib, (std::string("t5emu_kernel_") + name).c_str());
    if (!thunk) return CUDA_ERROR_NOT_FOUND;
    *f = new Function{module, thunk};
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared, void*, void** params, void** extra) {
    Function* fn = static_cast<Function*>(f);
    if (!fn || extra) return CUDA_ERROR_INVALID_VALUE;
    // dynamic shared memory: none of our kernels asks for it
    if (shared) return CUDA_ERROR_NOT_SUPPORTED;
    if (gx == 0 || gy == 0 || gz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535 || bx > 1024 ||
        by > 1024 || bz > 64 || (unsigned long long)bx * by * bz > 1024 ||
        (unsigned long long)bx * by * bz == 0) {
        fprintf(stderr, "CUDA stand-in: a launch of grid (%u, %u, %u), block (%u, %u, %u) refused\n",
                gx, gy, gz, bx, by, bz);
        return CUDA_ERROR_INVALID_VALUE;
    }
    count(LAUNCH);
    if (host_only) return CUDA_SUCCESS;
    const unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
    std::lock_guard<std::mutex> g(launch_lock);
    return fn->module->launch(fn->thunk, grid, block, params) == 0 ? CUDA_SUCCESS
                                                                   : CUDA_ERROR_LAUNCH_FAILED;
}

}  // extern "C"
