"""`wardstream eval classifier --dataset cinc2017 --robustness`: the deployed rhythm model on what
a ward feeds it besides clean ECG — noise, electrode motion, lead-off.

Each perturbation is added to the recording **before** the pipeline's causal 0.5–40 Hz front end
(`wardmodels.frontend.filter_record`), as a device would measure it, and the crops are the
pipeline's (the last 10 s at every 2-s window end). Noise is scaled to a signal-to-noise ratio
measured after the front end (the record's filtered power over the noise's filtered power), so
"6 dB" means what reaches the classifier. The generators are not those the model was trained with
(`wardmodels.clf_data.synthetic_noisy` and its additive white noise on a fifth of the crops):

* ``white``: Gaussian white noise;
* ``muscle``: white noise high-passed at 20 Hz (after the front end: a 20–40 Hz band, the
  electromyogram's part of the ECG band);
* ``motion``: electrode motion — a random walk low-passed at 1.5 Hz plus, every 1–4 s, a step
  that decays in 0.2–0.6 s (electrode slips); after the front end's high-pass the steps are
  beat-like transients, the artefact that mimics QRS complexes;
* ``lead_off``: the whole record replaced by what a device reads with its lead off (the signal
  gone, 2 µV of amplifier noise); ``lead_off_half``: the same from the record's middle on, scored
  on the crops that lie wholly in the lead-off part.

Scores per condition: the record-level CinC F1 against each record's label (a label that heavy noise
may make unreadable: it is a stress score, not the challenge's), AF sensitivity and PPV per record,
and per decision: the share of crops of normal-rhythm records called AF (``af_share_on_normal`` —
what can raise a false AF alarm) and of AF records called AF (``af_share_on_af``), each also
counting only decisions whose last 2-s window passes the worker's signal-quality limit (``_sqi_ok``:
the AF evidence the alarm model accepts, `processors.alarms`; the alarm needs more — 20 s of it
and, by default, an irregular RR), the share of windows below that limit (``sqi_low_share``: the
pipeline knows the signal is poor) and the share of crops called noisy (``noisy_share``).

Real recordings besides (``eegmat``, when the data directory has them): the ECG of the eegmat
subjects (healthy adults at rest and during mental arithmetic, every one in sinus rhythm), per
decision: the share called AF; and the three recordings whose ECG is flat or very weak, a real
lead-off (Subject02_1, Subject13_1, Subject20_2, `EEGMAT_LEAD_OFF`): the share of their crops
called noisy, and called AF, each.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from wardmodels.classifier import FS, RHYTHM_CLASSES, RHYTHM_SAMPLES
from wardmodels.frontend import filter_record

log = logging.getLogger(__name__)

SNRS_DB = {"white": (12.0, 6.0, 0.0), "muscle": (12.0, 6.0, 0.0), "motion": (6.0, 0.0, -6.0)}
LEAD_OFF_UV = 2.0  # amplifier noise of a device whose electrode is off (µV rms)
# eegmat recordings whose ECG is flat or very weak, a real lead-off (the data's README); any other
# below `wardmodels.codec_data.FLAT_ECG_MV` counts too
EEGMAT_LEAD_OFF = ("Subject02_1", "Subject13_1", "Subject20_2")
N, A, NOISY = RHYTHM_CLASSES.index("N"), RHYTHM_CLASSES.index("A"), RHYTHM_CLASSES.index("~")


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of one kind of noise at 128 Hz, unscaled (mV-like units)."""
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "muscle":
        return sosfilt(butter(4, 20.0, "highpass", fs=FS, output="sos"), rng.standard_normal(n))
    if kind == "motion":
        walk = sosfilt(butter(2, 1.5, "lowpass", fs=FS, output="sos"), np.cumsum(rng.standard_normal(n)) / np.sqrt(FS))
        steps = np.zeros(n)
        t = int(rng.uniform(0, 2) * FS)
        while t < n:
            tau = rng.uniform(0.2, 0.6) * FS
            k = np.arange(n - t)
            steps[t:] += rng.normal(0, 1) * np.exp(-k / tau)
            t += int(rng.uniform(1, 4) * FS)
        return walk + steps
    raise ValueError(f"unknown noise {kind!r}")


