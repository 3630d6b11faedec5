/*
 * A stand-in for the CUDA driver library, for testing registration without a
 * GPU: it keeps a table of registered host ranges and hands out device
 * addresses that differ from the host addresses, optionally with a gap after
 * every registration so that consecutive chunks are not contiguous. Only the
 * entry points that unimem's registration path and cudarc's context setup
 * call are here. Test hooks: fake_configure, fake_registered_bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef uint64_t CUdeviceptr;

enum {
    SUCCESS = 0,
    INVALID_VALUE = 1,
    OUT_OF_MEMORY = 2,
    INVALID_DEVICE = 101,
    ALREADY_REGISTERED = 712,
    NOT_REGISTERED = 713,
};

#define DEVICE_MAP 0x02u
#define MAX_RANGES 4096
#define OFFSET ((uint64_t)1 << 44)
#define GAP ((uint64_t)1 << 32)

static struct { uintptr_t host; size_t len; CUdeviceptr dev; } ranges[MAX_RANGES];
static int count;
static int gap_mode;
static int fail_at;
static int calls;
static uint64_t registrations;
static int token;
static CUcontext current;

CUresult cuInit(unsigned flags) { (void)flags; return SUCCESS; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return SUCCESS; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) {
    if (ordinal != 0) return INVALID_DEVICE;
    *d = 0;
    return SUCCESS;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
    (void)d;
    strncpy(name, "fake GPU", (size_t)len);
    return SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice d) { (void)d; *ctx = &token; return SUCCESS; }
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { (void)d; return SUCCESS; }
CUresult cuDeviceGetAttribute(int *value, int attribute, CUdevice d) {
    (void)attribute; (void)d;
    *value = 0;
    return SUCCESS;
}
CUresult cuCtxGetCurrent(CUcontext *ctx) { *ctx = current; return SUCCESS; }
CUresult cuCtxSetCurrent(CUcontext ctx) { current = ctx; return SUCCESS; }
CUresult cuGetErrorString(CUresult e, const char **s) { (void)e; *s = "fake driver error"; return SUCCESS; }
CUresult cuGetErrorName(CUresult e, const char **s) { (void)e; *s = "CUDA_ERROR_FAKE"; return SUCCESS; }

CUresult cuMemHostRegister_v2(void *p, size_t len, unsigned flags) {
    uintptr_t host = (uintptr_t)p;
    calls++;
    if (fail_at && calls == fail_at) return OUT_OF_MEMORY;
    if (!(flags & DEVICE_MAP) || len == 0 || host % 4096 != 0) return INVALID_VALUE;
    if (current != &token) return INVALID_VALUE; /* no context bound */
    for (int i = 0; i < count; i++)
        if (host < ranges[i].host + ranges[i].len && ranges[i].host < host + len)
            return ALREADY_REGISTERED;
    if (count == MAX_RANGES) return OUT_OF_MEMORY;
    ranges[count].host = host;
    ranges[count].len = len;
    ranges[count].dev = host + OFFSET + (gap_mode ? registrations * GAP : 0);
    count++;
    registrations++;
    return SUCCESS;
}

CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *dev, void *p, unsigned flags) {
    uintptr_t host = (uintptr_t)p;
    if (flags != 0) return INVALID_VALUE;
    for (int i = 0; i < count; i++)
        if (ranges[i].host <= host && host < ranges[i].host + ranges[i].len) {
            *dev = ranges[i].dev + (host - ranges[i].host);
            return SUCCESS;
        }
    return INVALID_VALUE;
}

CUresult cuMemHostUnregister(void *p) {
    for (int i = 0; i < count; i++)
        if (ranges[i].host == (uintptr_t)p) {
            ranges[i] = ranges[--count];
            return SUCCESS;
        }
    return NOT_REGISTERED;
}

void fake_configure(int gaps, int fail_at_call) {
    gap_mode = gaps;
    fail_at = fail_at_call;
    calls = 0;
}

uint64_t fake_registered_bytes(void) {
    uint64_t total = 0;
    for (int i = 0; i < count; i++) total += ranges[i].len;
    return total;
}

uint64_t fake_offset(void) { return OFFSET; }
