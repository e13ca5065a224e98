// The CPU stand-in's NVRTC (libnvrtc.so): compiles a kernel file for the
// host with the C++ compiler, kernel_host.h in front, into a shared object
// that the driver stand-in (driver.cpp) loads as the "CUBIN".
//
// When the real NVRTC is loaded in the process (libnvrtc.so.13), each
// program is compiled by it as well: its errors and log are the answer,
// and its PTX is what nvrtcGetPTX gives, so a kernel that NVRTC refuses is
// refused here too. NVRTC's options map to the compiler's: -D as is,
// --ftz=true to T5EMU_FTZ; --fmad=false is -ffp-contract=off, always.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#ifndef T5EMU_PRELUDE
#error "T5EMU_PRELUDE (the path of kernel_host.h) is set by the build"
#endif

typedef int nvrtcResult;
enum { NVRTC_SUCCESS = 0, NVRTC_ERROR_INVALID_INPUT = 3, NVRTC_ERROR_INVALID_PROGRAM = 4,
       NVRTC_ERROR_COMPILATION = 6 };

namespace {

struct Program {
    std::string src, name, log, ptx, object;
};

// The real NVRTC's functions, when it is loaded.
struct Real {
    void* lib = nullptr;
    nvrtcResult (*create)(void**, const char*, const char*, int, const char* const*,
                          const char* const*) = nullptr;
    nvrtcResult (*compile)(void*, int, const char* const*) = nullptr;
    nvrtcResult (*log_size)(void*, size_t*) = nullptr;
    nvrtcResult (*log)(void*, char*) = nullptr;
    nvrtcResult (*ptx_size)(void*, size_t*) = nullptr;
    nvrtcResult (*ptx)(void*, char*) = nullptr;
    nvrtcResult (*destroy)(void**) = nullptr;
    Real() {
        lib = dlopen("libnvrtc.so.13", RTLD_NOW | RTLD_NOLOAD);
        if (!lib) {
            return;
        }
        create = (decltype(create))dlsym(lib, "nvrtcCreateProgram");
        compile = (decltype(compile))dlsym(lib, "nvrtcCompileProgram");
        log_size = (decltype(log_size))dlsym(lib, "nvrtcGetProgramLogSize");
        log = (decltype(log))dlsym(lib, "nvrtcGetProgramLog");
        ptx_size = (decltype(ptx_size))dlsym(lib, "nvrtcGetPTXSize");
        ptx = (decltype(ptx))dlsym(lib, "nvrtcGetPTX");
        destroy = (decltype(destroy))dlsym(lib, "nvrtcDestroyProgram");
        if (!(create && compile && log_size && log && ptx_size && ptx && destroy)) {
            lib = nullptr;
        }
    }
};

Real& real() {
    static Real r;
    return r;
}

// The real NVRTC's verdict: NVRTC_SUCCESS with its PTX, or its error with
// its log.
nvrtcResult compile_real(Program* p, const std::vector<std::string>& opts) {
    Real& r = real();
    if (!r.lib) {
        p->ptx = "// CPU stand-in: the real NVRTC is not loaded, no PTX\n";
        return NVRTC_SUCCESS;
    }
    void* prog = nullptr;
    nvrtcResult e = r.create(&prog, p->src.c_str(), p->name.c_str(), 0, nullptr, nullptr);
    if (e != NVRTC_SUCCESS) {
        return e;
    }
    std::vector<const char*> argv;
    for (auto& o : opts) argv.push_back(o.c_str());
    e = r.compile(prog, (int)argv.size(), argv.data());
    size_t n = 0;
    if (r.log_size(prog, &n) == NVRTC_SUCCESS && n > 1) {
        std::string log(n, '\0');
        r.log(prog, &log[0]);
        p->log = log.c_str();
    }
    if (e == NVRTC_SUCCESS && r.ptx_size(prog, &n) == NVRTC_SUCCESS) {
        std::string ptx(n, '\0');
        r.ptx(prog, &ptx[0]);
        p->ptx = ptx.c_str();
    }
    r.destroy(&prog);
    return e;
}

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

// Runs `argv` with its output in `out`; its exit status. The child only
// makes async-signal-safe calls (the process has other threads).
int run(const std::vector<std::string>& argv, const std::string& out) {
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        execvp(a[0], a.data());
        _exit(127);
    }
    close(fd);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The host build of the program: its shared object's bytes in p->object,
// from a cache keyed by source and options.
nvrtcResult compile_host(Program* p, const std::vector<std::string>& opts) {
    std::vector<std::string> flags = {"-std=c++17", "-O2", "-fPIC", "-shared",
                                      "-ffp-contract=off", "-fno-fast-math", "-w",
                                      "-include", T5EMU_PRELUDE};
    for (auto& o : opts) {
        if (o.rfind("-D", 0) == 0) flags.push_back(o);
        if (o == "--ftz=true") flags.push_back("-DT5EMU_FTZ");
    }
    std::string src = p->src + "\n";
    // the entry points: every `__global__ void [BOUNDS] NAME(`, NAME the
    // last word before the parenthesis (a launch bound's macro before it)
    for (size_t at = 0; (at = p->src.find("__global__ void ", at)) != std::string::npos;) {
        at += strlen("__global__ void ");
        size_t end = p->src.find('(', at);
        std::string decl = p->src.substr(at, end - at);
        size_t space = decl.find_last_of(" \t\n");
        src += "T5EMU_KERNEL(" + decl.substr(space == std::string::npos ? 0 : space + 1) + ")\n";
    }
    std::string key = src;
    for (auto& f : flags) key += "\n" + f;
    key += "\n" + read_file(T5EMU_PRELUDE);
    char hash[32];
    snprintf(hash, sizeof hash, "%016zx", std::hash<std::string>{}(key));
    const char* tmp = getenv("TMPDIR");
    std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/t5mix-cuda-standin-" +
                      std::to_string(getuid());
    mkdir(dir.c_str(), 0700);
    std::string so = dir + "/" + hash + ".so";
    if (access(so.c_str(), R_OK) != 0) {
        // written under a name of this process's, renamed when complete
        std::string part = dir + "/" + hash + "." + std::to_string(getpid());
        std::string cpp = part + ".cpp", out = part + ".log", lib = part + ".so";
        std::ofstream(cpp) << src;
        const char* cxx = getenv("CXX");
        std::vector<std::string> argv = {cxx && *cxx ? cxx : "c++"};
        argv.insert(argv.end(), flags.begin(), flags.end());
        argv.insert(argv.end(), {"-o", lib, "-x", "c++", cpp});
        int status = run(argv, out);
        std::string log = read_file(out);
        unlink(cpp.c_str());
        unlink(out.c_str());
        if (status != 0) {
            unlink(lib.c_str());
            p->log += "CPU stand-in: compiling " + p->name + " for the host failed:\n" + log;
            return NVRTC_ERROR_COMPILATION;
        }
        rename(lib.c_str(), so.c_str());
    }
    p->object = read_file(so);
    return p->object.empty() ? NVRTC_ERROR_COMPILATION : NVRTC_SUCCESS;
}

nvrtcResult copy_out(const std::string& s, char* out) {
    if (!out) return NVRTC_ERROR_INVALID_INPUT;
    memcpy(out, s.data(), s.size());
    out[s.size()] = '\0';
    return NVRTC_SUCCESS;
}

}  // namespace

