/* The C encoder on an emulated Cortex-M7 (QEMU mps2-an500), fed through semihosting:
 *
 *   edge.wse     the parameter blob (`wardstream export firmware`)
 *   windows.f32  window pairs: 256 float32 ECG, then 256 float32 EEG
 *   out.bin      a header (u32 WS_SCRATCH_BYTES, u32 sizeof(ws_encoder): the RAM the encoder needs
 *                beside its stack), then per pair: ECG indices (2 x 32 uint16), EEG indices (2 x 32 uint16), then the
 *                SysTick ticks each encode took (2 x uint32; with `-icount shift=0` QEMU runs one
 *                instruction per virtual nanosecond and SysTick counts the board's 25 MHz clock,
 *                so instructions = ticks x 40)
 *
 * Exit code 0, or 1 with a message (unreadable files, a malformed blob, an encode error).
 */
#include <stdint.h>

#include "../encoder/ws_encoder.h"
#include "semihost.h"

extern volatile uint32_t systick_wraps;

static uint8_t blob[640 * 1024] __attribute__((aligned(8)));
static uint8_t scratch[WS_SCRATCH_BYTES] __attribute__((aligned(8)));
static ws_encoder enc;

static uint64_t ticks(void) {
    uint32_t w, v;
    do {
        w = systick_wraps;
        v = *(volatile uint32_t *)0xE000E018u; /* SYST_CVR, counting down */
    } while (w != systick_wraps);
    return (uint64_t)w * 0x1000000u + (0xFFFFFFu - v);
}

int main(void) {
    const char *why = "";
    int32_t fd = sh_open("edge.wse", 1);
    if (fd < 0) return sh_puts("cannot open edge.wse\n"), 1;
    int32_t n = sh_flen(fd);
    if (n <= 0 || n > (int32_t)sizeof(blob) || sh_read(fd, blob, n) != n) return sh_puts("cannot read edge.wse\n"), 1;
    sh_close(fd);
    if (ws_load(blob, (size_t)n, &enc, &why)) {
        sh_puts("malformed blob: ");
        sh_puts(why);
        sh_puts("\n");
        return 1;
    }
    const ws_modality *ecg = ws_modality_named(&enc, "ecg"), *eeg = ws_modality_named(&enc, "eeg");
    int32_t in = sh_open("windows.f32", 1), out = sh_open("out.bin", 5);
    if (!ecg || !eeg || in < 0 || out < 0) return sh_puts("missing modality or file\n"), 1;
    uint32_t header[2] = {WS_SCRATCH_BYTES, sizeof(ws_encoder)};
    sh_write(out, header, sizeof(header));
    *(volatile uint32_t *)0xE000E014u = 0xFFFFFFu; /* SYST_RVR */
    *(volatile uint32_t *)0xE000E018u = 0;         /* SYST_CVR */
    *(volatile uint32_t *)0xE000E010u = 7u;        /* SYST_CSR: enable, interrupt, processor clock */
    while (*(volatile uint32_t *)0xE000E018u == 0) { /* until the first reload: CVR 0 reads as a full period */
    }
    static float x[2][WS_WINDOW];
    struct {
        uint16_t idx[2][2 * 32];
        uint32_t ticks[2];
    } rec;
    while (sh_read(in, x, sizeof(x)) == (int32_t)sizeof(x)) {
        uint64_t t0 = ticks();
        int a = ws_encode(ecg, x[0], 2, rec.idx[0], 0, scratch);
        uint64_t t1 = ticks();
        int b = ws_encode(eeg, x[1], 2, rec.idx[1], 0, scratch);
        uint64_t t2 = ticks();
        if (a != 32 || b != 32) return sh_puts("encode failed\n"), 1;
        rec.ticks[0] = (uint32_t)(t1 - t0);
        rec.ticks[1] = (uint32_t)(t2 - t1);
        sh_write(out, &rec, sizeof(rec));
    }
    sh_close(in);
    sh_close(out);
    return 0;
}
