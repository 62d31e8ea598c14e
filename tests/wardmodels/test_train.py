"""The trainer stops on its budget with a checkpoint and resumes to the same end state."""

import torch

from wardmodels.train_codec import load_weights, train


def test_budget_stop_then_resume_matches_an_uninterrupted_run(data_dir, tmp_path):
    kw = dict(variant_name="ward-fastdec", steps=4, log_every=2, threads=1, seed=3)
    first = train(data_dir, budget_min=0.0, run_dir=tmp_path / "a", **kw)
    assert first["done"] is False and first["step"] == 0
    resumed = train(data_dir, run_dir=tmp_path / "a", **kw)
    straight = train(data_dir, run_dir=tmp_path / "b", **kw)
    assert resumed["done"] and straight["done"]
    a, b = load_weights(resumed["weights"]), load_weights(straight["weights"])
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_finetuning_one_modality_leaves_the_other_bit_for_bit_and_its_encoder_on_the_int8_grid(data_dir, tmp_path):
    from wardmodels import runtime

    base_path = runtime.WEIGHTS_DIR / next(e["codec"] for e in runtime.manifest() if e["variant"] == "ward-fastdec")
    res = train(data_dir, "ward-hf", steps=3, log_every=3, threads=1, seed=0, run_dir=tmp_path,
                init_from=base_path, finetune="eeg", lr=1e-3)
    base, tuned = load_weights(base_path), load_weights(res["weights"])
    b, t = base.state_dict(), tuned.state_dict()
    ecg = [k for k in b if k.startswith(("enc.ecg", "vq.ecg", "dec.ecg", "attn.mha.ecg"))]
    assert ecg and all(torch.equal(b[k], t[k]) for k in ecg)
    eeg = [k for k in b if k.startswith(("enc.eeg", "vq.eeg", "dec.eeg", "attn.mha.eeg"))]
    assert sum(not torch.equal(b[k], t[k]) for k in eeg) > len(eeg) // 2
    for k, w in t.items():  # every encoder weight a multiple of its channel's int8 step
        if k.startswith("enc.eeg") and k.endswith("weight") and w.dim() == 3:
            step = w.abs().reshape(len(w), -1).amax(1) / 127
            q = w / step[:, None, None]
            assert torch.allclose(q, q.round(), atol=1e-3), k
    assert tuned.train_record["finetune"] == "eeg" and tuned.cfg.whitened == (0.0, 0.7)


def test_a_finetune_needs_a_modality_and_a_starting_codec(data_dir, tmp_path):
    import pytest

    with pytest.raises(ValueError, match="finetune"):
        train(data_dir, "ward-hf", steps=1, run_dir=tmp_path, finetune="eeg")
    with pytest.raises(ValueError, match="finetune"):
        train(data_dir, "ward-hf", steps=1, run_dir=tmp_path, finetune="ppg", init_from=tmp_path / "x.pt")
