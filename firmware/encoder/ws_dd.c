/* The Dynamic-Deep edge in C (see ws_dd.h). Each step names the Python it implements. */
#include "ws_dd.h"

#include <math.h>
#include <string.h>

#define FS 128
#define SLOPE_Q16 6554

void ws_dd_reset(ws_dd_state *st) { memset(st, 0, sizeof(*st)), st->qrs.last_beat = -1; }

/* ------------------------------------------------------------------ distortion features */

/* `dd_edge._log_rel`: rel = (err + 1) / (norm + 1) per position; log10 of its mean (numpy's
 * pairwise order) and of its largest, each + 1e-6 */
static void log_rel(const int64_t *err, const int64_t *norm, int n, float *mean, float *worst) {
    double rel[32], mx = 0.0;
    for (int t = 0; t < n; t++) {
        rel[t] = ((double)err[t] + 1.0) / ((double)norm[t] + 1.0);
        if (t == 0 || rel[t] > mx) mx = rel[t];
    }
    *mean = (float)log10(ws_pairwise_sum(rel, n) / n + 1e-6);
    *worst = (float)log10(mx + 1e-6);
}

/* `lrelu_int`: v if v >= 0 else (v * 6554 + 32768) >> 16 */
static inline int16_t lrelu(int16_t v) { return v >= 0 ? v : (int16_t)(((int32_t)v * SLOPE_Q16 + 32768) >> 16); }

/* `IntChain.search`: nearest codeword of e << (p_out - q) to each position's column (ties: the
 * smallest k) -> indices, squared errors, squared norms. As |e|^2 - 2 y.e, which orders k the
 * same: |e|^2 = (sum e^2) << 2 sh and y.e = (sum y e) << sh, the sums of int16 x int8 products
 * over at most WS_DD_MAX_CHAIN_CH dimensions in int32 (|sum| < 64 * 32768 * 128 = 2^28). */
static void chain_search(const ws_chain_layer *l, const int16_t *y, int stride, int T, uint16_t *idx, int64_t *err,
                         int64_t *norm) {
    const int W = l->conv.out_ch, sh = l->p_out - l->q;
    for (int t = 0; t < T; t++) {
        int32_t col[WS_DD_MAX_CHAIN_CH];
        int64_t best = 0, n2 = 0;
        int bk = 0;
        for (int d = 0; d < W; d++) col[d] = y[d * stride + t], n2 += (int64_t)col[d] * col[d];
        for (int k = 0; k < l->K; k++) {
            const int8_t *e = l->cb + (size_t)k * W;
            int32_t ee = 0, dot = 0;
            for (int d = 0; d < W; d++) ee += e[d] * e[d], dot += col[d] * e[d];
            const int64_t dist = ((int64_t)ee << (2 * sh)) - (int64_t)dot * ((int64_t)2 << sh);
            if (k == 0 || dist < best) best = dist, bk = k;
        }
        int64_t e2 = 0;
        for (int d = 0; d < W; d++) {
            const int64_t r = col[d] - (int64_t)l->cb[(size_t)bk * W + d] * ((int64_t)1 << sh);
            e2 += r * r;
        }
        idx[t] = (uint16_t)bk, err[t] = e2, norm[t] = n2;
    }
}

