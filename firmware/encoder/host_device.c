/* Host harness for a whole fixed-level device (ws_device.h, no Dynamic-Deep edge): raw ECG and
 * EEG in, wire frames out — the front end, the encoder at a fixed codec level and the v2 frame
 * (entropy-coded when shorter), the same code a device runs.
 *
 *   host_device BLOB LEVEL BED SEQ0 T0_MS MODEL [KEY_HEX] < raw.f64 > frames.bin
 *
 * KEY_HEX: the device key (hex) that signs every frame (HMAC-SHA256, wire flag bit 0).
 * stdin: per window, 256 float64 ECG samples (mV) then 256 float64 EEG samples (µV); the k-th
 * window has sequence number SEQ0 + k and starts at T0_MS + 2000 (SEQ0 + k) (T0_MS: the device
 * clock at sequence number 0, as the simulated device counts). stdout, per window: u32 the
 * frame's length, then the frame.
 */
#include "host_blob.h"
#include "ws_device.h"

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s BLOB LEVEL BED SEQ0 T0_MS MODEL [KEY_HEX] < raw.f64 > frames.bin\n", argv[0]);
        return 2;
    }
    static uint8_t key[128];
    size_t key_len = 0;
    if (argc == 8 && host_parse_key(argv[7], key, sizeof(key), &key_len)) return 2;
    static ws_encoder enc;
    if (host_load_blob(argv[1], &enc)) return 2;
    const int level = atoi(argv[2]);
    const ws_device_config cfg = {(uint32_t)strtoul(argv[3], 0, 10), (uint32_t)strtoul(argv[4], 0, 10),
                                  strtoull(argv[5], 0, 10), (uint8_t)atoi(argv[6]), -2, level, level, 0, 1, 0, 0.0,
                                  key_len ? key : 0, key_len};
    static ws_device dev;
    const char *why = "";
    if (ws_device_init(&dev, &enc, &cfg, &why)) {
        fprintf(stderr, "level %d: %s\n", level, why);
        return 2;
    }
    return host_run_device(&dev, 0);
}
