/* What the host harnesses share: reading a blob file into aligned memory and loading it, the device
 * loop over stdin, the device key from hex. */
#ifndef WS_HOST_BLOB_H
#define WS_HOST_BLOB_H

#include <stdio.h>
#include <stdlib.h>

#include "ws_device.h"
#include "ws_encoder.h"

/* 0, or 2 with a message on stderr */
static inline int host_load_blob(const char *path, ws_encoder *enc) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *blob = aligned_alloc(8, (size_t)(n + 7) / 8 * 8);
    if (!blob || fread(blob, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        fclose(f);
        free(blob);
        return 2;
    }
    fclose(f);
    const char *why = "";
    int rc = ws_load(blob, (size_t)n, enc, &why);
    if (rc) {
        fprintf(stderr, "malformed blob (%d): %s\n", rc, why);
        free(blob);
        return 2;
    }
    return 0;
}

/* The harnesses' device loop: stdin's windows (256 float64 ECG samples, then 256 float64 EEG)
 * through ``dev``, each frame to stdout as its u32 length and its bytes, then whatever ``after``
 * writes (NULL: nothing); 0, or 1 with a message on stderr. */
static inline int host_run_device(ws_device *dev, void (*after)(const ws_device *)) {
    static uint8_t scratch[WS_SCRATCH_BYTES] __attribute__((aligned(8)));
    static ws_dd_work work;
    static double raw[2][WS_WINDOW];
    static uint8_t frame[4096];
    while (fread(raw, sizeof(double), 2 * WS_WINDOW, stdin) == 2 * WS_WINDOW) {
        const int n = ws_device_step(dev, raw[0], raw[1], scratch, &work, frame, sizeof(frame), 0, 0);
        if (n < 0) {
            fprintf(stderr, "the device failed (%d)\n", n);
            return 1;
        }
        const uint32_t len = (uint32_t)n;
        fwrite(&len, 4, 1, stdout);
        fwrite(frame, 1, (size_t)n, stdout);
        if (after) after(dev);
    }
    return 0;
}

/* KEY_HEX (an even number of hex digits) -> key; 0, or 2 with a message on stderr */
static inline int host_parse_key(const char *h, uint8_t *key, size_t cap, size_t *len) {
    *len = 0;
    for (; h[0] && h[1] && *len < cap; h += 2) {
        unsigned v;
        if (sscanf(h, "%2x", &v) != 1) break;
        key[(*len)++] = (uint8_t)v;
    }
    if (*h || !*len) {
        fprintf(stderr, "KEY_HEX: an even number of hex digits, at most %zu bytes\n", cap);
        return 2;
    }
    return 0;
}

#endif