/* `dd_edge.analyse_int` + `_assemble`: every level's indices and the window's distortion features */
static int analyse(const ws_modality *m, const float *x, uint8_t code, ws_dd_window *w, float *f, void *scratch,
                   ws_dd_work *work) {
    const int D = m->D;
    int16_t *z = work->z; /* D x 32, compact */
    int16_t *zp = work->zp + WS_PAD, *ya = work->chain[0] + WS_PAD, *yb = work->chain[1] + WS_PAD;
    if (m->n_cb != 2 || m->n_chain != WS_DD_LEVELS - 2 || D > WS_MAX_CHANNELS) return -1;
    const int T = ws_encode(m, x, 2, w->idx[0], z, scratch);
    if (T != 32) return -2;
    /* level 1: both stages (stage-major), level 2: the first */
    memcpy(w->idx[1], w->idx[0], 32 * sizeof(uint16_t));
    w->n_idx[0] = 64, w->n_idx[1] = 32;
    int bits = 0;
    while ((1 << bits) < m->K) bits++;
    w->bits[0] = w->bits[1] = bits;
    /* the base stages' squared residuals over |z|^2, per position */
    int64_t norm0[32], err[2][32];
    for (int t = 0; t < T; t++) {
        int64_t n2 = 0, e2[2] = {0, 0};
        for (int d = 0; d < D; d++) {
            int64_t r = z[d * T + t];
            n2 += r * r;
            for (int j = 0; j < 2; j++) {
                r -= (int64_t)m->cb[j][(size_t)w->idx[0][j * T + t] * D + d] * ((int64_t)1 << (m->p - m->cb_exp[j]));
                e2[j] += r * r;
            }
        }
        norm0[t] = n2, err[0][t] = e2[0], err[1][t] = e2[1];
    }
    float mean[WS_DD_LEVELS], worst[WS_DD_LEVELS];
    log_rel(err[1], norm0, T, &mean[0], &worst[0]);
    log_rel(err[0], norm0, T, &mean[1], &worst[1]);
    /* the chain: x_0 = z, x_i = lrelu(y_{i-1}); y_i = requant(conv_s2(x_i)), int16 */
    const int zs = 32 + 2 * WS_PAD;
    for (int d = 0; d < D; d++) {
        memcpy(zp + (size_t)d * zs, z + (size_t)d * T, T * sizeof(int16_t));
        for (int u = 1; u <= WS_PAD; u++) zp[(size_t)d * zs - u] = zp[(size_t)d * zs + T - 1 + u] = 0;
    }
    const int16_t *in = zp;
    int len = T;
    for (int i = 0; i < m->n_chain; i++) {
        const ws_chain_layer *l = &m->chain[i];
        const int out_len = (len + 2 - 3) / 2 + 1, os = out_len + 2 * WS_PAD;
        if (l->conv.out_ch > WS_DD_MAX_CHAIN_CH || os > 16 + 2 * WS_PAD) return -1;
        int16_t *y = (i & 1) ? yb : ya;
        ws_conv_int16(&l->conv, in, len, y, out_len);
        int64_t e2[32], n2[32];
        chain_search(l, y, os, out_len, w->idx[2 + i], e2, n2);
        log_rel(e2, n2, out_len, &mean[2 + i], &worst[2 + i]);
        w->n_idx[2 + i] = out_len;
        bits = 0;
        while ((1 << bits) < l->K) bits++;
        w->bits[2 + i] = bits;
        for (int d = 0; d < l->conv.out_ch; d++)
            for (int t = 0; t < out_len; t++) y[d * os + t] = lrelu(y[d * os + t]);
        in = y, len = out_len;
    }
    for (int L = 0; L < WS_DD_LEVELS; L++) f[L] = mean[L], f[WS_DD_LEVELS + L] = worst[L];
    f[2 * WS_DD_LEVELS] = (float)((double)code / 16.0);
    return 0;
}

/* `dd_edge.with_history`: the window's features, then the mean of the previous (up to four)
 * windows' — summed in order in float64, as the cumulative sum gives it — or its own when none */
static void with_history(ws_dd_state *st, const float *f, float *out) {
    for (int j = 0; j < WS_DD_FEATURES; j++) {
        out[j] = f[j];
        if (!st->n_hist) {
            out[WS_DD_FEATURES + j] = f[j];
            continue;
        }
        double s = 0.0;
        for (int h = 0; h < st->n_hist; h++) s += st->hist[h][j];
        out[WS_DD_FEATURES + j] = (float)(s / st->n_hist);
    }
    if (st->n_hist == WS_DD_HISTORY) {
        memmove(st->hist[0], st->hist[1], sizeof(st->hist[0]) * (WS_DD_HISTORY - 1));
        st->n_hist--;
    }
    memcpy(st->hist[st->n_hist++], f, sizeof(st->hist[0]));
}

