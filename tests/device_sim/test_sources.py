import numpy as np
import pytest

from device_sim.sources import SyntheticBed
from device_sim.ward import Device, corrupt, make_sources
from stream.wire import FrameError, Modality, decode_frame
from wardstream.datasets import DataMissing
from wardstream.settings import default_data_dir


def test_devices_have_monotonic_seq_and_their_own_clock():
    dev = Device(3, SyntheticBed(3), 1_000_000)
    frames = [decode_frame(dev.next_frame()[0]) for _ in range(5)]
    assert [f.seq for f in frames] == list(range(5))
    assert [f.t_start_us for f in frames] == [1_000_000 + 2_000_000 * i for i in range(5)]
    ecg = frames[0].channel(Modality.ECG).physical()
    assert 0.3 < np.ptp(ecg) < 6  # millivolts


def test_beds_differ_and_include_rhythm_variation():
    rhythms = set()
    hrs = []
    for bed in range(40):
        b = SyntheticBed(bed, seed=2)
        for _ in range(60):
            b.next_window()
            rhythms.add(b.rhythm)
        hrs.append(b.hr_bpm)
    assert {"sinus", "af", "ectopic"} <= rhythms
    assert np.std(hrs) > 10


def test_corrupted_frames_are_rejected():
    raw, _ = Device(1, SyntheticBed(1), 0).next_frame()
    for how in range(4):
        bad, reason = corrupt(raw, how)
        with pytest.raises(FrameError) as e:
            decode_frame(bad)
        assert e.value.reason == reason


def test_replay_sources_need_data(tmp_path):
    with pytest.raises(DataMissing, match="MIT-BIH"):
        make_sources("mitdb", [1], tmp_path, 0)
    with pytest.raises(ValueError, match="unknown source"):
        make_sources("nope", [1], tmp_path, 0)


def test_replay_of_real_recordings():
    d = default_data_dir()
    if not (d / "mitdb").exists() or not (d / "eegmat").exists():
        pytest.skip(f"recordings not found under {d}")
    srcs = make_sources("replay", [1, 2], d, 0)
    ecg1, eeg1 = srcs[1].next_window()  # MIT-BIH: ECG only
    ecg2, eeg2 = srcs[2].next_window()  # eegmat: simultaneous ECG and EEG
    assert ecg1.shape == (256,) and eeg1 is None
    assert ecg2.shape == (256,) and eeg2.shape == (256,)