def _power(x: np.ndarray) -> float:
    return float(np.mean((x - x.mean()) ** 2)) if len(x) else 0.0


def perturbed(raw: list[np.ndarray], kind: str, snr_db: float | None, seed: int) -> list[np.ndarray]:
    """The records after the front end, with ``kind`` added before it (see the module text)."""
    out = []
    for i, x in enumerate(raw):
        rng = np.random.default_rng([seed, i])
        if kind == "clean":
            out.append(filter_record(x))
            continue
        if kind in ("lead_off", "lead_off_half"):
            y = np.asarray(x, np.float64).copy()
            cut = 0 if kind == "lead_off" else len(y) // 2
            # the electrode leaves: the signal is gone, the amplifier's noise stays
            y[cut:] = (y[cut - 1] if cut else 0.0) + rng.normal(0, LEAD_OFF_UV / 1000, len(y) - cut)
            out.append(filter_record(y))
            continue
        fx = filter_record(x).astype(np.float64)
        nz = noise(kind, len(x), rng)
        fn = filter_record(nz).astype(np.float64)  # the front end is linear: filter(x + n) = fx + fn
        ps, pn = _power(fx), _power(fn)
        g = np.sqrt(ps / max(pn, 1e-20) / 10 ** (snr_db / 10)) if ps > 0 else 0.0
        out.append((fx + g * fn).astype(np.float32))
    return out


def _decision_shares(per: list[np.ndarray], which: np.ndarray | None = None) -> dict:
    calls = [q.argmax(1) for q, keep in zip(per, which if which is not None else [True] * len(per)) if keep and len(q)]
    c = np.concatenate(calls) if calls else np.zeros(0, np.int64)
    return {"decisions": int(len(c)),
            **{f"share_{name}": round(float((c == k).mean()), 4) if len(c) else None
               for k, name in enumerate(("normal", "af", "other", "noisy"))}}


def crop_sqi(sig: list[np.ndarray]) -> list[np.ndarray]:
    """The worker's signal quality (`processors.vitals.ecg_quality`) of the 2-s window that ends
    each of a record's crops (`wardmodels.clf_data.crops_for_record`): the quality the alarm model
    holds the decision to (an AF probability on a window below ``sqi_min`` counts as 0)."""
    from processors.vitals import ecg_quality_batch
    from wardmodels.clf_data import crop_ends

    w = 2 * FS
    return [ecg_quality_batch(np.stack([np.pad(x[max(0, e - w):e], (w - min(e, w), 0)) for e in crop_ends(len(x))]), FS)
            for x in sig]


def _scores(y: np.ndarray, rec: np.ndarray, per: list[np.ndarray], sqi: list[np.ndarray]) -> dict:
    from processors.alarms import Thresholds
    from wardstream.eval_classifier import _rhythm_scores

    s = _rhythm_scores(y, rec.argmax(1))
    ok = [q >= Thresholds().sqi_min for q in sqi]

    def share(label: int, gated: bool) -> float | None:
        c = [(q.argmax(1) == A) & (g if gated else True) for q, g, t in zip(per, ok, y) if t == label and len(q)]
        return round(float(np.concatenate(c).mean()), 4) if c else None

    allc = np.concatenate([q.argmax(1) for q in per if len(q)])
    return {"f1_cinc": round(s["f1_cinc"], 4), "f1": s["f1"], "af_sensitivity": s["sensitivity"]["A"],
            "af_ppv": s["ppv"]["A"], "af_share_on_normal": share(N, False), "af_share_on_normal_sqi_ok": share(N, True),
            "af_share_on_af": share(A, False), "af_share_on_af_sqi_ok": share(A, True),
            "noisy_share": round(float((allc == NOISY).mean()), 4),
            "sqi_low_share": round(float(1 - np.concatenate(ok).mean()), 4)}


# what a ward at the devices' default codec level sees: the same perturbations through the codec
CODEC_CONDITIONS = (("clean", None), ("white", 12.0), ("muscle", 12.0), ("motion", 0.0), ("lead_off", None))


