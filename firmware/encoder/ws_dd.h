/* The Dynamic-Deep edge (`wardmodels/dd_edge.py`, `wardmodels/predictor.py`) in C: a device that
 * picks its ECG level per window.
 *
 * Per window the device (1) runs the integer encoder and both base stages and the level chain on
 * its normalised ECG, which gives the indices of every level 1..5 and the distortion features
 * (`dd_edge.analyse_int`, `_assemble`: per level the log10 mean and worst relative quantisation
 * error, and the scale code / 16), averaged with the previous four windows' (`with_history`);
 * (2) runs the pipeline's streaming QRS detector (`processors.qrs.ecg_peaks_stream`) on its
 * band-passed ECG for the task features (`dd_edge.TaskStream`); (3) predicts log1p of the task
 * error of every level with the predictor's MLP and sends the highest level whose prediction
 * plus the calibrated slack is under log1p(bound) (`Predictor.choose`), raw when none is.
 *
 * Every step is integer arithmetic or float steps in the Python's order (numpy's pairwise sums,
 * scipy's lfilter recursion; the sums the Python once left to BLAS — the detector's moving
 * average and fiducial centroid, the MLP's dot products — it now sums in a fixed order too), so
 * the features, the levels, the predicted errors and the frames are the Python's bit for bit
 * (the tests compare them; log10, log and expm1 come from each side's libm and have agreed so far).
 */
#ifndef WS_DD_H
#define WS_DD_H

#include <stdint.h>

#include "ws_encoder.h"

#define WS_DD_LEVELS 5
#define WS_DD_FEATURES (2 * WS_DD_LEVELS + 1) /* per window: mean and worst per level, scale code */
#define WS_DD_HISTORY 4
#define WS_TASK_FEATURES 7
#define WS_QRS_HISTORY 320 /* 2.5 s at 128 Hz */
#define WS_QRS_MAX_BEATS 64 /* the last 10 s of beats (at most 300 bpm: 50) */

/* `processors.qrs.QrsState` */
typedef struct {
    int64_t n_seen, decided_until, last_beat;
    int32_t hist_len, n_rr, initialised;
    float history[WS_QRS_HISTORY];
    double spk, npk, last_slope;
    int32_t rr[8];
} ws_qrs;

/* One device's Dynamic-Deep state (its ECG filter is the caller's). */
typedef struct {
    ws_qrs qrs;
    int64_t beats[WS_QRS_MAX_BEATS]; /* `TaskStream.beats`: the last 10 s */
    int32_t n_beats, n_hist;
    float hist[WS_DD_HISTORY][WS_DD_FEATURES]; /* the previous windows' features, oldest first */
} ws_dd_state;

/* What one window's analysis gives: the indices of every level (level L's at idx[L - 1], n_idx[L - 1]
 * of them, stage-major as the wire sends them) and the predictor's input. */
typedef struct {
    uint16_t idx[WS_DD_LEVELS][WS_MAX_STAGES * 32];
    int32_t n_idx[WS_DD_LEVELS];
    int32_t bits[WS_DD_LEVELS];              /* bits per index bit-packed */
    float features[2 * WS_DD_FEATURES + WS_TASK_FEATURES];
    float pred[WS_DD_LEVELS];                /* predicted log1p(task error) per level */
} ws_dd_window;

/* Working memory of the analysis beside the encoder's scratch (WS_SCRATCH_BYTES), reused every
 * window: the projection z and its zero-margined rows, the chain's rows, and the QRS detector's
 * buffers over its 2.5 s of history and the new window. No state lives here. */
#define WS_DD_MAX_CHAIN_CH 64
#define WS_QRS_MAX (WS_QRS_HISTORY + WS_WINDOW)
#define WS_QRS_PADLEN 21
typedef struct {
    int16_t z[WS_MAX_CHANNELS * 32];
    int16_t zp[WS_MAX_CHANNELS * (32 + 2 * WS_PAD)];
    int16_t chain[2][WS_DD_MAX_CHAIN_CH * (16 + 2 * WS_PAD)];
    float x[WS_QRS_MAX], xc[WS_QRS_MAX];
    double filt[WS_QRS_MAX], slope[WS_QRS_MAX], energy[WS_QRS_MAX], mwi[WS_QRS_MAX];
    double ext[WS_QRS_MAX + 2 * WS_QRS_PADLEN], ext_y[WS_QRS_MAX + 2 * WS_QRS_PADLEN];
    int32_t peaks[WS_QRS_MAX / 2 + 1];
} ws_dd_work;

void ws_dd_reset(ws_dd_state *st);

/* One ECG window: ``y`` band-passed (ws_filter), ``x`` normalised with scale ``code``
 * (ws_normalise) -> the indices of every level, the predictor's features and its predictions.
 * 0, or a negative code (-1 no chain or no predictor in the blob, -2 the encoder failed). */
int ws_dd_analyse(const ws_encoder *enc, const ws_modality *ecg, ws_dd_state *st, const float *y, const float *x,
                  uint8_t code, ws_dd_window *w, void *scratch, ws_dd_work *work);

/* ws_dd_analyse in its three steps (timed apart by the M7 bench): every level's indices and the
 * distortion features with their history; the task features (the QRS detector); the predictions. */
int ws_dd_levels(const ws_modality *ecg, ws_dd_state *st, const float *x, uint8_t code, ws_dd_window *w,
                 void *scratch, ws_dd_work *work);
int ws_dd_task(const ws_encoder *enc, ws_dd_state *st, const float *y, ws_dd_window *w, ws_dd_work *work);
void ws_dd_predict(const ws_encoder *enc, ws_dd_window *w);

/* The slack the predictor was calibrated with for ``bound`` (that of the largest grid bound <= it;
 * infinity below the grid: no VQ level). */
double ws_dd_slack(const ws_predictor *p, double bound);

/* The level to send: the highest up to ``max_level`` (a fidelity hold; -1: none) whose prediction +
 * slack + slack_offset is under log1p(bound), 0 (raw) if none; ``fixed_level`` >= 0 sends that
 * level instead (capped at ``max_level``). ``*pred_code``: the wire code of the predicted task
 * error of the level sent (0 for raw). */
int ws_dd_choose(const ws_predictor *p, const ws_dd_window *w, double bound, double slack_offset, int fixed_level,
                 int max_level, int *pred_code);

/* `wardmodels.wire_codec.raw_channel` of an ECG window: int16 at 1 µV per step (rint, clamped;
 * NaN as 0), from float64 (the raw samples) or float32 (the band-passed window an audit sends). */
void ws_raw_ecg(const double *x, int16_t *q);
void ws_raw_ecg_f32(const float *x, int16_t *q);

#endif
