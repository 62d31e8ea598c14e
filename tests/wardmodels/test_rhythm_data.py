"""The rhythm training crops under the Dynamic-Deep policy: each 2-s window from its own version."""

import numpy as np

from wardmodels.classifier import RHYTHM_SAMPLES
from wardmodels.clf_data import RhythmData
from wardmodels.frontend import WINDOW


def _data(n_windows: int, n_levels: int) -> RhythmData:
    d = RhythmData.__new__(RhythmData)  # no recordings: versions marked by their value
    n = n_windows * WINDOW
    d.signals = [np.zeros(n + 100, np.float32)]  # the original keeps its tail beyond whole windows
    d.recon = [[np.full(n, float(k + 1), np.float32)] for k in range(n_levels)]
    return d


def test_a_mixed_crop_takes_whole_windows_from_one_version_each():
    d = _data(n_windows=12, n_levels=5)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        c = d._mixed_crop(rng, 0)
        assert c.shape == (RHYTHM_SAMPLES,)
        # the crop starts anywhere; every sample of one record window has that window's version
        values = set(np.unique(c).tolist())
        assert values <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
        seen |= values
    assert seen == {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}  # the original and every level occur


def test_window_boundaries_are_the_records_not_the_crops():
    d = _data(n_windows=12, n_levels=3)
    rng = np.random.default_rng(1)
    for _ in range(20):
        state = rng.bit_generator.state
        c = d._mixed_crop(rng, 0)
        rng.bit_generator.state = state  # replay the draw: level per record window, then the start
        lv = rng.integers(0, 4, 12)
        s = int(rng.integers(0, 12 * WINDOW - RHYTHM_SAMPLES + 1))
        expect = lv[(s + np.arange(RHYTHM_SAMPLES)) // WINDOW].astype(np.float32)
        assert np.array_equal(c, expect)


def test_a_record_shorter_than_a_crop_is_used_whole():
    d = _data(n_windows=4, n_levels=2)
    c = d._mixed_crop(np.random.default_rng(2), 0)
    assert c.shape == (4 * WINDOW,)


def test_a_streaming_crop_ends_at_a_decision_time_with_its_history():
    """The causal model's training crop: 20 s of the normalised record ending at one of the
    pipeline's decision times (a window end from 10 s on), zeros before the record's start."""
    from wardmodels.stream_rhythm import STREAM_CROP, decision_ends, stream_crops

    d = RhythmData.__new__(RhythmData)
    n = 14 * WINDOW
    d.signals = [np.arange(1, n + 1, dtype=np.float32)]  # a sample's value is its position + 1
    d.recon, d.recon_share = [], 0.0
    rng = np.random.default_rng(3)
    ends = set()
    for _ in range(40):
        c = d._causal_crop(rng, 0)
        assert c.shape == (STREAM_CROP,)
        end = int(c[-1])
        assert end in set(decision_ends(n).tolist())
        assert np.array_equal(c, stream_crops(d.signals[0], [end])[0])
        assert (c[:STREAM_CROP - end] == 0).all() if end < STREAM_CROP else (c > 0).all()
        ends.add(end)
    assert len(ends) > 3  # drawn among the decision times


def test_an_epoch_has_the_size_the_learning_rate_schedule_counts():
    d = RhythmData.__new__(RhythmData)
    d.causal, d.mix_levels, d.recon, d.recon_share = False, False, [], 0.0
    d.signals = [np.zeros(n, np.float32) for n in (RHYTHM_SAMPLES + 500, RHYTHM_SAMPLES, 3 * WINDOW)]
    d.labels = np.array([0, 1, 2])
    d.mit_x, d.mit_y = np.zeros((4, RHYTHM_SAMPLES), np.float32), np.array([0, 1, 1, 2])
    d.crops_per_record, d.mit_per_epoch, d.synthetic_per_epoch = 2, 5, 3
    x, y = d.epoch(np.random.default_rng(0))
    assert len(y) == len(x) == d.epoch_size() == 3 * 2 + 5 + 3
    assert (y == 3).sum() == 3  # the synthetic crops are labelled noisy


def test_an_unknown_schedule_is_refused_before_any_data_is_read(tmp_path):
    import pytest

    from wardmodels.train_classifier import train_rhythm

    with pytest.raises(ValueError, match="schedule"):
        train_rhythm(tmp_path / "no-data-here", epochs=1, schedule="step")


def test_artefacts_go_on_the_chosen_share_of_ecg_crops_at_the_drawn_snr_labels_kept():
    """Muscle / motion artefacts (`add_artefacts`): only crops not labelled noisy, about the share
    asked, each one's added power at 3-20 dB below the crop's, renormalised, and labels untouched."""
    from wardmodels.classifier import RHYTHM_CLASSES, rhythm_input
    from wardmodels.clf_data import ARTEFACT_SNR_DB, add_artefacts, artefact_bank

    bank = artefact_bank(n=8, seed=5)
    assert set(bank) == {"muscle", "motion"}
    for z in bank.values():
        assert z.shape == (8, RHYTHM_SAMPLES)
        assert np.allclose(z.std(axis=1), 1.0, atol=1e-3) and np.allclose(z.mean(axis=1), 0.0, atol=1e-3)
    assert np.array_equal(bank["muscle"], artefact_bank(n=8, seed=5)["muscle"])  # seeded
    # muscle: power above 15 Hz; motion: below it
    f = np.fft.rfftfreq(RHYTHM_SAMPLES, 1 / 128)
    share_hi = {k: (np.abs(np.fft.rfft(z, axis=1)) ** 2)[:, f > 15].sum() / (np.abs(np.fft.rfft(z, axis=1)) ** 2).sum()
                for k, z in bank.items()}
    assert share_hi["muscle"] > 0.9 and share_hi["motion"] < 0.1

    rng = np.random.default_rng(0)
    t = np.arange(RHYTHM_SAMPLES) / 128
    clean = rhythm_input(np.stack([np.sin(2 * np.pi * (8 + 0.01 * i) * t) for i in range(400)]))  # between both kinds
    y = np.array([RHYTHM_CLASSES.index("~") if i % 4 == 0 else i % 3 for i in range(400)])
    x, y0 = clean.copy(), y.copy()
    pick = add_artefacts(rng, x, y, bank, 0.5)
    assert np.array_equal(y, y0)
    changed = np.flatnonzero(np.abs(x - clean).max(axis=1) > 1e-6)
    assert np.array_equal(changed, pick)
    assert not (y[pick] == RHYTHM_CLASSES.index("~")).any()
    assert 0.4 < len(pick) / (y != RHYTHM_CLASSES.index("~")).sum() < 0.6
    assert np.allclose(x[pick].std(axis=1), 1.0, atol=1e-3)
    # x = (clean + n) / sd: the clean part's share of the power gives each crop's SNR
    a = (x[pick] * clean[pick]).mean(axis=1)  # = 1 / sd, the clean crop being unit power
    snr = 10 * np.log10(a ** 2 / np.maximum(1 - a ** 2, 1e-12))
    lo, hi = ARTEFACT_SNR_DB
    assert (snr > lo - 1.5).all() and (snr < hi + 1.5).all() and snr.max() - snr.min() > 8


def test_an_artefact_share_outside_0_1_is_refused_before_any_data_is_read(tmp_path):
    import pytest

    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="artefact_share"):
            RhythmData(tmp_path, artefact_share=bad)  # an empty directory: the check comes first
