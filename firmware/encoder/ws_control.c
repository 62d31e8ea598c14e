/* Downlink control frames (see ws_control.h and the layout in `stream/downlink.py`). */
#include "ws_control.h"

#include <math.h>
#include <string.h>

#include "ws_frame.h"
#include "ws_sha256.h"

#define TAG 0xC1
#define FLAG_HMAC 0x01
#define FLAG_HOLD 0x02 /* a u8 max_level follows the slack */
#define BODY 26        /* tag, flags, bed, counter, bound, slack */
#define HMAC_LEN 16
#define MAX_LEVEL 7

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static double be_f64(const uint8_t *p) {
    uint64_t v = (uint64_t)be32(p) << 32 | be32(p + 4);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

int ws_control_apply(ws_device *d, const uint8_t *buf, size_t n) {
    if (n < BODY + 4 || buf[0] != TAG) return WS_CONTROL_MALFORMED;
    const uint8_t flags = buf[1];
    const size_t body = BODY + ((flags & FLAG_HOLD) ? 1 : 0), size = body + 4;
    if ((flags & ~(FLAG_HMAC | FLAG_HOLD)) || n != (size_t)(size + ((flags & FLAG_HMAC) ? HMAC_LEN : 0)))
        return WS_CONTROL_MALFORMED;
    if (ws_crc32(buf, body) != be32(buf + body)) return WS_CONTROL_MALFORMED;
    const int keyed = d->cfg.key != 0 && d->cfg.key_len > 0;
    if (!(flags & FLAG_HMAC) != !keyed) return WS_CONTROL_BAD_SIGNATURE;
    if (keyed) {
        uint8_t tag[32], diff = 0;
        ws_hmac_sha256(d->cfg.key, d->cfg.key_len, buf, size, tag);
        for (int i = 0; i < HMAC_LEN; i++) diff |= (uint8_t)(tag[i] ^ buf[size + i]); /* in constant time */
        if (diff) return WS_CONTROL_BAD_SIGNATURE;
    }
    const double bound = be_f64(buf + 10), slack = be_f64(buf + 18);
    const int max_level = (flags & FLAG_HOLD) ? buf[BODY] : -1;
    if (!isfinite(bound) || bound < 0 || !isfinite(slack) || max_level > MAX_LEVEL) return WS_CONTROL_MALFORMED;
    if (be32(buf + 2) != d->cfg.bed) return WS_CONTROL_OTHER_BED;
    const uint32_t counter = be32(buf + 6);
    if (d->control_seen && counter <= d->control_counter) return WS_CONTROL_REPLAYED;
    d->control_seen = 1, d->control_counter = counter;
    d->bound = bound > 0 ? bound : d->enc->pred.deployed_bound;
    d->slack_offset = slack;
    d->max_level = max_level;
    return WS_CONTROL_APPLIED;
}
