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
 *                u32 sizeof(ws_dd_state): the RAM the device needs beside its stack; u32 the bytes
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

#include "../encoder/ws_dd.h"
#include "../encoder/ws_encoder.h"
#include "../encoder/ws_frame.h"
#include "semihost.h"

extern volatile uint32_t systick_wraps;

static uint8_t blob[640 * 1024] __attribute__((aligned(8)));
static uint8_t scratch[WS_SCRATCH_BYTES] __attribute__((aligned(8)));
static ws_dd_work work;
static ws_encoder enc;
static ws_dd_state dd;
static ws_dd_window win;

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
        int32_t dd;
        uint32_t eeg_level, lossless, audit_every;
        double bound;
    } prm;
    int32_t pf = sh_open("params.bin", 1);
    if (pf < 0 || sh_read(pf, &prm, sizeof(prm)) != (int32_t)sizeof(prm)) return sh_puts("cannot read params.bin\n"), 1;
    sh_close(pf);
    int32_t in = sh_open("raw.f64", 1), out = sh_open("out.bin", 5);
    if (!ecg || !eeg || in < 0 || out < 0) return sh_puts("missing modality or file\n"), 1;
    const int use_dd = prm.dd > -2;
    if (use_dd && (!enc.pred.n_in || prm.dd > WS_DD_LEVELS || prm.eeg_level < 1 || (int)prm.eeg_level > eeg->n_cb))
        return sh_puts("the blob has no Dynamic-Deep part, or a level is out of range\n"), 1;
    if (!use_dd && (prm.level < 1 || (int)prm.level > ecg->n_cb)) return sh_puts("not a base level\n"), 1;
    const double bound = prm.bound > 0 ? prm.bound : enc.pred.deployed_bound;
    ws_dd_reset(&dd);
    uint32_t header[5] = {WS_SCRATCH_BYTES, sizeof(ws_dd_work), sizeof(ws_encoder), sizeof(ws_dd_state), sizeof(blob)};
    sh_write(out, header, sizeof(header));
    *(volatile uint32_t *)0xE000E014u = 0xFFFFFFu; /* SYST_RVR */
    *(volatile uint32_t *)0xE000E018u = 0;         /* SYST_CVR */
    *(volatile uint32_t *)0xE000E010u = 7u;        /* SYST_CSR: enable, interrupt, processor clock */
    while (*(volatile uint32_t *)0xE000E018u == 0) { /* until the first reload: CVR 0 reads as a full period */
    }
    static double raw[2][WS_WINDOW];
    static float y[WS_WINDOW], x[WS_WINDOW];
    static int16_t rawq[WS_WINDOW], refq[WS_WINDOW];
    static ws_filter_state fst[2];
    const ws_modality *mods[2] = {ecg, eeg};
    static struct {
        uint16_t idx[2][2 * 32];
        uint8_t code[2];
        uint16_t frame_len;
        uint8_t level, pred_code;
        uint16_t reserved; /* the ticks 4-byte aligned: no padding the reader must guess */
        uint32_t ticks[8];
    } rec;
    ws_section_tables tab[2];
    ws_section sec[2];
    static uint8_t frame[4096];
    for (uint32_t k = 0; sh_read(in, raw, sizeof(raw)) == (int32_t)sizeof(raw); k++) {
        const uint32_t seq = prm.seq0 + k;
        /* `stream.wire.in_burst`: this window is one of an audit burst's */
        const int burst = use_dd && ws_in_burst(seq, prm.bed, prm.audit_every);
        int pcode = -1;
        memset(rec.ticks, 0, sizeof(rec.ticks));
        for (int j = 0; j < 2; j++) {
            const ws_modality *m = mods[j];
            const int level = use_dd ? (int)prm.eeg_level : (int)prm.level, stages = m->n_cb - level + 1;
            uint64_t t0 = ticks();
            ws_filter(m, &fst[j], raw[j], y, WS_WINDOW);
            rec.code[j] = ws_normalise(m, y, x);
            uint64_t t1 = ticks();
            rec.ticks[4 * j] = (uint32_t)(t1 - t0);
            int bits = 0;
            while ((1 << bits) < m->K) bits++;
            if (use_dd && j == 0) { /* the ECG analysed at every level, then the level chosen */
                if (ws_dd_levels(m, &dd, x, rec.code[0], &win, scratch, &work)) return sh_puts("analysis failed\n"), 1;
                uint64_t t2 = ticks();
                ws_dd_task(&enc, &dd, y, &win, &work);
                uint64_t t3 = ticks();
                ws_dd_predict(&enc, &win);
                const int L = ws_dd_choose(&enc.pred, &win, bound, 0.0, prm.dd, &pcode);
                uint64_t t4 = ticks();
                rec.ticks[1] = (uint32_t)(t2 - t1), rec.ticks[2] = (uint32_t)(t3 - t2), rec.ticks[3] = (uint32_t)(t4 - t3);
                memcpy(rec.idx[0], win.idx[0], sizeof(rec.idx[0]));
                rec.level = (uint8_t)L, rec.pred_code = (uint8_t)pcode;
                if (burst) ws_raw_ecg_f32(y, refq); /* the ECG as the encoder saw it */
                if (L == 0) {
                    ws_raw_ecg(raw[0], rawq);
                    sec[0] = (ws_section){0, 0, 0, 0, 0, 0, 0, rawq, 0.001f};
                } else {
                    sec[0] = (ws_section){0, L, rec.code[0], win.idx[L - 1], win.n_idx[L - 1], win.bits[L - 1],
                                          ws_section_tables_for(m, L, m->n_cb, &tab[0]) == 0 ? &tab[0] : 0, 0, 0};
                }
                continue;
            }
            int len = ws_encode(m, x, stages, rec.idx[j], 0, scratch);
            uint64_t t2 = ticks();
            if (len != 32) return sh_puts("encode failed\n"), 1;
            rec.ticks[4 * j + 1] = (uint32_t)(t2 - t1);
            sec[j] = (ws_section){j, level, rec.code[j], rec.idx[j], stages * len, bits,
                                  ws_section_tables_for(m, level, m->n_cb, &tab[j]) == 0 ? &tab[j] : 0, 0, 0};
        }
        if (!use_dd) rec.level = 255, rec.pred_code = 255;
        const ws_frame_extra ex = {pcode, (int)prm.lossless, burst ? refq : 0};
        uint64_t t5 = ticks();
        int n = ws_frame_v2_ex(frame, sizeof(frame), prm.bed, seq, prm.t0_ms + 2000u * (uint64_t)seq, (uint8_t)prm.model,
                               sec, 2, use_dd ? &ex : 0, 0, 0);
        rec.ticks[6] = (uint32_t)(ticks() - t5);
        if (n < 0) return sh_puts("frame failed\n"), 1;
        rec.frame_len = (uint16_t)n;
        sh_write(out, &rec, sizeof(rec));
        sh_write(out, frame, (uint32_t)n);
    }
    sh_close(in);
    sh_close(out);
    return 0;
}
