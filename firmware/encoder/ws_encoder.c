/* The integer edge encoder of `wardmodels/int8.py` in C (see ws_encoder.h). Each rule below
 * quotes the docstring it implements. */
#include "ws_encoder.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define SLOPE_Q16 6554 /* LeakyReLU(0.1) folded into the negative multiplier */

/* Two 16-bit lanes at once: SMLAD on a core with the DSP extension (Cortex-M4/M7), the same
 * arithmetic in plain C elsewhere. acc + lo(x) * lo(y) + hi(x) * hi(y), lanes signed. */
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define SMLAD(x, y, acc) ((int32_t)__smlad((x), (y), (uint32_t)(acc)))
#else
static inline int32_t SMLAD(uint32_t x, uint32_t y, int32_t acc) {
    return acc + (int32_t)(int16_t)x * (int16_t)y + (int32_t)(int16_t)(x >> 16) * (int16_t)(y >> 16);
}
#endif
#define LO(v) ((int32_t)(int16_t)(v))
#define HI(v) ((int32_t)(int16_t)((v) >> 16))

static inline uint32_t pair16(const int16_t *p) { /* p[0] in the low lane, p[1] in the high one */
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint32_t pack16(int32_t lo, int32_t hi) { return (uint32_t)(uint16_t)lo | ((uint32_t)hi << 16); }

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

static int load_conv(cursor *c, ws_conv *cv, const char **why) {
    const void *q;
    size_t o = (size_t)cv->out_ch;
    if (arr(c, o * (size_t)cv->in_ch * (size_t)cv->k, &q, "weights")) FAIL(-1, c->why);
    cv->w = (const int8_t *)q;
    if (arr(c, 8 * o, &q, "bias")) FAIL(-1, c->why);
    cv->b = (const int64_t *)q;
    if (arr(c, 4 * o, &q, "multipliers")) FAIL(-1, c->why);
    cv->m_pos = (const int32_t *)q;
    if (arr(c, o, &q, "shifts")) FAIL(-1, c->why);
    cv->shift = (const int8_t *)q;
    for (size_t j = 0; j < o; j++)
        if (cv->shift[j] < 1 || cv->shift[j] > 62 || cv->m_pos[j] < (1 << 30)) FAIL(-6, "bad requantiser");
    return 0;
}

/* blob version 4: the modality's Dynamic-Deep chain (int16 activations, 3-tap stride-2 layers) */
static int load_chain(cursor *c, ws_modality *m, const char **why) {
    const void *q;
    int32_t reserved;
    if (align8(c) || i32(c, &m->n_chain, "chain") || i32(c, &m->chain_p_in, "chain")) FAIL(-1, c->why);
    if (m->n_chain < 0 || m->n_chain > WS_MAX_CHAIN) FAIL(-6, "bad chain length");
    if (m->n_chain && m->chain_p_in != m->p) FAIL(-6, "the chain does not read the projection's scale");
    for (int i = 0, ch = m->D; i < m->n_chain; i++) {
        ws_chain_layer *l = &m->chain[i];
        ws_conv *cv = &l->conv;
        if (i32(c, &cv->out_ch, "chain layer") || i32(c, &cv->in_ch, "chain layer") || i32(c, &cv->k, "chain layer") ||
            i32(c, &cv->stride, "chain layer") || i32(c, &l->p_out, "chain layer") || i32(c, &l->q, "chain layer") ||
            i32(c, &l->K, "chain layer") || i32(c, &reserved, "chain layer"))
            FAIL(-1, c->why);
        if (cv->in_ch != ch || cv->out_ch < 1 || cv->out_ch > WS_MAX_CHANNELS || cv->k != 3 || cv->stride != 2 ||
            l->K < 1 || l->K > WS_MAX_K || l->q > l->p_out || l->p_out - l->q > 15)
            FAIL(-6, "bad chain layer");
        if (load_conv(c, cv, why)) return -1;
        cv->dot32 = (int64_t)cv->in_ch * 3 * 127 * 32768 < ((int64_t)1 << 31);
        if (arr(c, (size_t)l->K * (size_t)cv->out_ch, &q, "chain codebook")) FAIL(-1, c->why);
        l->cb = (const int8_t *)q;
        int32_t n_st;
        if (align8(c) || i32(c, &n_st, "chain wire table") || i32(c, &l->wire_k, "chain wire table")) FAIL(-1, c->why);
        if (n_st < 0 || n_st > 1 || (n_st && l->wire_k != l->K)) FAIL(-6, "bad chain wire table");
        if (n_st) {
            if (take(c, WS_SCALE_CODES, &q, "chain wire table")) FAIL(-1, c->why);
            l->wire_scale = (const uint8_t *)q;
            if (i32(c, &l->wire_positions, "chain wire table") || l->wire_positions < 1) FAIL(-6, "bad chain wire table");
            if (take(c, (size_t)l->K, &q, "chain wire table")) FAIL(-1, c->why);
            l->wire_row = (const uint8_t *)q;
            for (int k = 0; k < WS_SCALE_CODES; k++)
                if (!l->wire_scale[k]) FAIL(-6, "a wire table gives a symbol frequency 0");
            for (int k = 0; k < l->K; k++)
                if (!l->wire_row[k]) FAIL(-6, "a wire table gives a symbol frequency 0");
        } else {
            l->wire_k = 0;
        }
        ch = cv->out_ch;
    }
    return 0;
}

static int load_predictor(cursor *c, ws_predictor *p, int version, const char **why) {
    const void *q;
    if (align8(c) || i32(c, &p->n_in, "predictor") || i32(c, &p->hidden, "predictor") ||
        i32(c, &p->n_levels, "predictor") || i32(c, &p->n_bounds, "predictor"))
        FAIL(-1, c->why);
    if (!p->n_in) return 0;
    if (p->n_in < 1 || p->n_in > WS_MAX_PRED_IN || p->hidden < 1 || p->hidden > WS_MAX_HIDDEN ||
        p->n_levels != WS_PRED_LEVELS || p->n_bounds < 1 || p->n_bounds > 4096)
        FAIL(-6, "bad predictor shape");
    const size_t ni = (size_t)p->n_in, nh = (size_t)p->hidden, nl = (size_t)p->n_levels;
    const float **dst[6] = {&p->mu, &p->sd, &p->w1, &p->b1, &p->w2, &p->b2};
    const size_t len[6] = {ni, ni, nh * ni, nh, nl * nh, nl};
    for (int i = 0; i < 6; i++) {
        if (take(c, 4 * len[i], &q, "predictor weights")) FAIL(-1, c->why);
        *dst[i] = (const float *)q;
    }
    if (arr(c, 4 * nl, &q, "predictor offsets")) FAIL(-1, c->why);
    p->offsets = (const float *)q;
    if (arr(c, 8 * (size_t)p->n_bounds, &q, "slack bounds")) FAIL(-1, c->why);
    p->bounds = (const double *)q;
    if (arr(c, 8 * (size_t)p->n_bounds, &q, "slack table")) FAIL(-1, c->why);
    p->lams = (const double *)q;
    if (take(c, 8, &q, "deployed bound")) FAIL(-1, c->why);
    memcpy(&p->deployed_bound, q, 8);
    if (arr(c, 8 * 14, &q, "QRS filter")) FAIL(-1, c->why);
    p->qrs_b = (const double *)q;
    p->qrs_a = p->qrs_b + 5;
    p->qrs_zi = p->qrs_b + 10;
    if (p->qrs_a[0] != 1.0) FAIL(-6, "the QRS filter's a[0] must be 1");
    if (version >= 5) { /* the predictor's id: 6 bytes, then 2 zero bytes */
        if (take(c, 8, &q, "predictor id")) FAIL(-1, c->why);
        if (((const uint8_t *)q)[6] || ((const uint8_t *)q)[7]) FAIL(-6, "bad predictor id padding");
        p->id = (const uint8_t *)q;
    }
    for (size_t i = 0; i < ni; i++)
        if (!(p->sd[i] > 0)) FAIL(-6, "a predictor input has no spread");
    for (int i = 1; i < p->n_bounds; i++)
        if (!(p->bounds[i] > p->bounds[i - 1])) FAIL(-6, "the slack bounds must increase");
    return 0;
}

uint32_t ws_crc32(const uint8_t *p, size_t n) { /* zlib's CRC-32 (reflected 0xEDB88320) */
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

static int finite_positive(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]) || !(v[i] > 0)) return 0;
    return 1;
}

