/* The integer edge encoder of `wardmodels/int8.py` in C (see ws_encoder.h). Each rule below
 * quotes the docstring it implements. */
#include "ws_encoder.h"

#include <math.h>
#include <string.h>

#define SLOPE_Q16 6554 /* LeakyReLU(0.1) folded into the negative multiplier */

/* ------------------------------------------------------------------------------ blob */

typedef struct {
    const uint8_t *p, *end;
    const char *why;
} cursor;

static int take(cursor *c, size_t n, const void **out, const char *what) {
    if ((size_t)(c->end - c->p) < n) {
        c->why = what;
        return -1;
    }
    *out = c->p;
    c->p += n;
    return 0;
}

static int align8(cursor *c) {
    size_t off = (size_t)(uintptr_t)c->p & 7u;
    if (off) {
        const void *skip;
        return take(c, 8 - off, &skip, "padding");
    }
    return 0;
}

static int i32(cursor *c, int32_t *v, const char *what) {
    const void *q;
    if (take(c, 4, &q, what)) return -1;
    memcpy(v, q, 4);
    return 0;
}

static int i64(cursor *c, int64_t *v, const char *what) {
    const void *q;
    if (take(c, 8, &q, what)) return -1;
    memcpy(v, q, 8);
    return 0;
}

/* an array starting 8-byte aligned (so int64 / int32 arrays are read in place) */
static int arr(cursor *c, size_t n, const void **out, const char *what) {
    if (align8(c)) return -1;
    return take(c, n, out, what);
}

#define FAIL(code, msg)            \
    do {                           \
        if (why) *why = (msg);     \
        return (code);             \
    } while (0)

int ws_load(const uint8_t *blob, size_t n, ws_encoder *enc, const char **why) {
    cursor c = {blob, blob + n, 0};
    const void *q;
    int32_t version, n_mod, reserved;
    if (((uintptr_t)blob & 7u) != 0) FAIL(-2, "blob not 8-byte aligned");
    if (take(&c, 4, &q, "magic") || memcmp(q, "WSE1", 4) != 0) FAIL(-3, "not a WSE1 blob");
    if (i32(&c, &version, "version") || version != 1) FAIL(-4, "unknown blob version");
    if (i32(&c, &n_mod, "modalities") || n_mod < 1 || n_mod > 2) FAIL(-5, "bad modality count");
    if (i32(&c, &reserved, "header")) FAIL(-1, c.why);
    memset(enc, 0, sizeof(*enc));
    enc->n_mod = n_mod;
    for (int mi = 0; mi < n_mod; mi++) {
        ws_modality *m = &enc->mod[mi];
        int32_t bits;
        if (take(&c, 8, &q, "name")) FAIL(-1, c.why);
        memcpy(m->name, q, 8);
        m->name[7] = 0;
        if (i32(&c, &m->act_bits, "act_bits") || i32(&c, &m->p, "p") || i32(&c, &bits, "inv_sx") ||
            i32(&c, &m->n_conv, "n_conv") || i32(&c, &m->n_add, "n_add") || i32(&c, &m->n_cb, "n_cb") ||
            i32(&c, &m->K, "K") || i32(&c, &m->D, "D"))
            FAIL(-1, c.why);
        memcpy(&m->inv_sx, &bits, 4);
        if (m->act_bits != 8 && m->act_bits != 16) FAIL(-6, "act_bits must be 8 or 16");
        if (m->n_conv != 3 * m->n_add + 1 || m->n_add < 1 || m->n_add > WS_MAX_ADDS)
            FAIL(-6, "the graph must be n_add stages of three convolutions and a projection");
        if (m->n_cb < 1 || m->n_cb > WS_MAX_STAGES || m->K < 1 || m->K > 65535 || m->D < 1 || m->D > 512)
            FAIL(-6, "bad codebook shape");
        for (int i = 0; i < m->n_conv; i++) {
            ws_conv *cv = &m->conv[i];
            if (i32(&c, &cv->out_ch, "conv") || i32(&c, &cv->in_ch, "conv") || i32(&c, &cv->k, "conv") ||
                i32(&c, &cv->stride, "conv"))
                FAIL(-1, c.why);
            if (cv->out_ch < 1 || cv->out_ch > WS_MAX_CHANNELS || cv->in_ch < 1 || cv->in_ch > WS_MAX_CHANNELS ||
                cv->k < 1 || cv->k > 15 || !(cv->k & 1) || cv->stride < 1 || cv->stride > 2)
                FAIL(-6, "bad convolution shape");
            size_t o = (size_t)cv->out_ch;
            if (arr(&c, o * (size_t)cv->in_ch * (size_t)cv->k, &q, "weights")) FAIL(-1, c.why);
            cv->w = (const int8_t *)q;
            if (arr(&c, 8 * o, &q, "bias")) FAIL(-1, c.why);
            cv->b = (const int64_t *)q;
            if (arr(&c, 4 * o, &q, "multipliers")) FAIL(-1, c.why);
            cv->m_pos = (const int32_t *)q;
            if (arr(&c, o, &q, "shifts")) FAIL(-1, c.why);
            cv->shift = (const int8_t *)q;
            for (size_t j = 0; j < o; j++)
                if (cv->shift[j] < 1 || cv->shift[j] > 62 || cv->m_pos[j] < (1 << 30)) FAIL(-6, "bad requantiser");
            /* |sum w x| <= in_ch * k * 127 * 2^(act_bits-1): int32 holds it when that is < 2^31 */
            cv->dot32 = (int64_t)cv->in_ch * cv->k * 127 * ((int64_t)1 << (m->act_bits - 1)) < ((int64_t)1 << 31);
        }
        if (m->conv[0].in_ch != 1) FAIL(-6, "the first convolution takes one channel");
        for (int i = 0; i < m->n_add; i++) {
            if (align8(&c) || i64(&c, &m->add[i].ma, "add") || i64(&c, &m->add[i].mb, "add") ||
                i32(&c, &m->add[i].shift, "add") || i32(&c, &reserved, "add"))
                FAIL(-1, c.why);
            if (m->add[i].shift < 1 || m->add[i].shift > 62) FAIL(-6, "bad add shift");
        }
        if (m->conv[m->n_conv - 1].out_ch != m->D) FAIL(-6, "projection width differs from D");
        for (int j = 0; j < m->n_cb; j++) {
            if (align8(&c) || i32(&c, &m->cb_exp[j], "codebook") || i32(&c, &reserved, "codebook")) FAIL(-1, c.why);
            if (m->cb_exp[j] > m->p || m->p - m->cb_exp[j] > 15) FAIL(-6, "codebook exponent beyond p");
            if (arr(&c, (size_t)m->K * (size_t)m->D, &q, "codebook")) FAIL(-1, c.why);
            m->cb[j] = (const int8_t *)q;
        }
    }
    if (align8(&c) || c.p != c.end) FAIL(-7, "trailing bytes after the last modality");
    return 0;
}

