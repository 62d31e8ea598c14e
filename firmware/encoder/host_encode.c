/* Host harness for the device chain: the same code a device runs, fed from files.
 *
 *   host_encode BLOB MODALITY STAGES windows < windows.f32 > out.bin
 *       stdin: normalised windows (WS_WINDOW float32 each, what ws_encode takes);
 *       stdout, per window: the indices (STAGES x positions, uint16), then z (D x positions, int16).
 *   host_encode BLOB MODALITY STAGES raw < raw.f64 > out.bin
 *       stdin: one modality's raw stream (float64, physical units), consumed in windows of
 *       WS_WINDOW through the front end; stdout, per window: the band-passed window (WS_WINDOW
 *       float32), its scale code (uint32), the normalised window (WS_WINDOW float32), the indices
 *       (STAGES x positions, uint16).
 *
 * Exit status 2 with a message on stderr for a malformed blob or arguments.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host_blob.h"

int main(int argc, char **argv) {
    if (argc != 5 || (strcmp(argv[4], "windows") != 0 && strcmp(argv[4], "raw") != 0)) {
        fprintf(stderr, "usage: %s BLOB MODALITY STAGES windows|raw < in > out.bin\n", argv[0]);
        return 2;
    }
    static ws_encoder enc;
    if (host_load_blob(argv[1], &enc)) return 2;
    const ws_modality *m = ws_modality_named(&enc, argv[2]);
    int stages = atoi(argv[3]);
    if (!m || stages < 1 || stages > m->n_cb) {
        fprintf(stderr, "no modality %s with %d codebook stages in the blob\n", argv[2], stages);
        return 2;
    }
    const int raw_mode = strcmp(argv[4], "raw") == 0;
    static uint8_t scratch[WS_SCRATCH_BYTES] __attribute__((aligned(8)));
    ws_filter_state st = {{{0}}, 0};
    double raw[WS_WINDOW];
    float y[WS_WINDOW], x[WS_WINDOW];
    uint16_t idx[WS_MAX_STAGES * WS_WINDOW];
    static int16_t z[512 * WS_WINDOW];
    for (;;) {
        uint32_t code = 0;
        if (raw_mode) {
            if (fread(raw, sizeof(double), WS_WINDOW, stdin) != WS_WINDOW) break;
            ws_filter(m, &st, raw, y, WS_WINDOW);
            code = ws_normalise(m, y, x);
        } else if (fread(x, sizeof(float), WS_WINDOW, stdin) != WS_WINDOW) {
            break;
        }
        int len = ws_encode(m, x, stages, idx, z, scratch);
        if (len < 0) {
            fprintf(stderr, "encode failed (%d)\n", len);
            return 1;
        }
        if (raw_mode) {
            fwrite(y, sizeof(float), WS_WINDOW, stdout);
            fwrite(&code, sizeof(code), 1, stdout);
            fwrite(x, sizeof(float), WS_WINDOW, stdout);
        }
        fwrite(idx, sizeof(uint16_t), (size_t)stages * len, stdout);
        if (!raw_mode) fwrite(z, sizeof(int16_t), (size_t)m->D * len, stdout);
    }
    return 0;
}
