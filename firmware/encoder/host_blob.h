/* The host harnesses' one way of reading a blob file into aligned memory and loading it. */
#ifndef WS_HOST_BLOB_H
#define WS_HOST_BLOB_H

#include <stdio.h>
#include <stdlib.h>

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
