/* The devices of ws_device.h as a shared library for the simulator (`device_sim/firmware.py`,
 * `WARDSTREAM_SIM_ENCODER=firmware`): a model holds one loaded blob, each device its own state;
 * devices step one at a time (one process-wide scratch and working memory; not thread-safe). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws_control.h"
#include "ws_device.h"

typedef struct {
    ws_encoder enc;
    uint8_t *blob;
} host_model;

typedef struct {
    ws_device dev;
    uint8_t key[128];
} host_device;

static uint8_t scratch[WS_SCRATCH_BYTES] __attribute__((aligned(8)));
static ws_dd_work work;

static void say(char *why, size_t cap, const char *msg) {
    if (why && cap) snprintf(why, cap, "%s", msg);
}

void *wsh_model_new(const uint8_t *blob, size_t n, char *why, size_t why_cap) {
    host_model *m = calloc(1, sizeof(*m));
    const char *msg = "out of memory";
    if (m && (m->blob = aligned_alloc(8, (n + 7) / 8 * 8))) {
        memcpy(m->blob, blob, n);
        if (ws_load(m->blob, n, &m->enc, &msg) == 0) return m;
    }
    say(why, why_cap, msg);
    if (m) free(m->blob);
    free(m);
    return 0;
}

void wsh_model_free(void *p) {
    host_model *m = p;
    if (m) free(m->blob);
    free(m);
}

void *wsh_device_new(void *model, uint32_t bed, uint32_t seq0, uint64_t t0_ms, int model_id, int dd, int level,
                     int eeg_level, int lossless, int coded, uint32_t audit_every, double bound, const uint8_t *key,
                     size_t key_len, char *why, size_t why_cap) {
    host_device *h = calloc(1, sizeof(*h));
    if (!h || key_len > sizeof(h->key)) {
        say(why, why_cap, h ? "device key longer than 128 bytes" : "out of memory");
        free(h);
        return 0;
    }
    if (key_len) memcpy(h->key, key, key_len);
    const ws_device_config cfg = {bed, seq0, t0_ms, (uint8_t)model_id, dd, level, eeg_level, lossless, coded,
                                  audit_every, bound, key_len ? h->key : 0, key_len};
    const char *msg = "";
    if (ws_device_init(&h->dev, &((host_model *)model)->enc, &cfg, &msg)) {
        say(why, why_cap, msg);
        free(h);
        return 0;
    }
    return h;
}

int wsh_device_step(void *p, const double *ecg, const double *eeg, uint8_t *out, size_t cap) {
    return ws_device_step(&((host_device *)p)->dev, ecg, eeg, scratch, &work, out, cap, 0, 0);
}

/* a downlink control frame (`stream/downlink.py`) as the device receives it -> ws_control.h's code */
int wsh_device_control(void *p, const uint8_t *buf, size_t n) { return ws_control_apply(&((host_device *)p)->dev, buf, n); }

double wsh_device_slack(void *p) { return ((host_device *)p)->dev.slack_offset; }

int wsh_device_last_level(void *p) { return ((host_device *)p)->dev.last_level; }

double wsh_device_bound(void *p) { return ((host_device *)p)->dev.bound; }

void wsh_device_free(void *p) { free(p); }
