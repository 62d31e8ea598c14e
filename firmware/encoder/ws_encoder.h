/* wardstream edge encoder: the integer INT8 encoder of `wardmodels/int8.py`, in C.
 *
 * One modality's window (256 normalised samples, float32) -> its VQ indices, with the integer
 * arithmetic that module's docstring specifies (int8 per-channel weights, int16 activations,
 * int64 bias, fixed-point requantisation with LeakyReLU folded into the multiplier, integer
 * residual nearest-neighbour search). It must give the very indices (and the very projection
 * z) of the Python reference; `tests/firmware/test_encoder_c.py` checks that bit for bit.
 *
 * Parameters come from a blob (`wardstream export firmware`, format in `wardmodels/firmware.py`)
 * that `ws_load` reads in place: on a device it sits in flash as a const array, nothing is
 * copied. Plain C99 with <stdint.h>; no allocation, no floating point beyond the input's
 * quantisation; the caller gives the scratch memory (`WS_SCRATCH_BYTES`).
 */
#ifndef WS_ENCODER_H
#define WS_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#define WS_MAX_CONVS 10
#define WS_MAX_SECTIONS 4
#define WS_SCALE_CODES 256
#define WS_MAX_ADDS 3
#define WS_MAX_STAGES 4
#define WS_WINDOW 256
#define WS_MAX_CHANNELS 128
#define WS_PAD 2 /* zero margin of every activation row: kernels of up to 5 taps */
/* three int16 activation buffers of WS_MAX_CHANNELS rows of WS_WINDOW/2 samples and their margins
   (the stride-2 first layer's output is the largest; the input row fits too), then the search's
   int32 residual and its codeword norms (int64, up to WS_MAX_STAGES x WS_MAX_K) */
#define WS_MAX_K 256
#define WS_ACT_BUF (WS_MAX_CHANNELS * (WS_WINDOW / 2 + 2 * WS_PAD))
#define WS_SCRATCH_BYTES (3 * WS_ACT_BUF * 2 + 512 * 4 + WS_MAX_STAGES * WS_MAX_K * 8)

typedef struct {
    int32_t out_ch, in_ch, k, stride;
    const int8_t *w;      /* [out_ch][in_ch][k] */
    const int64_t *b;     /* [out_ch] */
    const int32_t *m_pos; /* [out_ch], in [2^30, 2^31) */
    const int8_t *shift;  /* [out_ch] */
    int dot32;            /* the dot products provably fit int32 (checked at load) */
} ws_conv;

typedef struct {
    int64_t ma, mb;
    int32_t shift;
} ws_add;

/* A Dynamic-Deep level chain layer (`wardmodels.dd_edge.IntChain`, blob version 4): a 3-tap
 * stride-2 convolution (no activation folded: the next layer takes lrelu of its input), its
 * level's int8 codebook and that level's wire table (one single-row stage, or none). */
#define WS_MAX_CHAIN 3
typedef struct {
    ws_conv conv;
    int32_t p_out, q, K;
    const int8_t *cb; /* [K][conv.out_ch] */
    int32_t wire_positions, wire_k; /* 0: the level travels bit-packed */
    const uint8_t *wire_scale, *wire_row;
} ws_chain_layer;

typedef struct {
    char name[8];
    int32_t act_bits, p, n_conv, n_add, n_cb, K, D;
    int search32; /* the search's dot products provably fit int32 (checked at load) */
    float inv_sx;
    ws_conv conv[WS_MAX_CONVS];
    ws_add add[WS_MAX_ADDS];
    int32_t cb_exp[WS_MAX_STAGES];
    const int8_t *cb[WS_MAX_STAGES]; /* [K][D] */
    /* front end */
    int32_t n_sections, steps_per_octave;
    double log2_min;
    double input_limit; /* the input is clipped to +-input_limit before the filter (blob version 3: none) */
    const double *sos; /* [n_sections][6]: b0 b1 b2 a0 a1 a2 */
    const double *zi;  /* [n_sections][2]: the state at rest for a unit input */
    const float *scale; /* [WS_SCALE_CODES] */
    /* the wire's coding tables of this modality's level-1 section (0 stages: none) */
    int32_t wire_stages, wire_k;
    const uint8_t *wire_scale;                 /* [WS_SCALE_CODES] u8 frequencies */
    int32_t wire_positions[WS_MAX_STAGES];
    const uint8_t *wire_rows[WS_MAX_STAGES];   /* [wire_k] u8 frequencies each */
    /* the Dynamic-Deep level chain (levels n_cb + 1 ...), blob version 4; n_chain 0: none */
    int32_t n_chain, chain_p_in;
    ws_chain_layer chain[WS_MAX_CHAIN];
} ws_modality;

