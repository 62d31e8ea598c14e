"""`wardstream bench codec` runs on every deployed codec, its Dynamic-Deep levels included."""

import pytest
import torch

from wardmodels import runtime
from wardstream.bench_codec import bench


@pytest.mark.parametrize("model_id", runtime.deployed_ids())
def test_bench_codec_measures_every_level(model_id):
    threads = torch.get_num_threads()
    try:
        r = bench(model_id, threads=1, seconds=0.05, batches=(1, 4))
    finally:
        torch.set_num_threads(threads)
    codec = runtime.load_deployed(model_id)
    for level in codec.levels:
        for b in (1, 4):
            assert r["decode"][f"level{level}_batch{b}"] > 0
    assert r["decode_pairs_per_s"] == max(r["decode"]["level1_batch1"], r["decode"]["level1_batch4"])
    mixed = len(codec.levels) > codec.stages
    assert ("mixed_batch4" in r["decode"]) == mixed and "mixed_batch1" not in r["decode"]
    if codec.edge is not None:
        assert r["encode_ms"] > 0 and 0 < r["encoder_int8_bytes"] <= 480_000
        m7 = r["encode_m7"]  # the C encoder on the emulated Cortex-M7 (./ward test installs the toolchain)
        assert m7["agreement_with_the_simulated_device"] == {**{m: {"scale_codes": 1.0, "indices": 1.0}
                                                                for m in ("ecg", "eeg")},
                                                             "frames_byte_identical": 1.0}, m7
        assert m7["instructions_per_window_pair"]["min"] > 0
    assert r["params"]["decoders"] > 0 and r["encoder_macs_per_pair"] > 0


def test_bench_codec_times_the_lossless_raw_level():
    from wardstream.bench_codec import bench_raw_lossless

    r = bench_raw_lossless(seconds=0.01, windows=4)
    assert r["encode_ms_per_window"] > 0 and r["decode_ms_per_window"] > 0
    assert 0 < r["mean_section_bytes"]["ecg"] < r["plain_section_bytes"] == 521  # wire v2
    assert 0 < r["mean_section_bytes"]["eeg"] < 521