const ws_modality *ws_modality_named(const ws_encoder *enc, const char *name) {
    for (int i = 0; i < enc->n_mod; i++)
        if (strncmp(enc->mod[i].name, name, 8) == 0) return &enc->mod[i];
    return 0;
}

/* ------------------------------------------------------------------------------ kernels */

/* "requantisation: y = clamp((acc * m + (1 << (s - 1))) >> s, lo, hi) where m = m_pos[o] when
 * acc >= 0 else m_neg[o]"; the product wraps like the reference's int64 (computed unsigned). */
static inline int32_t requant(int64_t acc, int64_t m_pos, int64_t m_neg, int s, int32_t lo, int32_t hi) {
    int64_t m = acc >= 0 ? m_pos : m_neg;
    uint64_t prod = (uint64_t)acc * (uint64_t)m + ((uint64_t)1 << (s - 1));
    int64_t y = (int64_t)prod >> s; /* arithmetic shift: floor */
    return y < lo ? lo : (y > hi ? hi : (int32_t)y);
}

/* "convolution: acc[o,t] = b[o] + sum_{i,k} w[o,i,k] * x[i, t*stride + k - k//2] with zero
 * padding"; in [in_ch][in_len], out [out_ch][out_len]. ``act``: LeakyReLU folded
 * ("m_neg = (m_pos * 6554 + 32768) >> 16"), else m_neg = m_pos. */
static void conv(const ws_conv *cv, const int16_t *in, int in_len, int16_t *out, int out_len, int act, int32_t lo,
                 int32_t hi, int32_t *acc32) {
    const int K = cv->k, half = cv->k / 2, S = cv->stride, I = cv->in_ch;
    for (int o = 0; o < cv->out_ch; o++) {
        const int8_t *wo = cv->w + (size_t)o * I * K;
        int64_t m_pos = cv->m_pos[o];
        int64_t m_neg = act ? ((m_pos * SLOPE_Q16 + 32768) >> 16) : m_pos;
        int s = cv->shift[o];
        int16_t *y = out + (size_t)o * out_len;
        if (cv->dot32) {
            memset(acc32, 0, sizeof(int32_t) * (size_t)out_len);
            for (int i = 0; i < I; i++) {
                const int16_t *xi = in + (size_t)i * in_len;
                for (int k = 0; k < K; k++) {
                    int32_t wk = wo[i * K + k];
                    if (!wk) continue;
                    int off = k - half; /* input index t*S + off */
                    int t0 = off < 0 ? (-off + S - 1) / S : 0;
                    int t1 = (in_len - 1 - off) / S + 1; /* first t with t*S + off >= in_len */
                    if (t1 > out_len) t1 = out_len;
                    if (S == 1) {
                        const int16_t *xp = xi + off;
                        for (int t = t0; t < t1; t++) acc32[t] += wk * xp[t];
                    } else {
                        for (int t = t0; t < t1; t++) acc32[t] += wk * xi[t * S + off];
                    }
                }
            }
            for (int t = 0; t < out_len; t++)
                y[t] = (int16_t)requant((int64_t)acc32[t] + cv->b[o], m_pos, m_neg, s, lo, hi);
        } else { /* the general path: every product summed in int64 */
            for (int t = 0; t < out_len; t++) {
                int64_t acc = cv->b[o];
                for (int i = 0; i < I; i++)
                    for (int k = 0; k < K; k++) {
                        int pos = t * S + k - half;
                        if (pos >= 0 && pos < in_len) acc += (int64_t)wo[i * K + k] * in[(size_t)i * in_len + pos];
                    }
                y[t] = (int16_t)requant(acc, m_pos, m_neg, s, lo, hi);
            }
        }
    }
}