/* ------------------------------------------------------------------ the QRS detector */

#define QRS_MAX WS_QRS_MAX
#define QRS_PADLEN WS_QRS_PADLEN /* min(x.size - 1, 3 * 7) */
#define QRS_MWI 19           /* round(0.15 fs) */
#define QRS_DISTANCE 25      /* int(0.2 fs) */
#define QRS_REFRACTORY 25    /* int(0.2 fs) */
#define QRS_TWAVE 46         /* int(0.36 fs) */
#define QRS_LOOKAHEAD 38     /* int(0.3 fs) */
#define QRS_HALF 10          /* int(0.08 fs) */
#define QRS_MAX_PEAKS (QRS_MAX / 2 + 1)
#define QRS_MAX_TRACE QRS_MAX_PEAKS

/* scipy's lfilter (direct form II transposed, a[0] = 1) from the state zi * x[0] */
static void lfilter(const ws_predictor *p, const double *x, double *y, int n) {
    const double *b = p->qrs_b, *a = p->qrs_a;
    double z[4];
    for (int i = 0; i < 4; i++) z[i] = p->qrs_zi[i] * x[0];
    for (int k = 0; k < n; k++) {
        const double xn = x[k], yn = z[0] + b[0] * xn;
        for (int i = 0; i < 3; i++) z[i] = z[i + 1] + xn * b[i + 1] - yn * a[i + 1];
        z[3] = xn * b[4] - yn * a[4];
        y[k] = yn;
    }
}

/* `processors.dsp.filtfilt_ba` of a float32 signal: odd extension (in float32), forward, backward */
static void filtfilt(const ws_predictor *p, const float *x, int n, double *out, ws_dd_work *work) {
    double *ext = work->ext, *y = work->ext_y;
    if (n < 2 || n > QRS_MAX) return; /* the detector feeds 256..QRS_MAX samples */
    const int pad = n - 1 < QRS_PADLEN ? n - 1 : QRS_PADLEN, N = n + 2 * pad;
    for (int i = 0; i < pad; i++) ext[i] = (float)(2.0f * x[0] - x[pad - i]);
    for (int i = 0; i < n; i++) ext[pad + i] = x[i];
    for (int i = 0; i < pad; i++) ext[pad + n + i] = (float)(2.0f * x[n - 1] - x[n - 2 - i]);
    lfilter(p, ext, y, N);
    for (int i = 0; i < N; i++) ext[i] = y[N - 1 - i];
    lfilter(p, ext, y, N);
    for (int i = 0; i < n; i++) out[i] = y[N - 1 - pad - i];
}

/* scipy's find_peaks(x, distance=QRS_DISTANCE): local maxima (a plateau's middle), then, highest
 * first, every lower peak closer than the distance removed */
static int find_peaks(const double *x, int n, int32_t *peaks) {
    int m = 0;
    for (int i = 1; i < n - 1; i++) {
        if (x[i - 1] < x[i]) {
            int ahead = i + 1;
            while (ahead < n - 1 && x[ahead] == x[i]) ahead++;
            if (x[ahead] < x[i]) {
                peaks[m++] = (i + ahead - 1) / 2;
                i = ahead;
            }
        }
    }
    /* priority order: by height, ties by position (numpy's argsort is not stable; ties of
       float64 energies do not occur in practice) */
    int order[QRS_MAX_PEAKS];
    uint8_t keep[QRS_MAX_PEAKS];
    for (int i = 0; i < m; i++) order[i] = i, keep[i] = 1;
    for (int i = 1; i < m; i++) { /* insertion sort, ascending height */
        int v = order[i], j = i - 1;
        while (j >= 0 && x[peaks[order[j]]] > x[peaks[v]]) order[j + 1] = order[j], j--;
        order[j + 1] = v;
    }
    for (int i = m - 1; i >= 0; i--) {
        const int j = order[i];
        if (!keep[j]) continue;
        for (int k = j - 1; k >= 0 && peaks[j] - peaks[k] < QRS_DISTANCE; k--) keep[k] = 0;
        for (int k = j + 1; k < m && peaks[k] - peaks[j] < QRS_DISTANCE; k++) keep[k] = 0;
    }
    int out = 0;
    for (int i = 0; i < m; i++)
        if (keep[i]) peaks[out++] = peaks[i];
    return out;
}

