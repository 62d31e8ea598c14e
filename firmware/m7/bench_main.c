/* The device chain in C on an emulated Cortex-M7 (QEMU mps2-an500), fed through semihosting:
 *
 *   edge.wse     the parameter blob (`wardstream export firmware`)
 *   params.bin   u32 level (a base codec level), u32 bed, u32 first sequence number, u32 model id,
 *                u64 the device clock at sequence number 0 (ms)
 *   raw.f64      two streams interleaved by window: 256 float64 ECG samples (mV), then 256 float64
 *                EEG samples (µV), window after window (each modality one continuous stream)
 *   out.bin      a header (u32 WS_SCRATCH_BYTES, u32 sizeof(ws_encoder): the RAM the encoder needs
 *                beside its stack), then per window pair: ECG indices (2 x 32 uint16, the level's
 *                stages first), EEG indices (2 x 32 uint16), the two scale codes (uint8), the frame's
 *                length (u16), the SysTick ticks of each step (u32: ECG front end, ECG encode, EEG
 *                front end, EEG encode, the frame; with `-icount shift=0` QEMU runs one instruction
 *                per virtual nanosecond and SysTick counts the board's 25 MHz clock, so
 *                instructions = ticks x 40), and the wire frame (256 bytes, the first ``length`` used)
 *
 * Exit code 0, or 1 with a message (unreadable files, a malformed blob, an encode error).
 */
#include <stdint.h>

#include "../encoder/ws_encoder.h"
#include "../encoder/ws_frame.h"
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
    struct {
        uint32_t level, bed, seq0, model;
        uint64_t t0_ms;
    } prm;
    int32_t pf = sh_open("params.bin", 1);
    if (pf < 0 || sh_read(pf, &prm, sizeof(prm)) != (int32_t)sizeof(prm)) return sh_puts("cannot read params.bin\n"), 1;
    sh_close(pf);
    int32_t in = sh_open("raw.f64", 1), out = sh_open("out.bin", 5);
    if (!ecg || !eeg || in < 0 || out < 0) return sh_puts("missing modality or file\n"), 1;
    if (prm.level < 1 || (int)prm.level > ecg->n_cb) return sh_puts("not a base level\n"), 1;
    const int stages = ecg->n_cb - (int)prm.level + 1;
    uint32_t header[2] = {WS_SCRATCH_BYTES, sizeof(ws_encoder)};
    sh_write(out, header, sizeof(header));
    *(volatile uint32_t *)0xE000E014u = 0xFFFFFFu; /* SYST_RVR */
    *(volatile uint32_t *)0xE000E018u = 0;         /* SYST_CVR */
    *(volatile uint32_t *)0xE000E010u = 7u;        /* SYST_CSR: enable, interrupt, processor clock */
    while (*(volatile uint32_t *)0xE000E018u == 0) { /* until the first reload: CVR 0 reads as a full period */
    }
    static double raw[2][WS_WINDOW];
    static float y[WS_WINDOW], x[WS_WINDOW];
    static ws_filter_state fst[2];
    const ws_modality *mods[2] = {ecg, eeg};
    static struct {
        uint16_t idx[2][2 * 32];
        uint8_t code[2];
        uint16_t frame_len;
        uint32_t ticks[5];
        uint8_t frame[256];
    } rec;
    ws_section_tables tab[2];
    ws_section sec[2];
    static uint8_t frame[512];
    for (uint32_t k = 0; sh_read(in, raw, sizeof(raw)) == (int32_t)sizeof(raw); k++) {
        for (int j = 0; j < 2; j++) {
            const ws_modality *m = mods[j];
            uint64_t t0 = ticks();
            ws_filter(m, &fst[j], raw[j], y, WS_WINDOW);
            rec.code[j] = ws_normalise(m, y, x);
            uint64_t t1 = ticks();
            int len = ws_encode(m, x, stages, rec.idx[j], 0, scratch);
            uint64_t t2 = ticks();
            if (len != 32) return sh_puts("encode failed\n"), 1;
            rec.ticks[2 * j] = (uint32_t)(t1 - t0);
            rec.ticks[2 * j + 1] = (uint32_t)(t2 - t1);
            int bits = 0;
            while ((1 << bits) < m->K) bits++;
            sec[j] = (ws_section){j, (int)prm.level, rec.code[j], rec.idx[j], stages * len, bits,
                                  ws_section_tables_for(m, (int)prm.level, m->n_cb, &tab[j]) == 0 ? &tab[j] : 0};
        }
        uint64_t t3 = ticks();
        int n = ws_frame_v2(frame, sizeof(frame), prm.bed, prm.seq0 + k, prm.t0_ms + 2000u * (uint64_t)(prm.seq0 + k),
                            (uint8_t)prm.model, sec, 2, 0, 0);
        rec.ticks[4] = (uint32_t)(ticks() - t3);
        if (n < 0 || n > (int)sizeof(rec.frame)) return sh_puts("frame failed\n"), 1;
        rec.frame_len = (uint16_t)n;
        memcpy(rec.frame, frame, (size_t)n);
        sh_write(out, &rec, sizeof(rec));
    }
    sh_close(in);
    sh_close(out);
    return 0;
}
