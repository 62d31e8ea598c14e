import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from wardmodels import entropy


def _prior(k=256, classes=4):
    rng = np.random.default_rng(3)
    train = np.minimum(rng.zipf(1.3, (2000, 32)) - 1, k - 1)
    return entropy.fit_stage(train, k, classes)


PRIOR = _prior()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=64))
def test_round_trip_any_sequence(symbols):
    buf, nbits = entropy.encode(np.array(symbols), PRIOR)
    assert len(buf) == (nbits + 7) // 8
    assert np.array_equal(entropy.decode(buf, len(symbols), PRIOR), symbols)


def test_frequencies_are_valid_and_skewed_sources_compress():
    assert (PRIOR.freqs >= 1).all() and (PRIOR.freqs.astype(int).sum(1) == entropy.TOTAL).all()
    rng = np.random.default_rng(4)
    test = np.minimum(rng.zipf(1.3, (200, 32)) - 1, 255)
    bits = [entropy.encode(w, PRIOR)[1] for w in test]
    assert np.mean(bits) < 0.6 * 32 * 8  # far below 8 bits per index on a skewed source


def test_context_classes_help_on_a_markov_source():
    rng = np.random.default_rng(5)
    x = np.zeros((3000, 32), int)
    x[:, 0] = rng.integers(0, 64, 3000)
    for t in range(1, 32):
        x[:, t] = (x[:, t - 1] + rng.integers(0, 3, 3000)) % 64
    p1, p8 = entropy.fit_stage(x[:2500], 64, 1), entropy.fit_stage(x[:2500], 64, 8)
    b1 = np.mean([entropy.encode(w, p1)[1] for w in x[2500:]])
    b8 = np.mean([entropy.encode(w, p8)[1] for w in x[2500:]])
    assert b8 < 0.8 * b1