typedef struct {
    const float *x;
    const double *filt, *slope;
    int n;
} qrs_buf;

/* `locate`: the fiducial point (`fiducial_sample`: the largest |deflection| within 2 samples of the
 * energy centroid of the band-passed segment) and the largest |slope| within 80 ms of the peak */
static int locate(const qrs_buf *q, int p, double *sl) {
    const int lo = p - QRS_HALF > 0 ? p - QRS_HALF : 0, hi = p + QRS_HALF + 1 < q->n ? p + QRS_HALF + 1 : q->n;
    const int n = hi - lo;
    double e[2 * QRS_HALF + 1], cum = 0.0, mx = 0.0;
    for (int i = 0; i < n; i++) e[i] = q->filt[lo + i] * q->filt[lo + i];
    for (int i = 0; i < n; i++) cum += (double)i * e[i];
    for (int i = lo; i < hi; i++)
        if (i == lo || fabs(q->slope[i]) > mx) mx = fabs(q->slope[i]);
    *sl = mx;
    const double tot = ws_pairwise_sum(e, n);
    int k = n / 2;
    if (tot > 0) {
        const int c = (int)rint(cum / tot), a = c - 2 > 0 ? c - 2 : 0, b = c + 3 < n ? c + 3 : n;
        k = a;
        for (int i = a + 1; i < b; i++)
            if (fabs(q->filt[lo + i]) > fabs(q->filt[lo + k])) k = i;
    }
    return lo + k;
}

static double rr_mean(const ws_qrs *s) {
    int64_t sum = 0;
    for (int i = 0; i < s->n_rr; i++) sum += s->rr[i];
    return s->n_rr ? (double)sum / s->n_rr : 0.0;
}

/* `accept`: a beat at peak p, unless within the refractory period of the last one */
static void accept(ws_qrs *s, const qrs_buf *q, int64_t base, int p, double level, double weight, int64_t *beats,
                   int *n_beats) {
    double sl;
    const int64_t absk = base + locate(q, p, &sl);
    if (s->last_beat >= 0) {
        const int64_t rr = absk - s->last_beat;
        if (rr < QRS_REFRACTORY) return;
        if (s->n_rr == 8) memmove(s->rr, s->rr + 1, 7 * sizeof(int32_t)), s->n_rr--;
        s->rr[s->n_rr++] = (int32_t)rr;
    }
    s->spk = weight * level + (1 - weight) * s->spk;
    s->last_beat = absk;
    s->last_slope = sl;
    if (*n_beats < WS_QRS_MAX_BEATS) beats[(*n_beats)++] = absk;
}

/* `processors.qrs.ecg_peaks_stream` on one window -> the beats it decided (absolute samples) and
 * the (feature level, threshold) of every candidate it decided */
