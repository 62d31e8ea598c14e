/* Wire format v2 frames (see ws_frame.h and the layout in `stream/wire.py`'s docstring). */
#include "ws_frame.h"

#include <string.h>

#include "ws_arith.h"
#include "ws_lossless.h"
#include "ws_encoder.h"
#include "ws_sha256.h"

#define TAG_V2 0xD2
#define FLAG_HMAC 0x01
#define FLAG_PRED 0x02
#define FLAG_REF 0x04
#define FLAG_LOSSLESS 0x08
#define FLAG_PRED_IN_LEVEL 0x20
#define FLAG_CODED 0x40
#define FLAG_PREDICTOR 0x80
#define PREDICTOR_ID_BYTES 6
#define HMAC_LEN 16

static size_t header(uint8_t *o, uint8_t flags, uint32_t bed, uint32_t seq, uint64_t t_ms, uint8_t model,
                     const ws_section *sec, int n_sec) {
    uint8_t mods = 0;
    for (int i = 0; i < n_sec; i++) mods |= (uint8_t)((1u << sec[i].modality) | (sec[i].zi ? 16u << sec[i].modality : 0));
    o[0] = TAG_V2;
    o[1] = flags;
    for (int i = 0; i < 4; i++) o[2 + i] = (uint8_t)(bed >> (24 - 8 * i));
    for (int i = 0; i < 4; i++) o[6 + i] = (uint8_t)(seq >> (24 - 8 * i));
    for (int i = 0; i < 6; i++) o[10 + i] = (uint8_t)(t_ms >> (40 - 8 * i));
    o[16] = model;
    o[17] = mods;
    return 18;
}

/* indices at ``bits`` bits each, MSB first, zero padded to a byte -> bytes written */
static size_t pack(uint8_t *o, const uint16_t *idx, int n, int bits) {
    size_t nb = ((size_t)n * bits + 7) / 8, pos = 0;
    memset(o, 0, nb);
    for (int i = 0; i < n; i++)
        for (int b = bits - 1; b >= 0; b--, pos++)
            if ((idx[i] >> b) & 1u) o[pos >> 3] |= (uint8_t)(0x80u >> (pos & 7));
    return nb;
}

/* the CRC, then with a key the tag over everything before it */
static int finish(uint8_t *out, size_t cap, size_t n, const uint8_t *key, size_t key_len) {
    if (n + 4 + (key ? HMAC_LEN : 0) > cap) return -1;
    uint32_t crc = ws_crc32(out, n);
    for (int i = 0; i < 4; i++) out[n + i] = (uint8_t)(crc >> (24 - 8 * i));
    n += 4;
    if (key) {
        uint8_t tag[32];
        ws_hmac_sha256(key, key_len, out, n, tag);
        memcpy(out + n, tag, HMAC_LEN);
        n += HMAC_LEN;
    }
    return (int)n;
}

static void put_f32(uint8_t *o, float v) {
    uint32_t g;
    memcpy(&g, &v, 4);
    for (int i = 0; i < 4; i++) o[i] = (uint8_t)(g >> (24 - 8 * i));
}

/* a raw section's side (gain, offset 0 as big-endian f32), the front end's state when given (4
 * big-endian f32), and its samples: big-endian int16, or lossless-coded behind their u16 byte length */
static size_t raw_section(uint8_t *o, const int16_t *x, float gain, const float *zi, int lossless) {
    put_f32(o, gain);
    memset(o + 4, 0, 4);
    size_t h = 8;
    if (zi)
        for (int i = 0; i < 4; i++, h += 4) put_f32(o + h, zi[i]);
    if (lossless) {
        const size_t n = ws_lossless_encode(x, 256, o + h + 2);
        o[h] = (uint8_t)(n >> 8), o[h + 1] = (uint8_t)n;
        return h + 2 + n;
    }
    for (int t = 0; t < 256; t++) {
        o[h + 2 * t] = (uint8_t)((uint16_t)x[t] >> 8);
        o[h + 1 + 2 * t] = (uint8_t)x[t];
    }
    return h + 2 * 256;
}

