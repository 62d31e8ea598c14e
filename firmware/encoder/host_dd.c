/* Host harness for a device that runs the Dynamic-Deep edge (ws_dd.h): raw ECG and EEG in, wire
 * frames out — the front end, the ECG analysed at every level, the task features, the predictor,
 * the level chosen under BOUND (or FIXED, with its predicted error), EEG at EEG_LEVEL, the v2
 * frame (entropy-coded when shorter) carrying the predicted error.
 *
 *   host_dd BLOB BOUND FIXED EEG_LEVEL BED SEQ0 T0_MS MODEL LOSSLESS AUDIT_EVERY [KEY_HEX] < raw.f64 > out.bin
 *
 * BOUND 0: the blob's deployed bound; FIXED -1: choose per window; LOSSLESS 1: raw sections
 * lossless-coded (wire flag bit 3); AUDIT_EVERY: windows between audit bursts (0: none; a burst's
 * AUDIT_WINDOWS windows carry the ECG as the encoder saw it). stdin as host_device's. stdout,
 * per window: u32 frame length, the frame, then u8 level, u8 predicted-error code, f32
 * features[29], f32 predictions[5] (log1p task error per level).
 */
#include <math.h>
#include <string.h>

#include "host_blob.h"
#include "ws_dd.h"
#include "ws_frame.h"

int main(int argc, char **argv) {
    if (argc != 11 && argc != 12) {
        fprintf(stderr,
                "usage: %s BLOB BOUND FIXED EEG_LEVEL BED SEQ0 T0_MS MODEL LOSSLESS AUDIT_EVERY [KEY_HEX] < raw.f64 > out.bin\n",
                argv[0]);
        return 2;
    }
    static uint8_t key[128];
    size_t key_len = 0;
    if (argc == 12) {
        const char *h = argv[11];
        for (; h[0] && h[1] && key_len < sizeof(key); h += 2) {
            unsigned v;
            if (sscanf(h, "%2x", &v) != 1) return 2;
            key[key_len++] = (uint8_t)v;
        }
        if (*h || !key_len) return 2;
    }
    static ws_encoder enc;
    if (host_load_blob(argv[1], &enc)) return 2;
    double bound = atof(argv[2]);
    const int fixed = atoi(argv[3]), eeg_level = atoi(argv[4]);
    const uint32_t bed = (uint32_t)strtoul(argv[5], 0, 10), seq0 = (uint32_t)strtoul(argv[6], 0, 10);
    const uint64_t t0 = strtoull(argv[7], 0, 10);
    const uint8_t model = (uint8_t)atoi(argv[8]);
    const int lossless = atoi(argv[9]), audit_every = atoi(argv[10]);
    const ws_modality *ecg = ws_modality_named(&enc, "ecg"), *eeg = ws_modality_named(&enc, "eeg");
    if (!ecg || !eeg || !enc.pred.n_in || eeg_level < 1 || eeg_level > eeg->n_cb || fixed > WS_DD_LEVELS) {
        fprintf(stderr, "the blob has no Dynamic-Deep part, or a level is out of range\n");
        return 2;
    }
    if (bound <= 0) bound = enc.pred.deployed_bound;
    void *scratch = aligned_alloc(8, WS_SCRATCH_BYTES);
    static ws_dd_work work;
    static ws_filter_state fs[2];
    static ws_dd_state dd;
    static ws_dd_window win;
    ws_dd_reset(&dd);
    static double raw[2][WS_WINDOW];
    static float y[WS_WINDOW], x[WS_WINDOW], ye[WS_WINDOW], xe[WS_WINDOW];
    static uint16_t eidx[WS_MAX_STAGES * 32];
    static int16_t rawq[WS_WINDOW], refq[WS_WINDOW];
    static uint8_t frame[4096];
    ws_section_tables tab[2];
    ws_section sec[2];
    for (uint32_t k = 0; fread(raw, sizeof(double), 2 * WS_WINDOW, stdin) == 2 * WS_WINDOW; k++) {
        ws_filter(ecg, &fs[0], raw[0], y, WS_WINDOW);
        const uint8_t code = ws_normalise(ecg, y, x);
        if (ws_dd_analyse(&enc, ecg, &dd, y, x, code, &win, scratch, &work)) return 1;
        int pcode;
        const int L = ws_dd_choose(&enc.pred, &win, bound, 0.0, fixed, &pcode);
        const uint32_t seq = seq0 + k;
        /* `stream.wire.in_burst`: this window carries the ECG as the encoder saw it */
        const int burst = ws_in_burst(seq, bed, (uint32_t)audit_every);
        if (burst) ws_raw_ecg_f32(y, refq);
        if (L == 0) {
            ws_raw_ecg(raw[0], rawq);
            sec[0] = (ws_section){0, 0, 0, 0, 0, 0, 0, rawq, 0.001f};
        } else {
            sec[0] = (ws_section){0, L, code, win.idx[L - 1], win.n_idx[L - 1], win.bits[L - 1],
                                  ws_section_tables_for(ecg, L, ecg->n_cb, &tab[0]) == 0 ? &tab[0] : 0, 0, 0};
        }
        ws_filter(eeg, &fs[1], raw[1], ye, WS_WINDOW);
        const uint8_t ecode = ws_normalise(eeg, ye, xe);
        const int stages = eeg->n_cb - eeg_level + 1;
        const int len = ws_encode(eeg, xe, stages, eidx, 0, scratch);
        if (len < 0) return 1;
        int bits = 0;
        while ((1 << bits) < eeg->K) bits++;
        sec[1] = (ws_section){1, eeg_level, ecode, eidx, stages * len, bits,
                              ws_section_tables_for(eeg, eeg_level, eeg->n_cb, &tab[1]) == 0 ? &tab[1] : 0, 0, 0};
        const ws_frame_extra ex = {pcode, lossless, burst ? refq : 0};
        int n = ws_frame_v2_ex(frame, sizeof(frame), bed, seq, t0 + 2000u * (uint64_t)seq, model, sec, 2, &ex,
                               key_len ? key : 0, key_len);
        if (n < 0) {
            fprintf(stderr, "frame failed (%d)\n", n);
            return 1;
        }
        uint32_t flen = (uint32_t)n;
        uint8_t lc[2] = {(uint8_t)L, (uint8_t)pcode};
        fwrite(&flen, 4, 1, stdout);
        fwrite(frame, 1, (size_t)n, stdout);
        fwrite(lc, 1, 2, stdout);
        fwrite(win.features, 4, 2 * WS_DD_FEATURES + WS_TASK_FEATURES, stdout);
        fwrite(win.pred, 4, WS_DD_LEVELS, stdout);
    }
    return 0;
}