static inline int out_len_of(const ws_conv *cv, int in_len) {
    /* torch's conv1d with padding k//2: floor((L + 2*(k//2) - k) / stride) + 1 */
    return (in_len + 2 * (cv->k / 2) - cv->k) / cv->stride + 1;
}

int ws_encode(const ws_modality *m, const float *x, int stages, uint16_t *idx, int16_t *z, void *scratch) {
    const int32_t lo = -(1 << (m->act_bits - 1)), hi = (1 << (m->act_bits - 1)) - 1;
    const size_t buf = (size_t)WS_MAX_CHANNELS * (WS_WINDOW / 2);
    int16_t *h = (int16_t *)scratch, *a = h + buf, *r1 = a + buf;
    int32_t *acc32 = (int32_t *)(r1 + buf);
    int32_t *res = acc32 + WS_WINDOW / 2;
    if (stages < 1 || stages > m->n_cb) return -1;
    /* "input: x_q = clamp(floor(x * inv_sx + 0.5), lo, hi), x and inv_sx float32" (the product
       and the sum each rounded to float32: build with -ffp-contract=off, no fused multiply-add) */
    for (int t = 0; t < WS_WINDOW; t++) {
        volatile float v = x[t] * m->inv_sx;
        float f = floorf(v + 0.5f);
        h[t] = (int16_t)(f < (float)lo ? lo : (f > (float)hi ? hi : (int32_t)f));
    }
    int len = WS_WINDOW;
    /* "3 x [ a = LReLU(conv_s2(h)); r1 = LReLU(conv(a)); r2 = LReLU(conv(r1)); h = add(a, r2) ]" */
    for (int s = 0; s < m->n_add; s++) {
        const ws_conv *cd = &m->conv[3 * s], *c1 = cd + 1, *c2 = cd + 2;
        int la = out_len_of(cd, len);
        if (la > WS_WINDOW / 2 || (size_t)cd->out_ch * la > buf || out_len_of(c1, la) != la || out_len_of(c2, la) != la) return -2;
        conv(cd, h, len, a, la, 1, lo, hi, acc32);
        conv(c1, a, la, r1, la, 1, lo, hi, acc32);
        conv(c2, r1, la, h, la, 1, lo, hi, acc32); /* r2 into h: h is no longer needed */
        /* "add: y = clamp((a * ma + b * mb + (1 << (s - 1))) >> s, lo, hi)" */
        const ws_add *ad = &m->add[s];
        size_t n = (size_t)cd->out_ch * la;
        for (size_t j = 0; j < n; j++) {
            uint64_t v = (uint64_t)((int64_t)a[j] * ad->ma) + (uint64_t)((int64_t)h[j] * ad->mb) +
                         ((uint64_t)1 << (ad->shift - 1));
            int64_t y = (int64_t)v >> ad->shift;
            h[j] = (int16_t)(y < lo ? lo : (y > hi ? hi : y));
        }
        len = la;
    }
    /* "z = conv1x1(h): int16, scale 2^-p" (the projection clamps to int16, no activation) */
    const ws_conv *pj = &m->conv[m->n_conv - 1];
    int16_t *zz = a;
    conv(pj, h, len, zz, len, 0, -32768, 32767, acc32);
    if (z) memcpy(z, zz, sizeof(int16_t) * (size_t)m->D * len);
    /* "search, stage j: k* = argmin_k sum_d (r[d] - (e_j[k,d] << d_j))^2 (ties: smallest k), then
       r -= e_j[k*] << d_j, starting from r = z"; as |e|^2 - 2 r.e, which orders k the same */
    const int D = m->D;
    for (int t = 0; t < len; t++) {
        for (int d = 0; d < D; d++) res[d] = zz[(size_t)d * len + t];
        for (int j = 0; j < stages; j++) {
            const int sh = m->p - m->cb_exp[j];
            const int8_t *e = m->cb[j];
            int64_t best = 0;
            int bk = 0;
            for (int k = 0; k < m->K; k++) {
                const int8_t *ek = e + (size_t)k * D;
                int64_t dist = 0;
                for (int d = 0; d < D; d++) {
                    int32_t ed = (int32_t)ek[d] * (1 << sh);
                    dist += (int64_t)ed * (ed - 2 * res[d]);
                }
                if (k == 0 || dist < best) {
                    best = dist;
                    bk = k;
                }
            }
            const int8_t *eb = e + (size_t)bk * D;
            for (int d = 0; d < D; d++) res[d] -= (int32_t)eb[d] * (1 << sh);
            idx[j * len + t] = (uint16_t)bk;
        }
    }
    return len;
}
