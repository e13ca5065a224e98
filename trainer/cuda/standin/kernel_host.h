// The CPU stand-in's prelude for our kernel sources (trainer/cuda/*.cu):
// with it in front, a kernel file compiles as C++ for the host, and
// `t5emu_launch` runs a grid of it the way a GPU would, thread by thread.
//
// Each CUDA thread of a block is a coroutine with a stack of its own, run
// on one OS thread: __syncthreads switches back to the block's scheduler,
// which runs every live thread up to its next barrier (or its end) before
// any passes it. Blocks run one after another, so a kernel's `__shared__`
// arrays are plain statics. Threads that have returned no longer take part
// in barriers, as on the GPU. The switch saves the callee-saved registers
// and the stack pointer (x86-64 System V), nothing else: no system call
// per switch (ucontext's swapcontext makes one, ten times slower here).
//
// Only what our kernels use is here: no warp shuffles, atomics or dynamic
// shared memory (the driver stand-in refuses the latter).
//
// Compiled with -ffp-contract=off (NVRTC's --fmad=false): every f32
// operation rounds once, as on the GPU and in the CPU twins.
#pragma once
#if !defined(__x86_64__)
#error "the CPU stand-in of CUDA runs kernels on x86-64 only"
#endif
#include <cmath>
#include <math.h>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>
#include <xmmintrin.h>

struct t5emu_dim3 {
    unsigned x, y, z;
};

// the built-in variables of the thread that runs
static t5emu_dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace t5emu {

// Saves the callee-saved registers on this stack and the stack pointer in
// *save, then resumes the stack `load` saved by an earlier switch (or made
// by `start`).
extern "C" void t5emu_switch(void** save, void* load);
asm(R"(
    .text
    .globl t5emu_switch
    .hidden t5emu_switch
    .type t5emu_switch, @function
t5emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size t5emu_switch, .-t5emu_switch
)");

struct Fiber {
    void* sp;
    t5emu_dim3 idx;
    bool done;
};

static void* scheduler = nullptr;
static Fiber* current = nullptr;
static void (*body)(void**) = nullptr;
static void** params = nullptr;
static const std::size_t STACK = 64 * 1024;

static void fiber_main() {
    body(params);
    current->done = true;
    t5emu_switch(&current->sp, scheduler);  // never resumed
}

// A stack whose first switch to it enters fiber_main: six zero registers,
// then fiber_main as the return address, with the stack aligned as a
// call's (16 bytes plus the return address) at its entry.
static void* start(char* stack) {
    void** sp = reinterpret_cast<void**>(
        (reinterpret_cast<std::uintptr_t>(stack + STACK) & ~std::uintptr_t(15)));
    *--sp = nullptr;
    *--sp = reinterpret_cast<void*>(&fiber_main);
    for (int r = 0; r < 6; r++) {
        *--sp = nullptr;
    }
    return sp;
}

static inline void sync() {
    t5emu_switch(&current->sp, scheduler);
}

template <class T>
static inline T bits_as(std::uint32_t b) {
    T v;
    std::memcpy(&v, &b, 4);
    return v;
}

// Calls `f` with its arguments read from `p` (the driver's kernelParams:
// one pointer to each argument's value).
template <class... A, std::size_t... I>
static void call_with(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...);
}
template <class... A>
static void call(void (*f)(A...), void** p) {
    call_with(f, p, std::index_sequence_for<A...>{});
}

}  // namespace t5emu

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __syncthreads() t5emu::sync()

static inline float __int_as_float(int b) { return t5emu::bits_as<float>((std::uint32_t)b); }
static inline float __uint_as_float(unsigned b) { return t5emu::bits_as<float>(b); }
static inline unsigned __float_as_uint(float f) {
    unsigned b;
    std::memcpy(&b, &f, 4);
    return b;
}
template <class T>
static inline T max(T a, T b) { return a > b ? a : b; }
template <class T>
static inline T min(T a, T b) { return a < b ? a : b; }






// Runs `thunk` (a kernel with its arguments in `p`) over the grid; 0, or 1
// when a block has more threads than a GPU allows.
extern "C" int t5emu_launch(void (*thunk)(void**), const unsigned* grid, const unsigned* block,
                            void** p) {
    unsigned n = block[0] * block[1] * block[2];
    if (n == 0 || n > 1024) {
        return 1;
    }
    // stacks kept from launch to launch, touched only as far as used
    static char* stacks = nullptr;
    static unsigned stacks_for = 0;
    static std::vector<t5emu::Fiber> fibers;
    if (stacks_for < n) {
        delete[] stacks;
        stacks = new char[n * t5emu::STACK];
        stacks_for = n;
    }
    fibers.resize(n);
    unsigned csr = _mm_getcsr();
#ifdef T5EMU_FTZ
    // flush-to-zero and denormals-are-zero, as --ftz=true (and the CPU trainer)
    _mm_setcsr(csr | 0x8040);
#else
    _mm_setcsr(csr & ~0x8040u);
#endif
    static unsigned long long launches = 0;
    launches++;
    t5emu::body = thunk;
    t5emu::params = p;
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    for (unsigned bz = 0; bz < grid[2]; bz++)
        for (unsigned by = 0; by < grid[1]; by++)
            for (unsigned bx = 0; bx < grid[0]; bx++) {
                blockIdx = {bx, by, bz};
                for (unsigned t = 0; t < n; t++) {
                    t5emu::Fiber& f = fibers[t];
                    f.idx = {t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
                    f.done = false;
                    f.sp = t5emu::start(stacks + t * t5emu::STACK);
                }
                // rounds: every live thread runs to its next barrier or its
                // end; in index order in every other block (and launch), the
                // other way in the rest, so that a read of another thread's
                // write without a barrier between them finds it unwritten
                bool reverse = (launches + bx + by + bz) % 2 == 1;
                for (unsigned live = n; live > 0;) {
                    for (unsigned i = 0; i < n; i++) {
                        t5emu::Fiber& f = fibers[reverse ? n - 1 - i : i];
                        if (f.done) {
                            continue;
                        }
                        t5emu::current = &f;
                        threadIdx = f.idx;
                        t5emu::t5emu_switch(&t5emu::scheduler, f.sp);
                        if (f.done) {
                            live--;
                        }
                    }
                }
            }
    _mm_setcsr(csr);
    return 0;
}

// After the kernel source, one entry point a kernel, `t5emu_kernel_NAME`.
#define T5EMU_KERNEL(name) \
    extern "C" void t5emu_kernel_##name(void** p) { t5emu::call(&name, p); }