int ws_in_burst(uint32_t seq, uint32_t bed, uint32_t every) {
    return every > 0 && (uint32_t)(((uint64_t)seq + (uint64_t)bed * 37u % every) % every) < 5u;
}

int ws_frame_v2(uint8_t *out, size_t cap, uint32_t bed, uint32_t seq, uint64_t t_start_ms, uint8_t model,
                const ws_section *sec, int n_sec, const uint8_t *hmac_key, size_t key_len) {
    return ws_frame_v2_ex(out, cap, bed, seq, t_start_ms, model, sec, n_sec, 0, hmac_key, key_len);
}

int ws_frame_v2_ex(uint8_t *out, size_t cap, uint32_t bed, uint32_t seq, uint64_t t_start_ms, uint8_t model,
                   const ws_section *sec, int n_sec, const ws_frame_extra *ex, const uint8_t *hmac_key, size_t key_len) {
    const int pred_code = ex ? ex->pred_code : -1, lossless = ex ? ex->lossless : 0;
    const int16_t *ref = ex ? ex->ref : 0;
    const uint8_t *pid = ex ? ex->predictor_id : 0;
    if (n_sec < 1 || n_sec > 2 || t_start_ms >> 48 || pred_code < -1 || pred_code > 254) return -2;
    if (pid && pred_code < 0) return -2; /* a predictor id travels only with a predicted error */
    for (int i = 0; i < n_sec; i++) {
        if (sec[i].level < 0 || sec[i].level > 255 || (sec[i].level && (sec[i].bits < 1 || sec[i].bits > 16)) ||
            (!sec[i].level && (!sec[i].raw || sec[i].tables)) || (sec[i].level && sec[i].zi) ||
            (i && sec[i].modality <= sec[i - 1].modality) || sec[i].modality < 0 || sec[i].modality > 1)
            return -2;
        if (sec[i].tables) { /* the tables code exactly the section's indices */
            int total = 0;
            for (int j = 0; j < sec[i].tables->n_stages; j++) total += sec[i].tables->positions[j];
            if (total != sec[i].n_idx) return -2;
        }
    }
    /* the predicted error: in the ECG level byte when it fits there (level < 8, code < 32) */
    int ecg = -1;
    for (int i = 0; i < n_sec; i++)
        if (sec[i].modality == 0) ecg = i;
    const int packed = pred_code >= 0 && ecg >= 0 && sec[ecg].level < 8 && pred_code <= 31;
    const uint8_t auth = (uint8_t)((hmac_key ? FLAG_HMAC : 0) | (packed ? FLAG_PRED_IN_LEVEL : 0) |
                                   (pred_code >= 0 && !packed ? FLAG_PRED : 0) | (ref ? FLAG_REF : 0) |
                                   (lossless ? FLAG_LOSSLESS : 0) | (pid ? FLAG_PREDICTOR : 0));
    /* the bit-packed frame: level byte, scale byte, indices per section */
    size_t worst = 18 + 4 + 1 + (hmac_key ? HMAC_LEN : 0) + (ref ? 10 + 513 : 0) + (pid ? PREDICTOR_ID_BYTES : 0);
    for (int i = 0; i < n_sec; i++) worst += sec[i].level ? 2 + ((size_t)sec[i].n_idx * sec[i].bits + 7) / 8 : 1 + 10 + 513 + (sec[i].zi ? 16 : 0);
    if (worst > cap) return -1;
    size_t n = header(out, auth, bed, seq, t_start_ms, model, sec, n_sec);
    int any_coded = 0;
    for (int i = 0; i < n_sec; i++) {
        out[n++] = (uint8_t)(sec[i].level | (packed && i == ecg ? pred_code << 3 : 0));
        if (!sec[i].level) {
            n += raw_section(out + n, sec[i].raw, sec[i].gain, sec[i].zi, lossless);
            continue;
        }
        out[n++] = sec[i].scale;
        n += pack(out + n, sec[i].idx, sec[i].n_idx, sec[i].bits);
        any_coded |= sec[i].tables != 0;
    }
    if (pred_code >= 0 && !packed) out[n++] = (uint8_t)pred_code;
    if (ref) n += raw_section(out + n, ref, 0.001f, 0, lossless);
    if (pid) memcpy(out + n, pid, PREDICTOR_ID_BYTES), n += PREDICTOR_ID_BYTES;
    const size_t plain = n + 4;
    if (!any_coded) return finish(out, cap, n, hmac_key, key_len);
    /* the coded frame: level bytes in place, then one arithmetic-coded stream of each coded
       section's scale code and indices (stage by stage, each with its row); it is sent only when
       it comes out shorter, so it has at most plain - 1 bytes and is built behind the plain one */
    uint8_t *c = out + plain;
    if (cap < 2 * plain) return finish(out, cap, n, hmac_key, key_len);
    size_t m = header(c, auth | FLAG_CODED, bed, seq, t_start_ms, model, sec, n_sec);
    for (int i = 0; i < n_sec; i++) {
        c[m++] = (uint8_t)(sec[i].level | (packed && i == ecg ? pred_code << 3 : 0));
        if (!sec[i].level) {
            m += raw_section(c + m, sec[i].raw, sec[i].gain, sec[i].zi, lossless);
        } else if (!sec[i].tables) {
            c[m++] = sec[i].scale;
            m += pack(c + m, sec[i].idx, sec[i].n_idx, sec[i].bits);
        }
    }
    if (pred_code >= 0 && !packed) c[m++] = (uint8_t)pred_code;
    if (ref) m += raw_section(c + m, ref, 0.001f, 0, lossless);
    if (pid) memcpy(c + m, pid, PREDICTOR_ID_BYTES), m += PREDICTOR_ID_BYTES;
    ws_arith a;
    const size_t room = plain > m + 4 ? plain - (m + 4) : 0; /* bytes the stream may take to win */
    if (!room) return finish(out, cap, n, hmac_key, key_len);
    ws_arith_init(&a, c + m, room);
    for (int i = 0; i < n_sec; i++) {
        const ws_section_tables *t = sec[i].tables;
        if (!t) continue;
        ws_arith_put(&a, t->scale, 256, sec[i].scale);
        for (int j = 0, q = 0; j < t->n_stages; q += t->positions[j], j++)
            for (int p = 0; p < t->positions[j]; p++)
                ws_arith_put(&a, t->rows[j], t->k, sec[i].idx[q + p]);
    }
    size_t bits = ws_arith_finish(&a);
    if (!bits) return finish(out, cap, n, hmac_key, key_len); /* the stream did not fit: the plain frame is shorter */
    m += (bits + 7) / 8;
    if (m + 4 >= plain) return finish(out, cap, n, hmac_key, key_len);
    memmove(out, c, m);
    return finish(out, cap, m, hmac_key, key_len);
}

int ws_section_tables_for(const void *mp, int level, int codec_stages, ws_section_tables *t) {
    const ws_modality *m = (const ws_modality *)mp;
    if (level > codec_stages) { /* a Dynamic-Deep chain level: its own single-stage table */
        const int i = level - codec_stages - 1;
        if (i >= m->n_chain || !m->chain[i].wire_k) return -1;
        const ws_chain_layer *l = &m->chain[i];
        t->scale = l->wire_scale;
        t->n_stages = 1;
        t->k = l->wire_k;
        t->positions[0] = l->wire_positions;
        t->rows[0] = l->wire_row;
        return 0;
    }
    const int n = codec_stages - level + 1;
    if (!m->wire_stages || level < 1 || n < 1 || n > m->wire_stages || n > WS_MAX_SECTION_STAGES) return -1;
    t->scale = m->wire_scale;
    t->n_stages = n;
    t->k = m->wire_k;
    for (int j = 0; j < n; j++) {
        t->positions[j] = m->wire_positions[j];
        t->rows[j] = m->wire_rows[j];
    }
    return 0;
}
