/*
 * A stand-in for the CUDA driver library, for testing registration without a
 * GPU: it keeps a table of registered host ranges and hands out device
 * addresses that differ from the host addresses, optionally with a gap after
 * every registration so that consecutive chunks are not contiguous. Only the
 * entry points that unimem's registration path, cudarc's context setup and
 * cudarc's copies call are here. Test hooks: fake_configure,
 * fake_registered_bytes, fake_offset, fake_pending.
 *
 * Copies model the driver's ordering: one queue in order for every stream.
 * A copy between device memory and registered (pinned) host memory is
 * queued and done only when an event recorded after it, a stream or the
 * context is synchronized (DMA that runs after the call returns); a copy
 * with pageable host memory first does what is queued, then itself, before
 * it returns, as the driver's staged copies do. Device memory is host memory
 * from malloc.
 */
#include <stdlib.h>
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
    NOT_READY = 600,
};

typedef void *CUstream;
typedef struct { size_t mark; } *CUevent;

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
/* The device's PCI address: FAKE_CUDA_PCI_BUS_ID if set, else one no
 * machine has. */
CUresult cuDeviceGetPCIBusId(char *id, int len, CUdevice d) {
    const char *given = getenv("FAKE_CUDA_PCI_BUS_ID");
    if (d != 0) return INVALID_DEVICE;
    if (len < 1) return INVALID_VALUE;
    strncpy(id, given ? given : "FFFF:FF:1F.7", (size_t)len - 1);
    id[len - 1] = 0;
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

/* The queue of copies not done yet, in order; `done` counts every copy
 * ever done, `queued` every copy ever queued. */
#define MAX_QUEUE 4096
static struct { void *dst; const void *src; size_t len; } queue[MAX_QUEUE];
static size_t done, queued;

static int pinned(const void *p, size_t len) {
    uintptr_t host = (uintptr_t)p;
    for (int i = 0; i < count; i++)
        if (ranges[i].host <= host && host + len <= ranges[i].host + ranges[i].len) return 1;
    return 0;
}

static void run_until(size_t mark) {
    while (done < mark) {
        size_t at = done % MAX_QUEUE;
        memcpy(queue[at].dst, queue[at].src, queue[at].len);
        done++;
    }
}

static CUresult copy(void *dst, const void *src, size_t len, const void *host) {
    if (!pinned(host, len)) {
        run_until(queued);
        memcpy(dst, src, len);
        return SUCCESS;
    }
    if (queued - done == MAX_QUEUE) run_until(done + 1);
    size_t at = queued % MAX_QUEUE;
    queue[at].dst = dst;
    queue[at].src = src;
    queue[at].len = len;
    queued++;
    return SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr *dev, size_t len) {
    void *p = malloc(len ? len : 1);
    if (!p) return OUT_OF_MEMORY;
    *dev = (CUdeviceptr)(uintptr_t)p;
    return SUCCESS;
}
CUresult cuMemFree_v2(CUdeviceptr dev) { run_until(queued); free((void *)(uintptr_t)dev); return SUCCESS; }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t len, CUstream s) {
    (void)s;
    return copy((void *)(uintptr_t)dst, src, len, src);
}
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t len, CUstream s) {
    (void)s;
    return copy(dst, (const void *)(uintptr_t)src, len, dst);
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t len, CUstream s) {
    (void)s;
    run_until(queued);
    memset((void *)(uintptr_t)dst, value, len);
    return SUCCESS;
}
CUresult cuCtxSynchronize(void) { run_until(queued); return SUCCESS; }
CUresult cuStreamCreate(CUstream *s, unsigned flags) { (void)flags; *s = malloc(1); return SUCCESS; }
CUresult cuStreamDestroy_v2(CUstream s) { free(s); return SUCCESS; }
CUresult cuStreamSynchronize(CUstream s) { (void)s; run_until(queued); return SUCCESS; }
CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned flags) {
    /* One queue in order: what the event marks comes first anyway. */
    (void)s; (void)e; (void)flags;
    return SUCCESS;
}
CUresult cuEventCreate(CUevent *e, unsigned flags) {
    (void)flags;
    *e = malloc(sizeof **e);
    if (!*e) return OUT_OF_MEMORY;
    (*e)->mark = 0;
    return SUCCESS;
}
CUresult cuEventDestroy_v2(CUevent e) { free(e); return SUCCESS; }
CUresult cuEventRecord(CUevent e, CUstream s) { (void)s; e->mark = queued; return SUCCESS; }
CUresult cuEventSynchronize(CUevent e) { run_until(e->mark); return SUCCESS; }
CUresult cuEventQuery(CUevent e) { return done >= e->mark ? SUCCESS : NOT_READY; }

/* Copies queued and not done yet. */
uint64_t fake_pending(void) { return queued - done; }
