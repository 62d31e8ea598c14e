/* The device chain in C on an emulated Cortex-M7 (QEMU mps2-an500), fed through semihosting:
 *
 *   edge.wse     the parameter blob (`wardstream export firmware`)
 *   params.bin   u32 level (a base codec level), u32 bed, u32 first sequence number, u32 model id,
 *                u64 the device clock at sequence number 0 (ms), i32 dd (-2: a fixed-level device
 *                without the Dynamic-Deep edge; -1: it picks the ECG level per window under
 *                ``bound``; 0..5: it sends that ECG level with its predicted task error), u32 the
 *                EEG level of a Dynamic-Deep device, u32 lossless (raw sections lossless-coded),
 *                u32 windows between audit bursts (0: none), f64 bound (0: the blob's deployed one)
 *   raw.f64      two streams interleaved by window: 256 float64 ECG samples (mV), then 256 float64
 *                EEG samples (µV), window after window (each modality one continuous stream)
 *   out.bin      a header (u32 WS_SCRATCH_BYTES, u32 sizeof(ws_dd_work), u32 sizeof(ws_encoder),
 *                u32 sizeof(ws_device): the RAM the device needs beside its stack; u32 the bytes
 *                of the buffer the blob is read into, which a device keeps in flash instead), then
 *                per window pair: ECG indices (2 x 32 uint16: the level's
 *                stages first; a Dynamic-Deep device: level 1's), EEG indices (2 x 32 uint16), the
 *                two scale codes (uint8), the frame's length (u16), the ECG level sent and its
 *                predicted-error code (u8 each; 255 without the Dynamic-Deep edge), u16 0, the SysTick
 *                ticks of each step (u32 x 8: ECG front end, ECG encode — a Dynamic-Deep device:
 *                every level and the distortion features —, the task features, the predictor and
 *                the choice, EEG front end, EEG encode, the frame, 0; with `-icount shift=0` QEMU
 *                runs one instruction per virtual nanosecond and SysTick counts the board's 25 MHz
 *                clock, so instructions = ticks x 40), then the frame (``length`` bytes)
 *
 * Exit code 0, or 1 with a message (unreadable files, a malformed blob, an encode error).
 */
#include <stdint.h>
#include <string.h>

#include "../encoder/ws_device.h"
#include "semihost.h"

extern volatile uint32_t systick_wraps;

static uint8_t blob[640 * 1024] __attribute__((aligned(8)));
static uint8_t scratch[WS_SCRATCH_BYTES] __attribute__((aligned(8)));
static ws_dd_work work;
static ws_encoder enc;
static ws_device dev;

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
    struct {
        uint32_t level, bed, seq0, model;
        uint64_t t0_ms;
        int32_t dd;
        uint32_t eeg_level, lossless, audit_every;
        double bound;
    } prm;
    int32_t pf = sh_open("params.bin", 1);
    if (pf < 0 || sh_read(pf, &prm, sizeof(prm)) != (int32_t)sizeof(prm)) return sh_puts("cannot read params.bin\n"), 1;
    sh_close(pf);
    int32_t in = sh_open("raw.f64", 1), out = sh_open("out.bin", 5);
    if (in < 0 || out < 0) return sh_puts("missing file\n"), 1;
    const ws_device_config cfg = {prm.bed, prm.seq0, prm.t0_ms, (uint8_t)prm.model, prm.dd, (int)prm.level,
                                  prm.dd > -2 ? (int)prm.eeg_level : (int)prm.level, (int)prm.lossless, 1,
                                  prm.audit_every, prm.bound, 0, 0};
    if (ws_device_init(&dev, &enc, &cfg, &why)) {
        sh_puts(why);
        sh_puts("\n");
        return 1;
    }
    uint32_t header[5] = {WS_SCRATCH_BYTES, sizeof(ws_dd_work), sizeof(ws_encoder), sizeof(ws_device), sizeof(blob)};
    sh_write(out, header, sizeof(header));
    *(volatile uint32_t *)0xE000E014u = 0xFFFFFFu; /* SYST_RVR */
    *(volatile uint32_t *)0xE000E018u = 0;         /* SYST_CVR */
    *(volatile uint32_t *)0xE000E010u = 7u;        /* SYST_CSR: enable, interrupt, processor clock */
    while (*(volatile uint32_t *)0xE000E018u == 0) { /* until the first reload: CVR 0 reads as a full period */
    }
    static double raw[2][WS_WINDOW];
    static struct {
        uint16_t idx[2][2 * 32];
        uint8_t code[2];
        uint16_t frame_len;
        uint8_t level, pred_code;
        uint16_t reserved; /* the ticks 4-byte aligned: no padding the reader must guess */
        uint32_t ticks[8];
    } rec;
    static uint8_t frame[4096];
    while (sh_read(in, raw, sizeof(raw)) == (int32_t)sizeof(raw)) {
        memset(rec.ticks, 0, sizeof(rec.ticks));
        const int len = ws_device_step(&dev, raw[0], raw[1], scratch, &work, frame, sizeof(frame), ticks, rec.ticks);
        if (len < 0) return sh_puts("the device failed\n"), 1;
        memcpy(rec.idx[0], prm.dd > -2 ? dev.win.idx[0] : dev.idx[0], sizeof(rec.idx[0]));
        memcpy(rec.idx[1], dev.idx[1], sizeof(rec.idx[1]));
        memcpy(rec.code, dev.last_code, 2);
        rec.frame_len = (uint16_t)len;
        rec.level = (uint8_t)dev.last_level, rec.pred_code = (uint8_t)dev.last_pred_code;
        sh_write(out, &rec, sizeof(rec));
        sh_write(out, frame, (uint32_t)len);
    }
    sh_close(in);
    sh_close(out);
    return 0;
}
