/* A whole device (see ws_device.h). */
#include "ws_device.h"

#include <string.h>

#define FAIL(msg)              \
    do {                       \
        if (why) *why = (msg); \
        return -1;             \
    } while (0)

int ws_device_init(ws_device *d, const ws_encoder *enc, const ws_device_config *cfg, const char **why) {
    memset(d, 0, sizeof(*d));
    d->enc = enc;
    d->cfg = *cfg;
    d->ecg = ws_modality_named(enc, "ecg");
    d->eeg = ws_modality_named(enc, "eeg");
    if (!d->ecg || !d->eeg) FAIL("the blob lacks a modality");
    if (cfg->dd < -2 || cfg->dd > WS_DD_LEVELS) FAIL("dd must be -2, -1 or a level 0..5");
    if (cfg->dd == -2 && (cfg->level < 1 || cfg->level > d->ecg->n_cb)) FAIL("not a base codec level");
    if (cfg->dd > -2 && (!enc->pred.n_in || cfg->eeg_level < 1 || cfg->eeg_level > d->eeg->n_cb))
        FAIL("the blob has no Dynamic-Deep part, or the EEG level is not a base level");
    if (cfg->dd > -2 && d->ecg->n_sections != 2)
        FAIL("a level-picking device sends its ECG front end's state on the wire: two filter sections");
    d->seq = cfg->seq0;
    d->bound = cfg->bound > 0 ? cfg->bound : enc->pred.deployed_bound;
    d->last_level = -1, d->last_pred_code = -1, d->max_level = -1;
    ws_dd_reset(&d->dd);
    return 0;
}

static int bits_for(int k) {
    int b = 0;
    while ((1 << b) < k) b++;
    return b;
}

static const ws_section_tables *tables(const ws_device *d, const ws_modality *m, int level, ws_section_tables *t) {
    return d->cfg.coded && ws_section_tables_for(m, level, m->n_cb, t) == 0 ? t : 0;
}

/* The ECG as a raw section (`raw_channel`: the raw window at 1 µV per step), with the front end's
   state before the window when ``zi`` is given (a raw window after a codec-level one). */
static ws_section raw_ecg_section(ws_device *d, const double *ecg, const float *zi) {
    ws_raw_ecg(ecg, d->raw);
    return (ws_section){0, 0, 0, 0, 0, 0, 0, d->raw, 0.001f, zi};
}

int ws_device_step(ws_device *d, const double *ecg, const double *eeg, void *scratch, ws_dd_work *work, uint8_t *out,
                   size_t cap, uint64_t (*clock)(void), uint32_t *ticks) {
    const ws_device_config *c = &d->cfg;
    const int dd = c->dd > -2;
    uint64_t t[WS_DEVICE_STEPS]; /* t[i]: when step i began; the frame, the last, ends at the return */
#define MARK(i) (t[i] = clock ? clock() : 0)
    ws_section_tables tab[2];
    ws_section sec[2];
    int n_sec = 1, pcode = -1, L = c->level;
    /* the ECG: the front end, then the encoder at the fixed level, or every level and the choice */
    MARK(0);
    /* the front end's state before this window, as f32: a raw window after a codec-level one
       carries it (`wardmodels.wire_codec`), so the cloud filters the raw samples as this device did */
    float zi[4];
    const int after_codec = d->last_level > 0 && d->filt[0].started;
    for (int s = 0; s < 2; s++) zi[2 * s] = (float)d->filt[0].zi[s][0], zi[2 * s + 1] = (float)d->filt[0].zi[s][1];
    ws_filter(d->ecg, &d->filt[0], ecg, d->y[0], WS_WINDOW);
    const uint8_t code = ws_normalise(d->ecg, d->y[0], d->x);
    d->last_code[0] = code;
    MARK(1);
    if (dd) {
        if (ws_dd_levels(d->ecg, &d->dd, d->x, code, &d->win, scratch, work)) return -3;
        MARK(2);
        ws_dd_task(d->enc, &d->dd, d->y[0], &d->win, work);
        MARK(3);
        ws_dd_predict(d->enc, &d->win);
        L = ws_dd_choose(&d->enc->pred, &d->win, d->bound, d->slack_offset, c->dd, d->max_level, &pcode);
        MARK(4);
        if (L == 0) {
            sec[0] = raw_ecg_section(d, ecg, after_codec ? zi : 0);
        } else {
            sec[0] = (ws_section){0, L, code, d->win.idx[L - 1], d->win.n_idx[L - 1], d->win.bits[L - 1],
                                  tables(d, d->ecg, L, &tab[0]), 0, 0, 0};
        }
    } else if (d->max_level == 0) { /* a fidelity hold down to raw: as a Dynamic-Deep device sends it */
        L = 0;
        MARK(2);
        t[3] = t[4] = t[2]; /* no task features or predictor */
        sec[0] = raw_ecg_section(d, ecg, after_codec ? zi : 0);
    } else {
        if (d->max_level > 0 && d->max_level < L) L = d->max_level; /* a fidelity hold caps the level */
        const int stages = d->ecg->n_cb - L + 1, len = ws_encode(d->ecg, d->x, stages, d->idx[0], 0, scratch);
        if (len < 0) return -3;
        MARK(2);
        t[3] = t[4] = t[2]; /* no task features or predictor */
        sec[0] = (ws_section){0, L, code, d->idx[0], stages * len, bits_for(d->ecg->K), tables(d, d->ecg, L, &tab[0]),
                              0, 0, 0};
    }
    /* the EEG at its level */
    if (eeg) {
        const int el = dd ? c->eeg_level : c->level, stages = d->eeg->n_cb - el + 1;
        ws_filter(d->eeg, &d->filt[1], eeg, d->y[1], WS_WINDOW);
        const uint8_t ecode = ws_normalise(d->eeg, d->y[1], d->x);
        d->last_code[1] = ecode;
        MARK(5);
        const int len = ws_encode(d->eeg, d->x, stages, d->idx[1], 0, scratch);
        if (len < 0) return -3;
        sec[n_sec++] = (ws_section){1, el, ecode, d->idx[1], stages * len, bits_for(d->eeg->K),
                                    tables(d, d->eeg, el, &tab[1]), 0, 0, 0};
    } else {
        MARK(5);
    }
    MARK(6);
    /* `stream.wire.in_burst`: an audit burst's windows carry the ECG as the encoder saw it */
    const int burst = dd && ws_in_burst(d->seq, c->bed, c->audit_every);
    if (burst) ws_raw_ecg_f32(d->y[0], d->ref);
    /* an audit burst's frames carry the reference and the id of the predictor that made pcode */
    const ws_frame_extra ex = {pcode, c->lossless, burst ? d->ref : 0, burst && pcode >= 0 ? d->enc->pred.id : 0};
    const int n = ws_frame_v2_ex(out, cap, c->bed, d->seq, c->t0_ms + 2000u * (uint64_t)d->seq, c->model, sec, n_sec,
                                 &ex, c->key, c->key_len);
    if (ticks) {
        const uint64_t end = clock ? clock() : 0;
        for (int i = 0; i < WS_DEVICE_STEPS; i++) ticks[i] = (uint32_t)((i + 1 < WS_DEVICE_STEPS ? t[i + 1] : end) - t[i]);
#undef MARK
    }
    if (n < 0) return n;
    d->seq++;
    d->last_level = L, d->last_pred_code = pcode;
    return n;
}