extern "C" {

nvrtcResult nvrtcVersion(int* major, int* minor) {
    *major = 13;
    *minor = 0;
    return NVRTC_SUCCESS;
}

const char* nvrtcGetErrorString(nvrtcResult e) {
    return e == NVRTC_SUCCESS ? "NVRTC_SUCCESS" : "NVRTC_ERROR (CPU stand-in)";
}

nvrtcResult nvrtcCreateProgram(void** prog, const char* src, const char* name, int, const char* const*,
                               const char* const*) {
    if (!prog || !src) return NVRTC_ERROR_INVALID_INPUT;
    *prog = new Program{src, name ? name : "default_program", "", "", ""};
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcDestroyProgram(void** prog) {
    if (!prog || !*prog) return NVRTC_ERROR_INVALID_PROGRAM;
    delete static_cast<Program*>(*prog);
    *prog = nullptr;
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcCompileProgram(void* prog, int n, const char* const* options) {
    if (!prog) return NVRTC_ERROR_INVALID_PROGRAM;
    Program* p = static_cast<Program*>(prog);
    std::vector<std::string> opts(options, options + n);
    nvrtcResult e = compile_real(p, opts);
    return e != NVRTC_SUCCESS ? e : compile_host(p, opts);
}

nvrtcResult nvrtcGetProgramLogSize(void* prog, size_t* n) {
    *n = static_cast<Program*>(prog)->log.size() + 1;
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetProgramLog(void* prog, char* out) {
    return copy_out(static_cast<Program*>(prog)->log, out);
}
nvrtcResult nvrtcGetPTXSize(void* prog, size_t* n) {
    *n = static_cast<Program*>(prog)->ptx.size() + 1;
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetPTX(void* prog, char* out) {
    return copy_out(static_cast<Program*>(prog)->ptx, out);
}
// The "CUBIN": the host build's shared object (an ELF file, as a CUBIN).
nvrtcResult nvrtcGetCUBINSize(void* prog, size_t* n) {
    *n = static_cast<Program*>(prog)->object.size();
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetCUBIN(void* prog, char* out) {
    const std::string& o = static_cast<Program*>(prog)->object;
    if (!out) return NVRTC_ERROR_INVALID_INPUT;
    memcpy(out, o.data(), o.size());
    return NVRTC_SUCCESS;
}

}  // extern "C"
