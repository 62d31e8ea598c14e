/* The encoder of `stream/arith.py` (see ws_arith.h), one renormalisation bit at a time as its
 * module docstring states it; the Python encoder emits the same bits in runs. */
#include "ws_arith.h"

#include <string.h>

#define TOP 0xFFFFFFFFu
#define HALF 0x80000000u
#define Q1 0x40000000u
#define Q3 0xC0000000u

void ws_arith_init(ws_arith *a, uint8_t *buf, size_t cap_bytes) {
    a->low = 0;
    a->high = TOP;
    a->pending = 0;
    a->buf = buf;
    a->cap_bits = 8 * cap_bytes;
    a->bits = 0;
    a->overflow = 0;
    memset(buf, 0, cap_bytes);
}

static void bit(ws_arith *a, int b) {
    if (a->bits >= a->cap_bits) {
        a->overflow = 1;
        return;
    }
    if (b) a->buf[a->bits >> 3] |= (uint8_t)(0x80u >> (a->bits & 7));
    a->bits++;
}

static void bit_plus_pending(ws_arith *a, int b) {
    bit(a, b);
    for (; a->pending; a->pending--) bit(a, !b);
}

void ws_arith_put(ws_arith *a, const uint8_t *freqs, int k, int s) {
    uint32_t lo_c = 0, hi_c, tot = 0;
    for (int i = 0; i < k; i++) {
        if (i == s) lo_c = tot;
        tot += freqs[i];
    }
    hi_c = lo_c + freqs[s];
    /* "range = high - low + 1; high = low + range * cum[s + 1] / T - 1; low = low + range * cum[s] / T"
       (64-bit products, integer division) */
    const uint64_t range = (uint64_t)a->high - a->low + 1;
    uint32_t high = (uint32_t)(a->low + range * hi_c / tot - 1);
    uint32_t low = (uint32_t)(a->low + range * lo_c / tot);
    for (;;) {
        if (high < HALF) {
            bit_plus_pending(a, 0);
        } else if (low >= HALF) {
            bit_plus_pending(a, 1);
            low -= HALF;
            high -= HALF;
        } else if (low >= Q1 && high < Q3) {
            a->pending++;
            low -= Q1;
            high -= Q1;
        } else {
            break;
        }
        low = low << 1;
        high = (high << 1) | 1u;
    }
    a->low = low;
    a->high = high;
}

size_t ws_arith_cost(const ws_arith *a) { return a->bits + a->pending + 2; }

size_t ws_arith_finish(ws_arith *a) {
    a->pending++;
    bit_plus_pending(a, a->low < Q1 ? 0 : 1);
    return a->overflow ? 0 : a->bits;
}
