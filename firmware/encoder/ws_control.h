/* Downlink control frames (`stream/downlink.py`): the Dynamic-Deep bound and slack correction a
 * device receives from the cloud through its gateway, authenticated with the device's key and
 * numbered so that a recorded frame cannot be played back. */
#ifndef WS_CONTROL_H
#define WS_CONTROL_H

#include <stddef.h>

#include "ws_device.h"

enum {
    WS_CONTROL_APPLIED = 0,
    WS_CONTROL_MALFORMED = -1,   /* not a control frame, bad flags or length, CRC mismatch, values out of range */
    WS_CONTROL_BAD_SIGNATURE = -2, /* the tag does not verify, or the frame's signing does not match the device's key */
    WS_CONTROL_OTHER_BED = -3,   /* meant for another device */
    WS_CONTROL_REPLAYED = -4,    /* its counter is not above the last applied */
};

/* Check a frame and apply it to ``d`` (its bound and slack offset, from the next window) -> one
 * of the codes above; nothing changes unless WS_CONTROL_APPLIED. */
int ws_control_apply(ws_device *d, const uint8_t *buf, size_t n);

#endif
