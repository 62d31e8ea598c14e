/* Lossless coding of a raw int16 window (`stream/lossless.py`) in C: a fixed polynomial
 * predictor of order 0..3 and Rice codes, or verbatim when that is not shorter — the payload a
 * device sends at the raw level with wire flag bit 3, byte for byte the Python's. */
#ifndef WS_LOSSLESS_H
#define WS_LOSSLESS_H

#include <stddef.h>
#include <stdint.h>

#define WS_LOSSLESS_MAX(n) (1 + 2 * (size_t)(n)) /* the payload never exceeds verbatim */

/* x[n] (n <= 256) -> the payload in ``out`` (WS_LOSSLESS_MAX(n) bytes of room); its length. */
size_t ws_lossless_encode(const int16_t *x, int n, uint8_t *out);

#endif