static int qrs_step(const ws_predictor *pr, ws_qrs *s, const float *x_new, int64_t *beats, double *tr_level,
                    double *tr_thr, int *n_trace, ws_dd_work *work) {
    float *x = work->x, *xc = work->xc;
    double *filt = work->filt, *slope = work->slope, *energy = work->energy, *mwi = work->mwi;
    int32_t *peaks = work->peaks;
    int n_beats = 0;
    *n_trace = 0;
    const int n = s->hist_len + WS_WINDOW;
    memcpy(x, s->history, s->hist_len * sizeof(float));
    for (int i = 0; i < WS_WINDOW; i++) x[s->hist_len + i] = isfinite(x_new[i]) ? x_new[i] : 0.0f;
    const int64_t base = s->n_seen - s->hist_len, end = s->n_seen + WS_WINDOW;
    const int keep = n < WS_QRS_HISTORY ? n : WS_QRS_HISTORY;
    memcpy(s->history, x + n - keep, keep * sizeof(float));
    s->hist_len = keep;
    s->n_seen = end;
    /* xc = x - x.mean() (float32) */
    const float mean = ws_pairwise_sum_f32(x, n) / (float)n;
    for (int i = 0; i < n; i++) xc[i] = x[i] - mean;
    filtfilt(pr, xc, n, filt, work);
    for (int i = 1; i < n - 1; i++) slope[i] = (filt[i + 1] - filt[i - 1]) * 0.5;
    slope[0] = filt[1] - filt[0];
    slope[n - 1] = filt[n - 1] - filt[n - 2];
    for (int i = 0; i < n; i++) energy[i] = slope[i] * slope[i];
    /* the moving average over 0.15 s, centred (`moving_average`: summed from the earliest sample) */
    const double inv = 1.0 / QRS_MWI;
    for (int i = 0; i < n; i++) {
        double acc = 0.0;
        const int lo = i - QRS_MWI / 2 > 0 ? i - QRS_MWI / 2 : 0, hi = i + QRS_MWI / 2 < n - 1 ? i + QRS_MWI / 2 : n - 1;
        for (int j = lo; j <= hi; j++) acc += energy[j] * inv;
        mwi[i] = acc;
    }
    const int np_ = find_peaks(mwi, n, peaks);
    const int64_t limit = end - QRS_LOOKAHEAD;
    if (!s->initialised) {
        const int m = n < 2 * FS ? n : 2 * FS;
        double mx = mwi[0];
        for (int i = 1; i < m; i++)
            if (mwi[i] > mx) mx = mwi[i];
        s->spk = mx / 3.0;
        s->npk = ws_pairwise_sum(mwi, m) / m / 2.0;
        s->initialised = 1;
    }
    const qrs_buf q = {x, filt, slope, n};
    for (int i = 0; i < np_; i++) {
        const int p = peaks[i];
        const int64_t ap = base + p;
        if (ap < s->decided_until || ap > limit) continue;
        const double thr1 = s->npk + 0.25 * (s->spk - s->npk), level = mwi[p];
        tr_level[*n_trace] = level, tr_thr[*n_trace] = thr1, (*n_trace)++;
        /* search back for a missed beat when the gap is long */
        const double rrm = rr_mean(s);
        if (s->last_beat >= 0 && rrm > 0 && (double)(ap - s->last_beat) > 1.66 * rrm) {
            const int64_t lo_abs = s->last_beat + QRS_REFRACTORY, hi_abs = ap - QRS_REFRACTORY;
            int best = -1;
            for (int j = 0; j < np_; j++) {
                const int64_t a = base + peaks[j];
                if (lo_abs <= a && a <= hi_abs && a >= s->decided_until - 3 * FS && (best < 0 || mwi[peaks[j]] > mwi[best]))
                    best = peaks[j];
            }
            if (best >= 0 && mwi[best] > 0.5 * thr1) accept(s, &q, base, best, mwi[best], 0.25, beats, &n_beats);
        }
        if (level > thr1) {
            if (s->last_beat >= 0 && ap - s->last_beat < QRS_TWAVE) {
                double sl;
                locate(&q, p, &sl);
                if (sl < 0.5 * s->last_slope || ap - s->last_beat < QRS_REFRACTORY) {
                    s->npk = 0.125 * level + 0.875 * s->npk;
                    continue;
                }
            }
            accept(s, &q, base, p, level, 0.125, beats, &n_beats);
        } else {
            s->npk = 0.125 * level + 0.875 * s->npk;
        }
    }
    if (limit + 1 > s->decided_until) s->decided_until = limit + 1;
    if (s->last_beat >= 0 && end - s->last_beat > 3 * FS) s->spk *= 0.5;
    return n_beats;
}

/* np.median of n integers (float64) */
static double median(int64_t *v, int n) {
    for (int i = 1; i < n; i++) { /* insertion sort: at most 50 values */
        int64_t a = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > a) v[j + 1] = v[j], j--;
        v[j + 1] = a;
    }
    return n & 1 ? (double)v[n / 2] : ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2.0;
}

