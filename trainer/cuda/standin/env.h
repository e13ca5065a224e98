// The stand-in's settings from the environment, one home for the driver's
// and cuBLAS's (driver.cpp says what each does).
#pragma once
#include <cstdlib>
#include <cstring>

// T5MIX_STANDIN_HOST_ONLY=1: no device work, calls counted
inline bool standin_host_only() {
    const char* v = getenv("T5MIX_STANDIN_HOST_ONLY");
    return v && strcmp(v, "1") == 0;
}
