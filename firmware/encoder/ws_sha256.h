/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for the frame's authentication tag
 * (`stream/wire.py`: 16 bytes of HMAC-SHA256 over every byte before it, wire flag bit 0). */
#ifndef WS_SHA256_H
#define WS_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t n; /* bytes hashed so far */
    uint8_t block[64];
    size_t used;
} ws_sha256;

void ws_sha256_init(ws_sha256 *s);
void ws_sha256_update(ws_sha256 *s, const uint8_t *p, size_t n);
void ws_sha256_final(ws_sha256 *s, uint8_t out[32]);

void ws_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *msg, size_t n, uint8_t out[32]);

#endif
