/* Host harness for the arithmetic coder: the same code a device runs, fed from stdin.
 *
 *   host_arith < symbols.bin > stream.bin
 *
 * stdin: u32 rows, u32 k, u8 freqs[rows][k], u32 n, then n x (u16 row, u16 symbol);
 * stdout: u32 the stream's bit count, u32 its cost before the ending (`ws_arith_cost` after the
 * last symbol), then the stream's bytes.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ws_arith.h"

int main(void) {
    uint32_t rows, k, n;
    if (fread(&rows, 4, 1, stdin) != 1 || fread(&k, 4, 1, stdin) != 1 || !rows || !k || k > 65536) return 2;
    uint8_t *freqs = malloc((size_t)rows * k);
    if (!freqs || fread(freqs, 1, (size_t)rows * k, stdin) != (size_t)rows * k || fread(&n, 4, 1, stdin) != 1) return 2;
    size_t cap = 64 + (size_t)n * 4;
    uint8_t *buf = malloc(cap);
    ws_arith a;
    ws_arith_init(&a, buf, cap);
    for (uint32_t i = 0; i < n; i++) {
        uint16_t rs[2];
        if (fread(rs, 2, 2, stdin) != 2 || rs[0] >= rows || rs[1] >= k) return 2;
        ws_arith_put(&a, freqs + (size_t)rs[0] * k, (int)k, rs[1]);
    }
    uint32_t cost = (uint32_t)ws_arith_cost(&a);
    uint32_t bits = (uint32_t)ws_arith_finish(&a);
    if (!bits) return 1;
    fwrite(&bits, 4, 1, stdout);
    fwrite(&cost, 4, 1, stdout);
    fwrite(buf, 1, (bits + 7) / 8, stdout);
    return 0;
}