static int finite(const double *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

int ws_load(const uint8_t *blob, size_t n, ws_encoder *enc, const char **why) {
    cursor c = {blob, blob + n, 0};
    const void *q;
    int32_t version, n_mod, reserved;
    if (((uintptr_t)blob & 7u) != 0) FAIL(-2, "blob not 8-byte aligned");
    if (take(&c, 4, &q, "magic") || memcmp(q, "WSE1", 4) != 0) FAIL(-3, "not a WSE1 blob");
    if (i32(&c, &version, "version") || (version < 3 || version > 5))
        FAIL(-4, "unknown blob version (this encoder reads 3, 4 and 5)");
    if (version >= 4) { /* the trailer: the CRC-32 of every byte before it, then 4 zero bytes */
        uint32_t crc, zero;
        if (n < 24) FAIL(-1, "blob shorter than its trailer");
        memcpy(&crc, blob + n - 8, 4);
        memcpy(&zero, blob + n - 4, 4);
        if (zero || crc != ws_crc32(blob, n - 8)) FAIL(-8, "blob CRC mismatch: the parameters are corrupted");
        c.end = blob + n - 8;
    }
    if (i32(&c, &n_mod, "modalities") || n_mod < 1 || n_mod > 2) FAIL(-5, "bad modality count");
    if (i32(&c, &reserved, "header")) FAIL(-1, c.why);
    memset(enc, 0, sizeof(*enc));
    enc->n_mod = n_mod;
    enc->version = version;
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
        if (!finite_positive(&m->inv_sx, 1)) FAIL(-6, "bad input scale");
        if (m->act_bits != 8 && m->act_bits != 16) FAIL(-6, "act_bits must be 8 or 16");
        if (m->n_conv != 3 * m->n_add + 1 || m->n_add < 1 || m->n_add > WS_MAX_ADDS)
            FAIL(-6, "the graph must be n_add stages of three convolutions and a projection");
        if (m->n_cb < 1 || m->n_cb > WS_MAX_STAGES || m->K < 1 || m->K > WS_MAX_K || m->D < 1 || m->D > 512)
            FAIL(-6, "bad codebook shape");
        for (int i = 0; i < m->n_conv; i++) {
            ws_conv *cv = &m->conv[i];
            if (i32(&c, &cv->out_ch, "conv") || i32(&c, &cv->in_ch, "conv") || i32(&c, &cv->k, "conv") ||
                i32(&c, &cv->stride, "conv"))
                FAIL(-1, c.why);
            if (cv->out_ch < 1 || cv->out_ch > WS_MAX_CHANNELS || cv->in_ch < 1 || cv->in_ch > WS_MAX_CHANNELS ||
                cv->k < 1 || cv->k > 2 * WS_PAD + 1 || !(cv->k & 1) || cv->stride < 1 || cv->stride > 2)
                FAIL(-6, "bad convolution shape");
            if (load_conv(&c, cv, why)) return -1;
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
        for (int s = 0, ch = 1; s <= m->n_add; s++) { /* each layer reads what the one before it wrote */
            const ws_conv *cv = &m->conv[3 * s];
            if (s == m->n_add) {
                if (cv->in_ch != ch || cv->k != 1 || cv->stride != 1) FAIL(-6, "the projection is a 1x1 over the last stage");
                break;
            }
            if (cv[0].in_ch != ch || cv[1].in_ch != cv[0].out_ch || cv[2].in_ch != cv[1].out_ch ||
                cv[2].out_ch != cv[0].out_ch || cv[1].stride != 1 || cv[2].stride != 1)
                FAIL(-6, "a stage's convolutions do not chain (or its residual add does not match)");
            ch = cv[0].out_ch;
        }
        if (m->conv[m->n_conv - 1].out_ch != m->D) FAIL(-6, "projection width differs from D");
        for (int j = 0; j < m->n_cb; j++) {
            if (align8(&c) || i32(&c, &m->cb_exp[j], "codebook") || i32(&c, &reserved, "codebook")) FAIL(-1, c.why);
            if (m->cb_exp[j] > m->p || m->p - m->cb_exp[j] > 15) FAIL(-6, "codebook exponent beyond p");
            if (arr(&c, (size_t)m->K * (size_t)m->D, &q, "codebook")) FAIL(-1, c.why);
            m->cb[j] = (const int8_t *)q;
        }
        if (align8(&c) || i32(&c, &m->n_sections, "front end") || i32(&c, &m->steps_per_octave, "front end"))
            FAIL(-1, c.why);
        if (take(&c, 8, &q, "front end")) FAIL(-1, c.why);
        memcpy(&m->log2_min, q, 8);
        m->input_limit = DBL_MAX;
        if (version >= 4) {
            if (take(&c, 8, &q, "front end")) FAIL(-1, c.why);
            memcpy(&m->input_limit, q, 8);
            if (!isfinite(m->input_limit) || !(m->input_limit > 0)) FAIL(-6, "bad input limit");
        }
        if (!isfinite(m->log2_min)) FAIL(-6, "bad front end");
        if (m->n_sections < 1 || m->n_sections > WS_MAX_SECTIONS || m->steps_per_octave < 1)
            FAIL(-6, "bad front end");
        if (arr(&c, 48 * (size_t)m->n_sections, &q, "filter sections")) FAIL(-1, c.why);
        m->sos = (const double *)q;
        if (arr(&c, 16 * (size_t)m->n_sections, &q, "filter state")) FAIL(-1, c.why);
        m->zi = (const double *)q;
        if (arr(&c, 4 * WS_SCALE_CODES, &q, "scale table")) FAIL(-1, c.why);
        m->scale = (const float *)q;
        if (!finite(m->sos, 6 * (size_t)m->n_sections) || !finite(m->zi, 2 * (size_t)m->n_sections) ||
            !finite_positive(m->scale, WS_SCALE_CODES))
            FAIL(-6, "the front end's filter or scale table is not finite");
        if (align8(&c) || i32(&c, &m->wire_stages, "wire tables") || i32(&c, &m->wire_k, "wire tables")) FAIL(-1, c.why);
        if (m->wire_stages < 0 || m->wire_stages > WS_MAX_STAGES || (m->wire_stages && m->wire_k != m->K))
            FAIL(-6, "bad wire tables");
        if (m->wire_stages) {
            if (take(&c, WS_SCALE_CODES, &q, "wire scale table")) FAIL(-1, c.why);
            m->wire_scale = (const uint8_t *)q;
            for (int j = 0; j < m->wire_stages; j++) {
                if (i32(&c, &m->wire_positions[j], "wire tables")) FAIL(-1, c.why);
                if (take(&c, (size_t)m->wire_k, &q, "wire stage table")) FAIL(-1, c.why);
                m->wire_rows[j] = (const uint8_t *)q;
                for (int k = 0; k < m->wire_k; k++)
                    if (!m->wire_rows[j][k]) FAIL(-6, "a wire table gives a symbol frequency 0");
            }
            for (int k = 0; k < WS_SCALE_CODES; k++)
                if (!m->wire_scale[k]) FAIL(-6, "a wire table gives a symbol frequency 0");
        }
        if (version >= 4 && load_chain(&c, m, why)) return -1;
        /* |r[d]| <= 32767 + sum_j 127 << d_j; the search's dot products fit int32 when
           D * 127 * that < 2^31 */
        int64_t rmax = 32767;
        for (int j = 0; j < m->n_cb; j++) rmax += (int64_t)127 << (m->p - m->cb_exp[j]);
        m->search32 = (int64_t)m->D * 127 * rmax < ((int64_t)1 << 31);
    }
    if (version >= 4 && load_predictor(&c, &enc->pred, version, why)) return -1;
    if (align8(&c) || c.p != c.end) FAIL(-7, "trailing bytes after the last modality");
    return 0;
}

const ws_modality *ws_modality_named(const ws_encoder *enc, const char *name) {
    for (int i = 0; i < enc->n_mod; i++)
        if (strncmp(enc->mod[i].name, name, 8) == 0) return &enc->mod[i];
    return 0;
}

/* ------------------------------------------------------------------------------ front end */

/* `wardmodels.frontend.StreamFilter`: the input clipped to its range, then scipy's sosfilt,
 * section by section, in its order of operations ("x_new = b0 x + z0; z0 = b1 x - a1 x_new + z1;
 * z1 = b2 x - a2 x_new"), started at rest on the first sample (zi = sosfilt_zi * x[0]); the output
 * rounded to float32. */
void ws_filter(const ws_modality *m, ws_filter_state *st, const double *raw, float *y, int n) {
    for (int t = 0; t < n; t++) {
        double x = raw[t];
        if (x != x) x = 0.0; /* numpy's nan_to_num, then the input range (`StreamFilter.limit`) */
        else if (x > m->input_limit) x = m->input_limit;
        else if (x < -m->input_limit) x = -m->input_limit;
        if (!st->started) {
            for (int s = 0; s < m->n_sections; s++) {
                st->zi[s][0] = m->zi[2 * s] * x;
                st->zi[s][1] = m->zi[2 * s + 1] * x;
            }
            st->started = 1;
        }
        for (int s = 0; s < m->n_sections; s++) {
            const double *c = m->sos + 6 * s;
            double x_new = c[0] * x + st->zi[s][0];
            st->zi[s][0] = c[1] * x - c[4] * x_new + st->zi[s][1];
            st->zi[s][1] = c[2] * x - c[5] * x_new;
            x = x_new;
        }
        y[t] = (float)x;
    }
}

/* numpy's pairwise summation of a contiguous array (the order its sums, means and np.std take):
 * below 8 elements in order; up to 128 in eight interleaved partial sums added pairwise, then the
 * rest; above, split in two at a multiple of 8. In float64 and, with float32 accumulators as
 * numpy sums float32 arrays, in float32. */
#define PAIRWISE_SUM(NAME, T)                                                              \
    T NAME(const T *a, int n) {                                                            \
        if (n < 8) {                                                                       \
            T r = 0;                                                                       \
            for (int i = 0; i < n; i++) r += a[i];                                         \
            return r;                                                                      \
        }                                                                                  \
        if (n <= 128) {                                                                    \
            T r[8];                                                                        \
            int i;                                                                         \
            for (i = 0; i < 8; i++) r[i] = a[i];                                           \
            for (i = 8; i < n - (n % 8); i += 8)                                           \
                for (int j = 0; j < 8; j++) r[j] += a[i + j];                              \
            T res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));     \
            for (; i < n; i++) res += a[i];                                                \
            return res;                                                                    \
        }                                                                                  \
        int n2 = n / 2;                                                                    \
        n2 -= n2 % 8;                                                                      \
        return NAME(a, n2) + NAME(a + n2, n - n2);                                         \
    }
