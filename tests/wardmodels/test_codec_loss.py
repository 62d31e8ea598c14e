"""The whitened spectral term counts every 0.5-40 Hz bin alike, phase included."""

import math

import torch

from wardmodels.codec import recon_loss, whitened_spectral_loss

FS, N = 128, 256


def _tone(hz: float, amp: float, phase: float = 0.0, batch: int = 8) -> torch.Tensor:
    t = torch.arange(N) / FS
    return amp * torch.sin(2 * math.pi * hz * t + phase).repeat(batch, 1)


def test_zero_for_a_perfect_reconstruction_and_blind_to_a_bands_power():
    x = _tone(10, 1.0) + _tone(35, 0.05)
    assert float(whitened_spectral_loss(x, x)) == 0.0
    # the weak 35-Hz tone lost entirely costs as much as the strong 10-Hz one lost
    weak = whitened_spectral_loss(x, _tone(10, 1.0))
    strong = whitened_spectral_loss(x, _tone(35, 0.05))
    assert abs(float(weak) - float(strong)) < 0.1 * float(strong)
    assert float(weak) > 0.01


def test_a_phase_error_in_a_weak_band_counts_where_magnitude_terms_do_not_see_it():
    x = _tone(10, 1.0) + _tone(35, 0.05)
    y = _tone(10, 1.0) + _tone(35, 0.05, phase=math.pi / 2)  # same spectrum magnitudes
    plain = recon_loss(x, y, (0.0, 0.0, 1.0), "log")
    assert float(plain) < 1e-4  # the log-magnitude term cannot tell them apart
    assert float(recon_loss(x, y, (0.0, 0.0, 1.0), "log", whitened=1.0)) > 100 * float(plain) + 1e-3
    assert float(whitened_spectral_loss(x, y)) > 0.01
