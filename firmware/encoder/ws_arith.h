/* wardstream's arithmetic coder (`stream/arith.py`) in C: the encoder side, bit for bit.
 *
 * 32-bit Witten-Neal-Cleary coding with pending bits; a symbol s of a frequency row is coded
 * with its cumulative frequencies out of the row's total T (every symbol at least 1, T <= 2^16);
 * rows are u8 frequencies as the wire's tables hold them (`stream/vqcode.py`), summed on the fly,
 * so a device keeps only the tables. The stream ends with one more pending bit, then 0 and the
 * pending bits as 1s (low < 2^30) or 1 and the pending bits as 0s, and is zero-padded to a byte.
 */
#ifndef WS_ARITH_H
#define WS_ARITH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t low, high, pending;
    uint8_t *buf;
    size_t cap_bits, bits; /* capacity and bits written */
    int overflow;          /* set when the buffer was too small: the stream is unusable */
} ws_arith;

void ws_arith_init(ws_arith *a, uint8_t *buf, size_t cap_bytes);

/* Code symbol ``s`` of the u8 frequency row ``freqs`` (``k`` symbols). */
void ws_arith_put(ws_arith *a, const uint8_t *freqs, int k, int s);

/* Bits the stream would have if it ended now, its ending included (`Encoder.cost`). */
size_t ws_arith_cost(const ws_arith *a);

/* End the stream: returns its exact bit count (the bytes, zero-padded, are (bits + 7) / 8), or 0
 * when the buffer overflowed. */
size_t ws_arith_finish(ws_arith *a);

#endif
