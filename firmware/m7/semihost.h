/* Arm semihosting (bkpt 0xAB): the host files and exit code a QEMU run needs. */
#ifndef WS_SEMIHOST_H
#define WS_SEMIHOST_H
#include <stdint.h>
#include <string.h>

static inline int32_t sh_call(int32_t op, void *args) {
    register int32_t r0 __asm("r0") = op;
    register void *r1 __asm("r1") = args;
    __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}
static inline int32_t sh_open(const char *name, int32_t mode) { /* mode 1 "rb", 5 "wb" */
    uint32_t a[3] = {(uint32_t)name, (uint32_t)mode, (uint32_t)strlen(name)};
    return sh_call(0x01, a);
}
static inline int32_t sh_close(int32_t fd) {
    uint32_t a[1] = {(uint32_t)fd};
    return sh_call(0x02, a);
}
/* returns the bytes read */
static inline int32_t sh_read(int32_t fd, void *buf, int32_t n) {
    uint32_t a[3] = {(uint32_t)fd, (uint32_t)buf, (uint32_t)n};
    return n - sh_call(0x06, a);
}
static inline int32_t sh_write(int32_t fd, const void *buf, int32_t n) {
    uint32_t a[3] = {(uint32_t)fd, (uint32_t)buf, (uint32_t)n};
    return n - sh_call(0x05, a);
}
static inline int32_t sh_flen(int32_t fd) {
    uint32_t a[1] = {(uint32_t)fd};
    return sh_call(0x0C, a);
}
static inline void sh_puts(const char *s) { sh_call(0x04, (void *)s); }
static inline __attribute__((noreturn)) void sh_exit(int code) {
    /* SYS_EXIT_EXTENDED: (ADP_Stopped_ApplicationExit, code) */
    uint32_t a[2] = {0x20026u, (uint32_t)code};
    sh_call(0x20, a);
    for (;;) {
    }
}
#endif
