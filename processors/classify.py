"""Run the deployed classifiers over many beds at once and turn their outputs into points.

The worker collects every bed's `ClassifierInputs` of a batch (`processors.bed`), runs one
rhythm batch and one beat batch, and writes:

* ``rhythm,bed=B label="AF",code=1,p_normal=..,p_af=..,p_other=..,p_noisy=..`` at the window's
  timestamp: the decision over the last 10 s, every 2 s per bed;
* fields ``cls`` (AAMI class N/S/V/F) and ``cls_p`` merged into the bed's existing ``beat`` point
  (same series and timestamp, so InfluxDB keeps one point per beat), one beat after it was
  detected (the beat's post-RR interval is one of the inputs).
"""

from __future__ import annotations

import numpy as np

from processors.bed import ClassifierInputs
from processors.influx_sink import line
from wardmodels.classifier import BEAT_CLASSES, RHYTHM_CLASSES, rhythm_input
from wardmodels.clf_runtime import load_deployed_classifier

RHYTHM_NAMES = {"N": "normal", "A": "af", "O": "other", "~": "noisy"}


class Classifiers:
    """The worker's classifiers. ``rhythm``: the deployed rhythm model, or the packed file named
    by ``WARDSTREAM_RHYTHM_WEIGHTS`` (a candidate under evaluation). A streaming (causal) rhythm
    model decides window by window from per-bed state (`RhythmStream`); its state lives in this
    process, so a bed it has not seen -- after a worker restart, a rebalance or a gap -- is
    primed from the bed's buffer (12 s) first. ``task_model``: the deployed crop-wise rhythm
    model, which defines the Dynamic-Deep task error the audit observes."""

    def __init__(self, rhythm=None, beat=None):
        import os

        from wardmodels.clf_runtime import load_packed

        cand = os.environ.get("WARDSTREAM_RHYTHM_WEIGHTS", "").strip()
        self.task_model = load_deployed_classifier("rhythm")
        self.rhythm = rhythm or (load_packed(cand) if cand else self.task_model)
        self.beat = beat or load_deployed_classifier("beat")
        self.stream = None
        if getattr(self.rhythm.model.cfg, "causal", False):
            from wardmodels.stream_rhythm import RhythmStream

            self.stream = RhythmStream(self.rhythm.model)
        self._pos: dict[str, int] = {}  # stream index after the last window a bed's stream took

    def _stream_proba(self, inputs: list[ClassifierInputs]) -> dict[int, np.ndarray]:
        """Step every bed's stream by its windows of this batch, in order (a bed the stream does
        not continue -- new, or after a gap -- is first primed from its buffer); -> per input
        whose bed has 10 s, the decision's probabilities."""
        from collections import deque

        from wardmodels.stream_rhythm import WINDOW

        queues: dict[str, deque] = {}
        for c in inputs:
            if c.recent is None or c.window != WINDOW:
                continue
            buf = c.recent
            q = queues.setdefault(c.bed, deque())
            if self._pos.get(c.bed) == c.recent_end - WINDOW:  # the usual case: just this window
                q.append((c, np.asarray(buf[-WINDOW:], np.float32)))
            else:  # restart the bed's stream from what its buffer holds
                q.append((None, "forget"))
                buf = np.asarray(buf, np.float32)
                k = len(buf) // WINDOW
                wins = buf[len(buf) - k * WINDOW:].reshape(k, WINDOW)
                q.extend((None, w) for w in wins[:-1])
                q.append((c, wins[-1]))
            self._pos[c.bed] = c.recent_end
        out: dict[int, np.ndarray] = {}
        while queues:
            beds, items = [], []
            for b in list(queues):
                c, w = queues[b].popleft()
                while isinstance(w, str):  # "forget"
                    self.stream.forget(b)
                    c, w = queues[b].popleft()
                beds.append(b)
                items.append((c, w))
                if not queues[b]:
                    del queues[b]
            p = self.stream.step(beds, np.stack([w for _, w in items]))
            for (c, _), pr in zip(items, p):
                if c is not None and c.rhythm is not None:
                    out[id(c)] = pr
        return out

    def points(self, inputs: list[ClassifierInputs]) -> tuple[list[str], int, int]:
        """-> (line-protocol points, rhythm decisions, beats classified)."""
        out, _, n_rh, n_beats = self.run(inputs)
        return out, n_rh, n_beats

    def run(self, inputs: list[ClassifierInputs]) -> tuple[list[str], list[tuple], int, int]:
        """-> (line-protocol points, per input (AF probability or None, [(beat ms, class, p)]),
        rhythm decisions, beats classified)."""
        out: list[str] = []
        results: dict[int, list] = {id(c): [None, []] for c in inputs}
        rh = [c for c in inputs if c.rhythm is not None]
        if self.stream is not None:
            got = self._stream_proba(inputs)
            rh = [c for c in rh if id(c) in got]
            p = np.stack([got[id(c)] for c in rh]) if rh else None
        elif rh:
            p = self.rhythm.proba(rhythm_input(np.stack([c.rhythm for c in rh])))
        if rh:
            for c, pr in zip(rh, p):
                results[id(c)][0] = float(pr[RHYTHM_CLASSES.index("A")])
                k = int(pr.argmax())
                fields = {"label": RHYTHM_NAMES[RHYTHM_CLASSES[k]], "code": k,
                          **{f"p_{RHYTHM_NAMES[n]}": round(float(v), 4) for n, v in zip(RHYTHM_CLASSES, pr)}}
                out.append(line("rhythm", {"bed": c.bed}, fields, c.rhythm_ts_ms))
        bt = [c for c in inputs if len(c.beat_ts_ms)]
        n_beats = 0
        if bt:
            w = np.concatenate([c.beat_waves for c in bt])
            f = np.concatenate([c.beat_ctx for c in bt])
            p = self.beat.proba(w, f)
            k = 0
            for c in bt:
                for ts in c.beat_ts_ms:
                    j = int(p[k].argmax())
                    out.append(line("beat", {"bed": c.bed}, {"cls": BEAT_CLASSES[j], "cls_p": round(float(p[k, j]), 4)}, ts))
                    results[id(c)][1].append((int(ts), BEAT_CLASSES[j], round(float(p[k, j]), 4)))
                    k += 1
            n_beats = k
        return out, [tuple(results[id(c)]) for c in inputs], len(rh), n_beats
