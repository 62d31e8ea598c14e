/* Host harness for a whole device (ws_device.h) with the Dynamic-Deep edge: raw ECG and EEG in,
 * wire frames out, plus what the edge computed for each window.
 *
 *   host_dd BLOB BOUND DD EEG_LEVEL BED SEQ0 T0_MS MODEL LOSSLESS AUDIT_EVERY [KEY_HEX] < raw.f64 > out.bin
 *
 * BOUND 0: the blob's deployed bound; DD -1: the ECG level chosen per window, 0..5: that level sent
 * with its predicted error; LOSSLESS 1: raw sections lossless-coded (wire flag bit 3); AUDIT_EVERY:
 * windows between audit bursts (0: none). stdin as host_device's. stdout, per window: u32 frame
 * length, the frame, then u8 level, u8 predicted-error code, f32 features[29], f32 predictions[5]
 * (log1p task error per level).
 */
#include "host_blob.h"
#include "ws_device.h"

/* after each frame: what the edge computed for its window */
static void after(const ws_device *dev) {
    const uint8_t lc[2] = {(uint8_t)dev->last_level, (uint8_t)dev->last_pred_code};
    fwrite(lc, 1, 2, stdout);
    fwrite(dev->win.features, 4, 2 * WS_DD_FEATURES + WS_TASK_FEATURES, stdout);
    fwrite(dev->win.pred, 4, WS_DD_LEVELS, stdout);
}

int main(int argc, char **argv) {
    if (argc != 11 && argc != 12) {
        fprintf(stderr,
                "usage: %s BLOB BOUND DD EEG_LEVEL BED SEQ0 T0_MS MODEL LOSSLESS AUDIT_EVERY [KEY_HEX] < raw.f64 > out.bin\n",
                argv[0]);
        return 2;
    }
    static uint8_t key[128];
    size_t key_len = 0;
    if (argc == 12 && host_parse_key(argv[11], key, sizeof(key), &key_len)) return 2;
    static ws_encoder enc;
    if (host_load_blob(argv[1], &enc)) return 2;
    const ws_device_config cfg = {(uint32_t)strtoul(argv[5], 0, 10), (uint32_t)strtoul(argv[6], 0, 10),
                                  strtoull(argv[7], 0, 10), (uint8_t)atoi(argv[8]), atoi(argv[3]), 1, atoi(argv[4]),
                                  atoi(argv[9]), 1, (uint32_t)atoi(argv[10]), atof(argv[2]), key_len ? key : 0, key_len};
    static ws_device dev;
    const char *why = "";
    if (cfg.dd < -1 || ws_device_init(&dev, &enc, &cfg, &why)) {
        fprintf(stderr, "%s\n", cfg.dd < -1 ? "DD must be -1 or a level" : why);
        return 2;
    }
    return host_run_device(&dev, after);
}
