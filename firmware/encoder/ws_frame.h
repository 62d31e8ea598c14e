/* A device's wire frame, format v2 (`stream/wire.py`), in C: the header, one section per
 * modality at a codec level whose side information is the one-byte scale code (`scale8`), and
 * the sections either bit-packed or — wire flag bit 6 — entropy-coded with the model's static
 * u8 tables (`stream/vqcode.py`, the coder of ws_arith.h), whichever frame is shorter (the
 * simulated device's rule); then the CRC-32 (zlib's) over every byte before it.
 *
 * What a device sends: a codec level per modality (or the ECG raw, int16 not lossless-coded), with
 * or without its predicted task error, an audit reference and its predictor's id
 * (`ws_frame_v2_ex`), the default geometry (128 Hz, 256 samples); with a device key (``hmac_key``,
 * NULL for none) the frame ends with the 16-byte HMAC-SHA256 tag of every byte before it (wire
 * flag bit 0).
 */
#ifndef WS_FRAME_H
#define WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "ws_encoder.h" /* ws_crc32 */

#define WS_MAX_SECTION_STAGES 4

/* The coding tables of one (modality, level) section: the scale code's row (256 symbols) and,
 * per stage of the level, its positions and its single row of k u8 frequencies. */
typedef struct {
    const uint8_t *scale; /* [256] */
    int n_stages;
    int positions[WS_MAX_SECTION_STAGES];
    int k;
    const uint8_t *rows[WS_MAX_SECTION_STAGES]; /* [k] each */
} ws_section_tables;

typedef struct {
    int modality;       /* 0 ECG, 1 EEG */
    int level;          /* a codec level (1..255), or 0: the raw level (``raw``) */
    uint8_t scale;      /* the window's scale code */
    const uint16_t *idx; /* n_idx indices, stage-major */
    int n_idx;
    int bits;                       /* bits per index bit-packed: ceil(log2 codebook size) */
    const ws_section_tables *tables; /* NULL: this section is never coded */
    const int16_t *raw;              /* level 0: the window's 256 samples (int16) at ``gain`` */
    float gain;
    const float *zi; /* level 0 only, or NULL: the front end's state before the window (z0, z1 of
                        each of its two sections), sent before the samples (v2 ``mods`` bit 4 + m):
                        a level-picking device's raw window after a codec-level one */
} ws_section;

/* The tables of a base codec level's section of modality ``m`` (a `ws_modality *`) (level L sends stages 1 .. S-L+1
 * of level 1's; a level above ``codec_stages`` is a Dynamic-Deep chain level with its own table):
 * 0 and ``t`` filled, or -1 when the blob has none for it. */
int ws_section_tables_for(const void *m, int level, int codec_stages, ws_section_tables *t);

/* The frame of ``n_sec`` sections (ascending modality), signed with ``hmac_key`` when given -> its
 * length in ``out``, or a negative
 * code: -1 the buffer is too small, -2 bad arguments. The coded form is built behind the
 * bit-packed one, so ``cap`` needs twice the bit-packed frame's bytes for it to be tried (with
 * less the frame goes bit-packed). */
int ws_frame_v2(uint8_t *out, size_t cap, uint32_t bed, uint32_t seq, uint64_t t_start_ms, uint8_t model,
                const ws_section *sec, int n_sec, const uint8_t *hmac_key, size_t key_len);

/* `stream.wire.in_burst`: whether window ``seq`` of bed ``bed`` is one of an audit burst's (the
 * AUDIT_WINDOWS = 5 windows of every ``every`` carrying the reference; 0: never). */
int ws_in_burst(uint32_t seq, uint32_t bed, uint32_t every);

/* What a frame may carry beyond its sections (`ws_frame_v2_ex`). */
typedef struct {
    int pred_code;        /* the predicted task error's wire code (0..254, `stream.wire.pred_code`), -1: none */
    int lossless;         /* wire flag bit 3: raw sections (and the reference) lossless-coded (ws_lossless.h) */
    const int16_t *ref;   /* an audit burst's reference: the ECG as the encoder saw it (256 int16 at 1 µV), or NULL */
    const uint8_t *predictor_id; /* 6 bytes, the error predictor's id (wire flag bit 7, after the
                                    reference; only with a predicted error), or NULL */
} ws_frame_extra;

/* The same with a predicted task error — in the ECG level byte (flag bit 5) when the ECG level is
 * below 8 and the code below 32, else a byte after the sections (flag bit 1) — lossless-coded raw
 * sections, an audit reference (flag bit 2, after the predicted error) and the predictor's id
 * (flag bit 7, after the reference); ``ex`` NULL: none. */
int ws_frame_v2_ex(uint8_t *out, size_t cap, uint32_t bed, uint32_t seq, uint64_t t_start_ms, uint8_t model,
                   const ws_section *sec, int n_sec, const ws_frame_extra *ex, const uint8_t *hmac_key, size_t key_len);

#endif
