/* Host harness for a whole device of the default configuration: raw ECG and EEG in, wire frames
 * out — the front end, the encoder at a fixed codec level and the v2 frame (entropy-coded when
 * shorter), the same code a device runs.
 *
 *   host_device BLOB LEVEL BED SEQ0 T0_MS MODEL [KEY_HEX] < raw.f64 > frames.bin
 *
 * KEY_HEX: the device key (hex) that signs every frame (HMAC-SHA256, wire flag bit 0).
 * stdin: per window, 256 float64 ECG samples (mV) then 256 float64 EEG samples (µV); the k-th
 * window has sequence number SEQ0 + k and starts at T0_MS + 2000 (SEQ0 + k) (T0_MS: the device
 * clock at sequence number 0, as the simulated device counts). stdout, per window: u32 the
 * frame's length, then the frame.
 */
#include <string.h>

#include "host_blob.h"
#include "ws_frame.h"

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s BLOB LEVEL BED SEQ0 T0_MS MODEL [KEY_HEX] < raw.f64 > frames.bin\n", argv[0]);
        return 2;
    }
    static uint8_t key[128];
    size_t key_len = 0;
    if (argc == 8) {
        const char *h = argv[7];
        for (; h[0] && h[1] && key_len < sizeof(key); h += 2) {
            unsigned v;
            if (sscanf(h, "%2x", &v) != 1) return 2;
            key[key_len++] = (uint8_t)v;
        }
        if (*h || !key_len) {
            fprintf(stderr, "KEY_HEX: an even number of hex digits, at most %zu bytes\n", sizeof(key));
            return 2;
        }
    }
    static ws_encoder enc;
    if (host_load_blob(argv[1], &enc)) return 2;
    const int level = atoi(argv[2]);
    const uint32_t bed = (uint32_t)strtoul(argv[3], 0, 10), seq0 = (uint32_t)strtoul(argv[4], 0, 10);
    const uint64_t t0 = strtoull(argv[5], 0, 10);
    const uint8_t model = (uint8_t)atoi(argv[6]);
    const ws_modality *mods[2] = {ws_modality_named(&enc, "ecg"), ws_modality_named(&enc, "eeg")};
    if (!mods[0] || !mods[1] || level < 1 || level > mods[0]->n_cb) {
        fprintf(stderr, "level %d is not a base level of this encoder\n", level);
        return 2;
    }
    const int stages = mods[0]->n_cb - level + 1;
    void *scratch = aligned_alloc(8, WS_SCRATCH_BYTES);
    static ws_filter_state st[2];
    static double raw[2][WS_WINDOW];
    static float y[WS_WINDOW], x[WS_WINDOW];
    static uint16_t idx[2][WS_MAX_STAGES * 32];
    static uint8_t frame[2048];
    ws_section_tables tab[2];
    ws_section sec[2];
    for (uint32_t k = 0; fread(raw, sizeof(double), 2 * WS_WINDOW, stdin) == 2 * WS_WINDOW; k++) {
        for (int j = 0; j < 2; j++) {
            const ws_modality *m = mods[j];
            ws_filter(m, &st[j], raw[j], y, WS_WINDOW);
            uint8_t code = ws_normalise(m, y, x);
            int len = ws_encode(m, x, stages, idx[j], 0, scratch);
            if (len < 0) return 1;
            int bits = 0;
            while ((1 << bits) < m->K) bits++;
            sec[j] = (ws_section){j, level, code, idx[j], stages * len, bits,
                                  ws_section_tables_for(m, level, m->n_cb, &tab[j]) == 0 ? &tab[j] : 0, 0, 0};
        }
        int n = ws_frame_v2(frame, sizeof(frame), bed, seq0 + k, t0 + 2000u * (uint64_t)(seq0 + k), model, sec, 2,
                            key_len ? key : 0, key_len);
        if (n < 0) {
            fprintf(stderr, "frame failed (%d)\n", n);
            return 1;
        }
        uint32_t len = (uint32_t)n;
        fwrite(&len, 4, 1, stdout);
        fwrite(frame, 1, (size_t)n, stdout);
    }
    return 0;
}
