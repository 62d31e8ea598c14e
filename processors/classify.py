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
    def __init__(self):
        self.rhythm = load_deployed_classifier("rhythm")
        self.beat = load_deployed_classifier("beat")

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
        if rh:
            p = self.rhythm.proba(rhythm_input(np.stack([c.rhythm for c in rh])))
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
            f = np.concatenate([c.beat_rr for c in bt])
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