PAIRWISE_SUM(ws_pairwise_sum, double)
PAIRWISE_SUM(ws_pairwise_sum_f32, float)

/* `scale_code` and `normalise`: code = clip(round_half_even((log2(max(std, 1e-30)) - log2_min) *
 * steps), 0, 255) of the window's (population) standard deviation in float64, then
 * x = y / scale[code] in float32 */
uint8_t ws_normalise(const ws_modality *m, const float *y, float *x) {
    double d[WS_WINDOW];
    for (int t = 0; t < WS_WINDOW; t++) d[t] = y[t];
    const double mean = ws_pairwise_sum(d, WS_WINDOW) / WS_WINDOW;
    for (int t = 0; t < WS_WINDOW; t++) {
        const double v = d[t] - mean;
        d[t] = v * v;
    }
    const double std = sqrt(ws_pairwise_sum(d, WS_WINDOW) / WS_WINDOW);
    double code = rint((log2(std > 1e-30 ? std : 1e-30) - m->log2_min) * m->steps_per_octave);
    code = code < 0 ? 0 : (code > WS_SCALE_CODES - 1 ? WS_SCALE_CODES - 1 : code);
    const uint8_t c = (uint8_t)code;
    for (int t = 0; t < WS_WINDOW; t++) x[t] = y[t] / m->scale[c];
    return c;
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

/* Activations live in rows of ``len + 2 * WS_PAD`` int16 whose margins are zero: the spec's
 * zero padding, there to be read, so no product needs a bounds check (kernels of up to
 * 2 * WS_PAD + 1 taps, checked at load). A row pointer points at the row's first real sample. */
static inline int row_stride(int len) { return len + 2 * WS_PAD; }

/* "convolution: acc[o,t] = b[o] + sum_{i,k} w[o,i,k] * x[i, t*stride + k - k//2] with zero
 * padding"; ``in``: in_ch rows of in_len, ``out``: out_ch rows of out_len (margins written
 * zero). ``act``: LeakyReLU folded ("m_neg = (m_pos * 6554 + 32768) >> 16"), else m_neg = m_pos.
 *
 * Where the layer's dot products provably fit int32 (`dot32`), four outputs are accumulated at
 * once in registers, two 16-bit products per instruction (SMLAD); integer addition in any order
 * gives the same sum, so the result is the spec's bit for bit. Otherwise every product is summed
 * in int64. */
static int64_t dot_at(const ws_conv *cv, const int8_t *wo, const int16_t *in, int in_len, int t) {
    const int K = cv->k, I = cv->in_ch, st = row_stride(in_len);
    const int16_t *x = in + t * cv->stride - cv->k / 2;
    int64_t acc = 0;
    for (int i = 0; i < I; i++, x += st)
        for (int k = 0; k < K; k++) acc += (int64_t)wo[i * K + k] * x[k];
    return acc;
}

/* Four outputs of a 3-tap convolution at stride S (a literal at each call, so the compiler
 * specialises it): output u reads the pair (x[uS], x[uS + 1]) for taps 0 and 1 and x[uS + 2]
 * for tap 2, which for S = 1 and 2 is a lane of a pair already loaded: five loads serve twelve
 * products per input channel. */
static inline __attribute__((always_inline)) void taps3(const int16_t *xi, int st, int I, const int8_t *wi,
                                                         const int S, int32_t acc[4]) {
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int i = 0; i < I; i++, xi += st, wi += 3) {
        const uint32_t w01 = pack16(wi[0], wi[1]);
        const int32_t w2 = wi[2];
        const uint32_t p0 = pair16(xi), p1 = pair16(xi + S), p2 = pair16(xi + 2 * S), p3 = pair16(xi + 3 * S),
                       p4 = pair16(xi + 4 * S);
        /* x[uS + 2]: the high lane of pair u + 1 when S = 1, the low lane of pair u + 1 when S = 2 */
        a0 = SMLAD(p0, w01, a0) + w2 * (S == 1 ? LO(p2) : LO(p1));
        a1 = SMLAD(p1, w01, a1) + w2 * (S == 1 ? LO(p3) : LO(p2));
        a2 = SMLAD(p2, w01, a2) + w2 * (S == 1 ? LO(p4) : LO(p3));
        a3 = SMLAD(p3, w01, a3) + w2 * (S == 1 ? HI(p4) : LO(p4));
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* Four outputs of any other convolution: taps in pairs (SMLAD), an odd last tap alone. */
static void taps(const int16_t *xi, int st, int I, const int8_t *wi, int K, int S, int32_t acc[4]) {
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int i = 0; i < I; i++, xi += st, wi += K) {
        int k = 0;
        for (; k + 1 < K; k += 2) {
            const uint32_t w = pack16(wi[k], wi[k + 1]);
            a0 = SMLAD(pair16(xi + k), w, a0);
            a1 = SMLAD(pair16(xi + k + S), w, a1);
            a2 = SMLAD(pair16(xi + k + 2 * S), w, a2);
            a3 = SMLAD(pair16(xi + k + 3 * S), w, a3);
        }
        if (k < K) {
            const int32_t w = wi[k];
            a0 += w * xi[k];
            a1 += w * xi[k + S];
            a2 += w * xi[k + 2 * S];
            a3 += w * xi[k + 3 * S];
        }
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

static void conv(const ws_conv *cv, const int16_t *in, int in_len, int16_t *out, int out_len, int act, int32_t lo,
                 int32_t hi) {
    const int K = cv->k, half = cv->k / 2, S = cv->stride, I = cv->in_ch, st = row_stride(in_len);
    for (int o = 0; o < cv->out_ch; o++) {
        const int8_t *wo = cv->w + (size_t)o * I * K;
        const int64_t m_pos = cv->m_pos[o];
        const int64_t m_neg = act ? ((m_pos * SLOPE_Q16 + 32768) >> 16) : m_pos;
        const int s = cv->shift[o];
        const int64_t b = cv->b[o];
        int16_t *y = out + (size_t)o * row_stride(out_len);
        for (int u = 1; u <= WS_PAD; u++) y[-u] = y[out_len - 1 + u] = 0;
        int t = 0;
        if (cv->dot32) {
            for (; t + 4 <= out_len; t += 4) {
                int32_t acc[4] = {0, 0, 0, 0};
                const int16_t *xi = in + t * S - half;
                const int8_t *wi = wo;
                if (K == 3 && S == 1) { /* 79 % of the encoder's products */
                    taps3(xi, st, I, wi, 1, acc);
                } else if (K == 3 && S == 2) { /* the downsampling layers */
                    taps3(xi, st, I, wi, 2, acc);
                } else {
                    taps(xi, st, I, wi, K, S, acc);
                }
                for (int u = 0; u < 4; u++) y[t + u] = (int16_t)requant(b + acc[u], m_pos, m_neg, s, lo, hi);
            }
        }
        for (; t < out_len; t++) /* the general path: every product summed in int64 */
            y[t] = (int16_t)requant(b + dot_at(cv, wo, in, in_len, t), m_pos, m_neg, s, lo, hi);
    }
}

void ws_conv_int16(const ws_conv *cv, const int16_t *in, int in_len, int16_t *out, int out_len) {
    conv(cv, in, in_len, out, out_len, 0, -32768, 32767);
}

static inline int out_len_of(const ws_conv *cv, int in_len) {
    /* torch's conv1d with padding k//2: floor((L + 2*(k//2) - k) / stride) + 1 */
    return (in_len + 2 * (cv->k / 2) - cv->k) / cv->stride + 1;
}

int ws_encode(const ws_modality *m, const float *x, int stages, uint16_t *idx, int16_t *z, void *scratch) {
    const int32_t lo = -(1 << (m->act_bits - 1)), hi = (1 << (m->act_bits - 1)) - 1;
    int16_t *h = (int16_t *)scratch + WS_PAD, *a = h + WS_ACT_BUF, *r1 = a + WS_ACT_BUF;
    int32_t *res = (int32_t *)((int16_t *)scratch + 3 * WS_ACT_BUF);
    if (stages < 1 || stages > m->n_cb) return -1;
    /* "input: x_q = clamp(floor(x * inv_sx + 0.5), lo, hi), x and inv_sx float32" (the product
       and the sum each rounded to float32: build with -ffp-contract=off, no fused multiply-add) */
    for (int u = 1; u <= WS_PAD; u++) h[-u] = h[WS_WINDOW - 1 + u] = 0;
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
        if ((size_t)cd->out_ch * row_stride(la) > WS_ACT_BUF || out_len_of(c1, la) != la || out_len_of(c2, la) != la)
            return -2;
        conv(cd, h, len, a, la, 1, lo, hi);
        conv(c1, a, la, r1, la, 1, lo, hi);
        conv(c2, r1, la, h, la, 1, lo, hi); /* r2 into h: h is no longer needed */
        /* "add: y = clamp((a * ma + b * mb + (1 << (s - 1))) >> s, lo, hi)", over whole rows: the
           zero margins stay zero ((0 + 2^(s-1)) >> s = 0) */
        const ws_add *ad = &m->add[s];
        size_t n = (size_t)cd->out_ch * row_stride(la) - 2 * WS_PAD;
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
    const int D = m->D, zs = row_stride(len);
    int16_t *zz = a;
    if ((size_t)D * zs > WS_ACT_BUF) return -2;
    conv(pj, h, len, zz, len, 0, -32768, 32767);
    if (z)
        for (int d = 0; d < D; d++) memcpy(z + (size_t)d * len, zz + (size_t)d * zs, sizeof(int16_t) * len);
    /* "search, stage j: k* = argmin_k sum_d (r[d] - (e_j[k,d] << d_j))^2 (ties: smallest k), then
       r -= e_j[k*] << d_j, starting from r = z"; as |e_k|^2 - 2 r.e_k, which orders k the same,
       with |e_k|^2 = (sum e^2) << 2 d_j once per stage and r.e_k = (sum r e) << d_j, the sum in
       int32 where the loader proved it fits (`search32`) */
    int64_t *norm = (int64_t *)(res + 512);
    for (int j = 0; j < stages; j++) {
        const int sh = m->p - m->cb_exp[j];
        const int8_t *e = m->cb[j];
        for (int k = 0; k < m->K; k++) {
            int32_t n2 = 0;
            for (int d = 0; d < D; d++) n2 += (int32_t)e[(size_t)k * D + d] * e[(size_t)k * D + d];
            norm[(size_t)j * m->K + k] = (int64_t)n2 << (2 * sh);
        }
    }
    for (int t = 0; t < len; t++) {
        for (int d = 0; d < D; d++) res[d] = zz[(size_t)d * zs + t];
        for (int j = 0; j < stages; j++) {
            const int sh = m->p - m->cb_exp[j];
            const int8_t *e = m->cb[j];
            const int64_t *nj = norm + (size_t)j * m->K;
            int64_t best = 0;
            int bk = 0;
            for (int k = 0; k < m->K; k++) {
                const int8_t *ek = e + (size_t)k * D;
                int64_t dot;
                if (m->search32) {
                    int32_t d32 = 0;
                    for (int d = 0; d < D; d++) d32 += res[d] * ek[d];
                    dot = d32;
                } else {
                    dot = 0;
                    for (int d = 0; d < D; d++) dot += (int64_t)res[d] * ek[d];
                }
                const int64_t dist = nj[k] - dot * ((int64_t)2 << sh); /* a product: << of a negative is undefined */
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
