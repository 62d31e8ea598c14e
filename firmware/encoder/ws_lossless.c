/* `stream/lossless.py`'s encoder in C (see ws_lossless.h). */
#include "ws_lossless.h"

#include <string.h>

#define VERBATIM 0xFF
#define MAX_ORDER 3
#define MAX_K 20
#define MAX_N 256

/* `_residuals`: the order-th difference, each e mapped to 2e (e >= 0) or -2e - 1 */
static void residuals(const int16_t *x, int n, int order, uint32_t *u) {
    int64_t e[MAX_N];
    for (int i = 0; i < n; i++) e[i] = x[i];
    for (int o = 0; o < order; o++)
        for (int i = 0; i < n - 1 - o; i++) e[i] = e[i + 1] - e[i];
    for (int i = 0; i < n - order; i++) u[i] = (uint32_t)(e[i] >= 0 ? 2 * e[i] : -2 * e[i] - 1);
}

static uint64_t cost(const uint32_t *u, int m, int k) {
    uint64_t c = (uint64_t)m * (uint64_t)(k + 1);
    for (int i = 0; i < m; i++) c += u[i] >> k;
    return c;
}

/* `rice_parameter`: from the mean's magnitude, walk down while not worse, then up while better */
static int rice_parameter(const uint32_t *u, int m, uint64_t *bits) {
    if (!m) return *bits = 0, 0;
    uint64_t sum = 0;
    for (int i = 0; i < m; i++) sum += u[i];
    uint64_t q = sum / (uint64_t)m;
    int bl = 0;
    while (q >> bl) bl++;
    int k = bl - 1 < 0 ? 0 : (bl - 1 > MAX_K ? MAX_K : bl - 1);
    uint64_t c = cost(u, m, k), c2;
    while (k > 0 && (c2 = cost(u, m, k - 1)) <= c) k--, c = c2;
    while (k < MAX_K && (c2 = cost(u, m, k + 1)) < c) k++, c = c2;
    *bits = c;
    return k;
}

static void verbatim(const int16_t *x, int n, uint8_t *out) {
    out[0] = VERBATIM;
    for (int i = 0; i < n; i++) out[1 + 2 * i] = (uint8_t)((uint16_t)x[i] >> 8), out[2 + 2 * i] = (uint8_t)x[i];
}

size_t ws_lossless_encode(const int16_t *x, int n, uint8_t *out) {
    uint32_t u[MAX_N];
    int best_order = -1, best_k = 0;
    size_t best = 0;
    if (n > MAX_N || n < 0) return 0;
    for (int order = 0; order <= (n < MAX_ORDER ? n : MAX_ORDER); order++) {
        uint64_t bits;
        residuals(x, n, order, u);
        const int k = rice_parameter(u, n - order, &bits);
        const size_t nbytes = 1 + 2 * (size_t)order + (size_t)((bits + 7) / 8);
        if (best_order < 0 || nbytes < best) best = nbytes, best_order = order, best_k = k;
    }
    if (best_order < 0 || best >= 1 + 2 * (size_t)n) {
        verbatim(x, n, out);
        return 1 + 2 * (size_t)n;
    }
    const int order = best_order, k = best_k, m = n - order;
    residuals(x, n, order, u);
    out[0] = (uint8_t)(order << 5 | k);
    for (int i = 0; i < order; i++) out[1 + 2 * i] = (uint8_t)((uint16_t)x[i] >> 8), out[2 + 2 * i] = (uint8_t)x[i];
    uint8_t *p = out + 1 + 2 * order;
    memset(p, 0, best - 1 - 2 * (size_t)order);
    size_t pos = 0;
    for (int j = 0; j < m; j++) { /* u >> k one-bits, a zero-bit, the low k bits, MSB first */
        for (uint32_t r = u[j] >> k; r; r--, pos++) p[pos >> 3] |= (uint8_t)(0x80u >> (pos & 7));
        pos++;
        for (int b = k - 1; b >= 0; b--, pos++)
            if ((u[j] >> b) & 1u) p[pos >> 3] |= (uint8_t)(0x80u >> (pos & 7));
    }
    return best;
}