def robustness(clf, data_dir: Path, split: str, seed: int = 0, max_records: int | None = None,
               codec: tuple[int, int, str] | None = None) -> dict:
    """``codec``: (wire model id, level, encoder) — also score `CODEC_CONDITIONS` on what the cloud
    decodes at that level (key ``codec_level``)."""
    from wardmodels.clf_data import cinc_split, crop_ends, reconstruct, record_proba

    cs = cinc_split(data_dir, split)
    raw = [np.asarray(s, np.float64) for s in cs.signals][:max_records]
    y = np.array([RHYTHM_CLASSES.index(v) for v in cs.labels])[:max_records]
    out: dict = {"seed": seed, "records": int(len(y)), "conditions": {}}
    conds = [("clean", None)] + [(k, s) for k, ss in SNRS_DB.items() for s in ss]
    for kind, snr in conds:
        sig = perturbed(raw, kind, snr, seed)
        rec, per = record_proba(clf, sig)
        name = kind if snr is None else f"{kind}_{snr:g}dB"
        out["conditions"][name] = {"snr_db": snr, **_scores(y, rec, per, crop_sqi(sig))}
        log.info("robustness %s: %s", name, out["conditions"][name])
    # lead-off: every crop of a fully lead-off record; the crops wholly after the middle of a
    # half lead-off one (a crop ends at a window end; it lies in the lead-off part when it starts there)
    _, per = record_proba(clf, perturbed(raw, "lead_off", None, seed))
    out["lead_off"] = _decision_shares(per)
    _, per = record_proba(clf, perturbed(raw, "lead_off_half", None, seed))
    tail = [q[crop_ends(len(x)) - RHYTHM_SAMPLES >= len(x) // 2] for x, q in zip(raw, per)]
    out["lead_off_half"] = {**_decision_shares(tail), "note": "crops wholly in the lead-off half"}
    if codec is not None:
        model_id, level, encoder = codec
        cl: dict = {"model_id": model_id, "level": level, "encoder": encoder, "conditions": {}}
        for kind, snr in CODEC_CONDITIONS:
            sig = perturbed(raw, kind, snr, seed)
            # a record shorter than one window has no reconstruction: scored on its original
            rec_sig = [r if len(r) else x for r, x in zip(reconstruct(sig, model_id, level, encoder=encoder), sig)]
            rec, per = record_proba(clf, rec_sig)
            if kind == "lead_off":
                cl["lead_off"] = _decision_shares(per)
                continue
            name = kind if snr is None else f"{kind}_{snr:g}dB"
            cl["conditions"][name] = {"snr_db": snr, **_scores(y, rec, per, crop_sqi(rec_sig))}
            log.info("robustness at level %d %s: %s", level, name, cl["conditions"][name])
        out["codec_level"] = cl
    out["eegmat"] = _eegmat(clf, data_dir)
    out["note"] = ("noise added before the front end, scaled to an SNR after it; generators unlike "
                   "the training's (wardstream/eval_robust.py)")
    return out


def _eegmat(clf, data_dir: Path) -> dict:
    """The real recordings: eegmat's ECG, every subject in sinus rhythm; its lead-off traces."""
    from wardmodels.clf_data import record_proba
    from wardmodels.codec_data import FLAT_ECG_MV
    from wardstream.datasets import DataMissing, load_eegmat

    try:
        recs = load_eegmat(data_dir)
    except (DataMissing, FileNotFoundError) as exc:
        return {"skipped": str(exc)}
    sig = [filter_record(r.ecg_mv) for r in recs]
    _, per = record_proba(clf, sig)
    settle = 2 * FS  # the filter's start from rest
    flat = np.array([r.name in EEGMAT_LEAD_OFF or s[settle:].std() < FLAT_ECG_MV for r, s in zip(recs, sig)])
    return {"sinus": {**_decision_shares(per, ~flat), "recordings": int((~flat).sum())},
            "lead_off": {**_decision_shares(per, flat),
                         "recordings": {r.name: _decision_shares([q]) for r, q, f in zip(recs, per, flat) if f}}}
