/* Host harness for the C encoder: the same code a device runs, fed from files.
 *
 *   host_encode BLOB MODALITY STAGES < windows.f32 > out.bin
 *
 * stdin: windows of WS_WINDOW float32 (little-endian, the normalised windows the encoder takes);
 * stdout, per window: the indices (STAGES x positions, uint16) then z (D x positions, int16).
 * Exit status 2 with a message on stderr for a malformed blob or arguments.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws_encoder.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s BLOB MODALITY STAGES < windows.f32 > out.bin\n", argv[0]);
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
    if (!blob || fread(blob, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    fclose(f);
    static ws_encoder enc;
    const char *why = "";
    int rc = ws_load(blob, (size_t)n, &enc, &why);
    if (rc) {
        fprintf(stderr, "malformed blob (%d): %s\n", rc, why);
        return 2;
    }
    const ws_modality *m = ws_modality_named(&enc, argv[2]);
    int stages = atoi(argv[3]);
    if (!m || stages < 1 || stages > m->n_cb) {
        fprintf(stderr, "no modality %s with %d codebook stages in the blob\n", argv[2], stages);
        return 2;
    }
    void *scratch = aligned_alloc(8, WS_SCRATCH_BYTES);
    float x[WS_WINDOW];
    uint16_t idx[WS_MAX_STAGES * WS_WINDOW];
    int16_t z[512 * WS_WINDOW];
    while (fread(x, sizeof(float), WS_WINDOW, stdin) == WS_WINDOW) {
        int len = ws_encode(m, x, stages, idx, z, scratch);
        if (len < 0) {
            fprintf(stderr, "encode failed (%d)\n", len);
            return 1;
        }
        fwrite(idx, sizeof(uint16_t), (size_t)stages * len, stdout);
        fwrite(z, sizeof(int16_t), (size_t)m->D * len, stdout);
    }
    return 0;
}
