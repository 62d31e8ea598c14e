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