/* `dd_edge.TaskStream.step` on the band-passed window ``y`` */
static void task_step(const ws_predictor *pr, ws_dd_state *st, const float *y, float *f, ws_dd_work *work) {
    int64_t beats[WS_QRS_MAX_BEATS];
    double lv[QRS_MAX_TRACE], th[QRS_MAX_TRACE];
    int n_tr;
    const int nb = qrs_step(pr, &st->qrs, y, beats, lv, th, &n_tr, work);
    const int64_t now = st->qrs.n_seen;
    int m = 0;
    for (int i = 0; i < st->n_beats; i++)
        if (st->beats[i] > now - 10 * FS) st->beats[m++] = st->beats[i];
    for (int i = 0; i < nb; i++)
        if (beats[i] > now - 10 * FS && m < WS_QRS_MAX_BEATS) st->beats[m++] = beats[i];
    st->n_beats = m;
    memset(f, 0, WS_TASK_FEATURES * sizeof(float));
    f[0] = (float)log1p((double)nb);
    if (n_tr) {
        double mn = 0.0;
        int close = 0;
        for (int i = 0; i < n_tr; i++) {
            const double v = fabs(log((lv[i] > 1e-12 ? lv[i] : 1e-12) / (th[i] > 1e-12 ? th[i] : 1e-12)));
            if (i == 0 || v < mn) mn = v;
            close += v < log(2.0);
        }
        f[1] = (float)(mn < 3.0 ? mn : 3.0);
        f[2] = (float)close;
    } else {
        f[1] = 3.0f;
    }
    int64_t rr[WS_QRS_MAX_BEATS], drr[WS_QRS_MAX_BEATS];
    const int n_rr = m > 1 ? m - 1 : 0;
    for (int i = 0; i < n_rr; i++) rr[i] = st->beats[i + 1] - st->beats[i];
    for (int i = 0; i + 1 < n_rr; i++) drr[i] = rr[i + 1] - rr[i] < 0 ? rr[i] - rr[i + 1] : rr[i + 1] - rr[i];
    if (n_rr >= 3) {
        const double md = median(drr, n_rr - 1);
        int64_t tmp[WS_QRS_MAX_BEATS];
        memcpy(tmp, rr, n_rr * sizeof(int64_t));
        const double mr = median(tmp, n_rr);
        f[3] = (float)(md / (mr > 1.0 ? mr : 1.0));
    }
    if (n_rr >= 1) f[6] = (float)(60.0 * FS / median(rr, n_rr) / 100.0);
    f[4] = (float)log10((st->qrs.spk + 1e-9) / (st->qrs.npk + 1e-9));
    double d2[WS_WINDOW], x2[WS_WINDOW];
    for (int i = 0; i + 1 < WS_WINDOW; i++) {
        const double d = (double)y[i + 1] - (double)y[i];
        d2[i] = d * d;
    }
    for (int i = 0; i < WS_WINDOW; i++) x2[i] = (double)y[i] * (double)y[i];
    f[5] = (float)log10((ws_pairwise_sum(d2, WS_WINDOW - 1) + 1e-9) / (ws_pairwise_sum(x2, WS_WINDOW) + 1e-9));
}

/* ------------------------------------------------------------------ the predictor */

/* `Predictor.predict`: h = (f - mu) / sd (float32); relu(w1 h + b1), then w2 h + b2, each dot
 * product summed in float64 (exact products of float32 values) and rounded to float32 before
 * its bias is added in float32 */
