/* Host harness for the device's chain: raw samples -> front end -> encoder, the same code a
 * device runs, fed from files.
 *
 *   host_device BLOB MODALITY STAGES < raw.f64 > out.bin
 *
 * stdin: one modality's raw stream (float64, physical units), consumed in windows of WS_WINDOW;
 * stdout, per window: the band-passed window (WS_WINDOW float32), its scale code (uint32), the
 * normalised window (WS_WINDOW float32), the indices (STAGES x positions, uint16).
 */
#include <stdio.h>
#include <stdlib.h>

#include "ws_encoder.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s BLOB MODALITY STAGES < raw.f64 > out.bin\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *blob = aligned_alloc(8, (size_t)(n + 7) / 8 * 8);
    if (!blob || fread(blob, 1, (size_t)n, f) != (size_t)n) return 2;
    fclose(f);
    static ws_encoder enc;
    const char *why = "";
    if (ws_load(blob, (size_t)n, &enc, &why)) {
        fprintf(stderr, "malformed blob: %s\n", why);
        return 2;
    }
    const ws_modality *m = ws_modality_named(&enc, argv[2]);
    int stages = atoi(argv[3]);
    if (!m || stages < 1 || stages > m->n_cb) {
        fprintf(stderr, "no modality %s with %d codebook stages in the blob\n", argv[2], stages);
        return 2;
    }
    void *scratch = aligned_alloc(8, WS_SCRATCH_BYTES);
    ws_filter_state st = {{{0}}, 0};
    double raw[WS_WINDOW];
    float y[WS_WINDOW], x[WS_WINDOW];
    uint16_t idx[WS_MAX_STAGES * WS_WINDOW];
    while (fread(raw, sizeof(double), WS_WINDOW, stdin) == WS_WINDOW) {
        ws_filter(m, &st, raw, y, WS_WINDOW);
        uint32_t code = ws_normalise(m, y, x);
        int len = ws_encode(m, x, stages, idx, 0, scratch);
        if (len < 0) return 1;
        fwrite(y, sizeof(float), WS_WINDOW, stdout);
        fwrite(&code, sizeof(code), 1, stdout);
        fwrite(x, sizeof(float), WS_WINDOW, stdout);
        fwrite(idx, sizeof(uint16_t), (size_t)stages * len, stdout);
    }
    return 0;
}
