"""The worker's classifiers with a streaming rhythm model: per-bed state across batches, several
windows of one bed in a batch, and a restart primed from the bed's buffer."""

import numpy as np
import torch

from processors.bed import ECG_BUFFER, ClassifierInputs
from processors.classify import Classifiers
from wardmodels.classifier import RHYTHM_CLASSES, RHYTHM_SAMPLES, VARIANTS, Classifier, ResNet1D
from wardmodels.compress import fold_batchnorm
from wardmodels.stream_rhythm import WINDOW, RhythmStream, record_logits


def _model():
    torch.manual_seed(0)
    m = ResNet1D(VARIANTS["rhythm-stream"]).eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_var.fill_(0.3)
            mod.bias.data.uniform_(-0.3, 0.3)
    return Classifier(fold_batchnorm(m), "random-causal")


class Bed:
    """A bed as `processors.bed` feeds the classifiers: a float16 buffer of the last 12 s."""

    def __init__(self, name, x):
        self.name, self.x, self.buf, self.end = name, x, np.zeros(0, np.float16), 0

    def window(self, j, skip=False):
        w = self.x[j * WINDOW:(j + 1) * WINDOW]
        self.buf = np.concatenate([self.buf, w.astype(np.float16)])[-ECG_BUFFER:]
        self.end = (j + 1) * WINDOW
        rhythm = self.buf[-RHYTHM_SAMPLES:].astype(np.float32) if len(self.buf) >= RHYTHM_SAMPLES else None
        return ClassifierInputs(self.name, rhythm, self.end // 128 * 1000, np.zeros((0, 2, 112), np.float32),
                                np.zeros((0, 5), np.float32), [], self.buf, self.end, WINDOW)


def _decisions(points):
    return [p for p in points if p.startswith("rhythm,")]


def test_stream_in_the_worker_equals_the_whole_record(tmp_path):
    clf = _model()
    rng = np.random.default_rng(0)
    xa = (0.3 * rng.standard_normal(20 * WINDOW)).astype(np.float16).astype(np.float32)
    xb = (1.5 * rng.standard_normal(20 * WINDOW)).astype(np.float16).astype(np.float32)
    a, b = Bed("a", xa), Bed("b", xb)
    cls = Classifiers(rhythm=clf)
    p_a, p_b = [], []
    # batches as the worker forms them: bed a one window each, bed b two windows in one batch
    for j in range(0, 20, 2):
        ins = [a.window(j), b.window(j), b.window(j + 1)]
        _, res, n_rh, _ = cls.run(ins)
        ins2 = [a.window(j + 1)]
        _, res2, n2, _ = cls.run(ins2)
        for c, r in zip(ins + ins2, res + res2):
            if c.rhythm is not None:
                (p_a if c.bed == "a" else p_b).append(r[0])
            else:
                assert r[0] is None  # no decision before 10 s
    want_a = torch.softmax(torch.from_numpy(record_logits(clf.model, [xa])[0]), 1).numpy()[:, RHYTHM_CLASSES.index("A")]
    want_b = torch.softmax(torch.from_numpy(record_logits(clf.model, [xb])[0]), 1).numpy()[:, RHYTHM_CLASSES.index("A")]
    assert len(p_a) == len(want_a) == 16
    np.testing.assert_allclose(p_a, want_a, atol=1e-4)
    np.testing.assert_allclose(p_b, want_b, atol=1e-4)


def test_a_restarted_worker_primes_a_bed_from_its_buffer():
    """A new process (no stream state) continues bed a from its 12-s buffer: its decisions are
    those of a stream that started 12 s back; a gap restarts the bed the same way."""
    clf = _model()
    x = (0.5 * np.random.default_rng(1).standard_normal(16 * WINDOW)).astype(np.float16).astype(np.float32)
    bed = Bed("a", x)
    first = Classifiers(rhythm=clf)
    for j in range(10):
        first.run([bed.window(j)])
    second = Classifiers(rhythm=clf)  # the restart
    got = [second.run([bed.window(j)])[1][0][0] for j in range(10, 12)]
    ref = RhythmStream(clf.model)
    start = 11 * WINDOW - ECG_BUFFER  # what the buffer held at window 10
    p = [ref.step(["a"], x[None, s:s + WINDOW])[0] for s in range(start, 12 * WINDOW, WINDOW)]
    np.testing.assert_allclose(got, [q[RHYTHM_CLASSES.index("A")] for q in p[-2:]], atol=1e-4)
    # a gap: window 13 is missing, window 14 restarts the bed from its buffer
    second.run([bed.window(12)])
    c = bed.window(14)
    assert second._pos["a"] == 13 * WINDOW
    got14 = second.run([c])[1][0][0]
    ref2 = RhythmStream(clf.model)
    buf = c.recent.astype(np.float32)
    p2 = [ref2.step(["a"], buf[None, s:s + WINDOW])[0] for s in range(0, len(buf), WINDOW)]
    assert abs(got14 - p2[-1][RHYTHM_CLASSES.index("A")]) < 1e-4
