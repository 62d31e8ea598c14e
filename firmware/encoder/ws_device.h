/* A whole device in C: one call per 2-s window, raw ECG (and EEG) in, the wire frame out — the
 * front end, the encoder, the Dynamic-Deep edge when configured (ws_dd.h), the audit bursts and
 * the v2 frame (ws_frame.h). What `device_sim.ward.Device` does with the integer encoder
 * (`wardmodels.wire_codec.CodecEncoder` / `DynamicEncoder`), byte for byte; the firmware's main
 * loop, the host harnesses and the simulator's firmware devices (`device_sim/firmware.py`) all
 * run this. No allocation: the caller gives the device, its scratch and the analysis' working
 * memory (ws_dd_work), which several devices may share when they step one at a time. */
#ifndef WS_DEVICE_H
#define WS_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "ws_dd.h"
#include "ws_encoder.h"
#include "ws_frame.h"

#define WS_DEVICE_STEPS 7 /* ECG front end, ECG encode (+ every level), task features, predictor, EEG front end, EEG encode, frame */

typedef struct {
    uint32_t bed, seq0;    /* the bed id and the sequence number of the first window */
    uint64_t t0_ms;        /* the device clock at sequence number 0, whole ms */
    uint8_t model;         /* the wire model id */
    int dd;                /* -2: a fixed-level device (``level`` for both modalities, no predicted error);
                              -1: the ECG level picked per window under ``bound``; 0..5: that ECG level
                              sent with its predicted task error */
    int level, eeg_level;  /* a fixed-level device's level; a Dynamic-Deep device's EEG level */
    int lossless;          /* raw sections (and audit references) lossless-coded */
    int coded;             /* sections entropy-coded when the frame comes out shorter (tables permitting) */
    uint32_t audit_every;  /* windows between audit bursts (0: none) */
    double bound;          /* 0: the blob's deployed bound */
    const uint8_t *key;    /* the device key that signs every frame (NULL: unsigned) */
    size_t key_len;
} ws_device_config;

typedef struct {
    const ws_encoder *enc;
    const ws_modality *ecg, *eeg;
    ws_device_config cfg;
    uint32_t seq;
    double bound, slack_offset; /* set at any time (ws_control_apply); they apply from the next window */
    int max_level;              /* likewise: a fidelity hold's highest ECG level, -1: no hold */
    uint32_t control_counter;   /* of the last control frame applied (ws_control.h) */
    int control_seen;
    ws_filter_state filt[2];
    ws_dd_state dd;
    ws_dd_window win;
    int last_level, last_pred_code; /* of the last frame: the ECG level and its predicted-error code (-1: none) */
    uint8_t last_code[2];           /* and the scale codes of its ECG and EEG windows */
    uint16_t idx[2][WS_MAX_STAGES * 32]; /* the fixed-level ECG's and the EEG's indices (a Dynamic-Deep ECG's: win) */
    int16_t raw[WS_WINDOW], ref[WS_WINDOW];
    float y[2][WS_WINDOW], x[WS_WINDOW]; /* the band-passed windows, the normalised one */
} ws_device;

/* 0, or -1 with ``why`` when the blob cannot run this configuration. */
int ws_device_init(ws_device *d, const ws_encoder *enc, const ws_device_config *cfg, const char **why);

/* One window: ``ecg`` (mV) and ``eeg`` (µV, NULL: an ECG-only device) of WS_WINDOW raw samples ->
 * the frame's length in ``out`` (or a negative code); ``clock`` (may be NULL) times each of the
 * WS_DEVICE_STEPS steps into ``ticks``. ``scratch``: WS_SCRATCH_BYTES, 8-byte aligned. */
int ws_device_step(ws_device *d, const double *ecg, const double *eeg, void *scratch, ws_dd_work *work, uint8_t *out,
                   size_t cap, uint64_t (*clock)(void), uint32_t *ticks);

#endif