/* The edge error predictor (`wardmodels.predictor.Predictor`) and the constants of the device's
 * QRS detector, blob version 4 (from version 5 with the predictor's id); n_in 0: none. */
#define WS_MAX_PRED_IN 64
#define WS_MAX_HIDDEN 64
#define WS_PRED_LEVELS 5
typedef struct {
    int32_t n_in, hidden, n_levels, n_bounds;
    const float *mu, *sd, *w1, *b1, *w2, *b2, *offsets; /* w1 [hidden][n_in], w2 [n_levels][hidden] */
    const double *bounds, *lams;                         /* the calibrated slack per grid bound */
    double deployed_bound;
    const double *qrs_b, *qrs_a, *qrs_zi;                /* 5, 5, 4: the detector's 5-18 Hz band-pass */
    const uint8_t *id; /* 6 bytes, the hash in its file name (wire flag bit 7), or NULL (blob version 4) */
} ws_predictor;

typedef struct {
    int32_t n_mod, version;
    ws_modality mod[2];
    ws_predictor pred;
} ws_encoder;

/* The front end of one modality: its causal band-pass (second-order sections, direct form II
 * transposed, as scipy's sosfilt computes it) and the one-byte scale code. */
typedef struct {
    double zi[WS_MAX_SECTIONS][2];
    int started; /* 0: the next sample starts the filter at rest on itself */
} ws_filter_state;

/* zlib's CRC-32 (the wire frames' and, from version 4, the blob's own trailer) */
uint32_t ws_crc32(const uint8_t *p, size_t n);

/* Parse a blob in place; 0 on success, a negative code on a malformed blob (the message, if
 * ``why`` is given, says which part). The blob must outlive the encoder and be 8-byte aligned. */
int ws_load(const uint8_t *blob, size_t n, ws_encoder *enc, const char **why);

const ws_modality *ws_modality_named(const ws_encoder *enc, const char *name);

/* raw[n] (physical units: ECG mV, EEG µV) -> y[n], the band-passed signal as float32, carrying
 * the filter state across calls (a device's stream). NaN counts as 0 (numpy's nan_to_num), and
 * every sample is clipped to the modality's input range (infinities included) first. */
void ws_filter(const ws_modality *m, ws_filter_state *st, const double *raw, float *y, int n);

/* A band-passed window y[WS_WINDOW] -> its scale code (the window's standard deviation on a
 * 1/steps_per_octave grid above 2^log2_min) and x[WS_WINDOW] = y / scale[code], what ws_encode takes. */
uint8_t ws_normalise(const ws_modality *m, const float *y, float *x);

/* x[WS_WINDOW] -> idx[stages][positions] (positions = 32 for this graph); optionally z[D][positions]
 * (the projection, int16 in units of 2^-p). ``scratch`` holds WS_SCRATCH_BYTES, 4-byte aligned.
 * Returns the number of positions, or a negative code. */
int ws_encode(const ws_modality *m, const float *x, int stages, uint16_t *idx, int16_t *z, void *scratch);

/* One convolution without activation, clamped to int16 (the Dynamic-Deep chain's layers): ``in``
 * in_ch rows of in_len int16, ``out`` out_ch rows of out_len, each row with WS_PAD zero samples
 * either side (row stride len + 2 WS_PAD; the pointers point at the first real sample; the
 * output's margins are written zero). */
/* numpy's pairwise summation (the order its sums and means of contiguous arrays take), float64 and float32 */
double ws_pairwise_sum(const double *a, int n);
float ws_pairwise_sum_f32(const float *a, int n);

void ws_conv_int16(const ws_conv *cv, const int16_t *in, int in_len, int16_t *out, int out_len);

#endif