static void predict(const ws_predictor *p, const float *f, float *out) {
    float h[WS_MAX_PRED_IN], g[WS_MAX_HIDDEN];
    for (int i = 0; i < p->n_in; i++) h[i] = (f[i] - p->mu[i]) / p->sd[i];
    for (int j = 0; j < p->hidden; j++) {
        double s = 0.0;
        for (int i = 0; i < p->n_in; i++) s += (double)h[i] * (double)p->w1[j * p->n_in + i];
        const float v = (float)s + p->b1[j];
        g[j] = v > 0.0f ? v : 0.0f;
    }
    for (int L = 0; L < p->n_levels; L++) {
        double s = 0.0;
        for (int j = 0; j < p->hidden; j++) s += (double)g[j] * (double)p->w2[L * p->hidden + j];
        out[L] = (float)s + p->b2[L];
    }
}

int ws_dd_levels(const ws_modality *ecg, ws_dd_state *st, const float *x, uint8_t code, ws_dd_window *w,
                 void *scratch, ws_dd_work *work) {
    float f[WS_DD_FEATURES];
    const int rc = analyse(ecg, x, code, w, f, scratch, work);
    if (rc) return rc;
    with_history(st, f, w->features);
    return 0;
}

int ws_dd_task(const ws_encoder *enc, ws_dd_state *st, const float *y, ws_dd_window *w, ws_dd_work *work) {
    if (enc->pred.n_in != 2 * WS_DD_FEATURES + WS_TASK_FEATURES) return -1;
    task_step(&enc->pred, st, y, w->features + 2 * WS_DD_FEATURES, work);
    return 0;
}

void ws_dd_predict(const ws_encoder *enc, ws_dd_window *w) { predict(&enc->pred, w->features, w->pred); }

int ws_dd_analyse(const ws_encoder *enc, const ws_modality *ecg, ws_dd_state *st, const float *y, const float *x,
                  uint8_t code, ws_dd_window *w, void *scratch, ws_dd_work *work) {
    if (enc->pred.n_in != 2 * WS_DD_FEATURES + WS_TASK_FEATURES) return -1;
    int rc = ws_dd_levels(ecg, st, x, code, w, scratch, work);
    if (!rc) rc = ws_dd_task(enc, st, y, w, work);
    if (!rc) ws_dd_predict(enc, w);
    return rc;
}

double ws_dd_slack(const ws_predictor *p, double bound) {
    /* np.searchsorted(bounds, bound * (1 + 1e-9), "right") - 1 */
    const double b = bound * (1 + 1e-9);
    int k = -1;
    while (k + 1 < p->n_bounds && p->bounds[k + 1] <= b) k++;
    return k >= 0 ? p->lams[k] : INFINITY;
}

int ws_dd_choose(const ws_predictor *p, const ws_dd_window *w, double bound, double slack_offset, int fixed_level,
                 int max_level, int *pred_code) {
    int level = 0;
    const int top = max_level >= 0 && max_level < p->n_levels ? max_level : p->n_levels;
    if (fixed_level >= 0) {
        level = fixed_level < top ? fixed_level : top;
    } else {
        const double lam = ws_dd_slack(p, bound) + slack_offset, lim = log1p(bound);
        for (int L = 1; L <= top; L++) /* higher levels send less: the last that passes wins */
            if ((double)(w->pred[L - 1] + p->offsets[L - 1]) + lam <= lim) level = L;
    }
    /* the prediction the frame carries: max(0, expm1(pred)) of the level sent, coded as
       min(254, round(32 ln(1 + e))) */
    double code = 0.0;
    if (level > 0) {
        float e = expm1f(w->pred[level - 1]);
        if (!(e > 0.0f)) e = 0.0f;
        code = rint(32.0 * log1p((double)e));
        if (code > 254) code = 254;
    }
    *pred_code = (int)code;
    return level;
}

static int16_t raw_step(double v) {
    const double r = v != v ? 0.0 : rint(v / 0.001);
    return (int16_t)(r < -32768 ? -32768 : (r > 32767 ? 32767 : r));
}

void ws_raw_ecg(const double *x, int16_t *q) {
    for (int t = 0; t < WS_WINDOW; t++) q[t] = raw_step(x[t]);
}

void ws_raw_ecg_f32(const float *x, int16_t *q) {
    for (int t = 0; t < WS_WINDOW; t++) q[t] = raw_step((double)x[t]);
}
