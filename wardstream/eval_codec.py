"""`wardstream eval codec`: the deployed codec on real recordings, as the pipeline runs it.

* ECG: MIT-BIH (``test`` = DS2, ``all`` = every record present), lead MLII at 128 Hz, causally
  band-passed as the device does, cut into consecutive 2-s windows, encoded by the int8 edge
  encoder (``--encoder fp32`` for the float reference), decoded without an EEG partner (these
  recordings have none). QRS detection runs the pipeline's streaming detector on the
  reconstruction and on the original 128-Hz signal, scored against the ``.atr`` beats.
* EEG: eegmat (``test`` = subjects 24–29, ``all`` = every recording present), each of F3, F4,
  C3, C4 decoded jointly with the simultaneous ECG window, as a bed's frame carries them.
* EEG, Bonn (key ``eeg_bonn``, per set; not in the eegmat keys above): ``test`` = sets N, F
  (interictal, intracranial) and S (seizures), which no model was trained on; ``train`` = Z, O
  (healthy scalp, in the codec's training data); ``all`` = every set present. Each segment,
  resampled to 128 Hz, decoded without an ECG partner (there is none), as an EEG-only device's.

PRD / SNR compare against the band-passed signal the codec is given (which has no DC, so PRD
and PRDN nearly coincide; both are reported). Windows whose reference is flat (lead off) have
no defined PRD and are counted, not scored.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from stream.wire import WIRE_VERSION, LevelSpec, frame_overhead
from wardmodels.frontend import FS, WINDOW, filter_record, normalise
from wardstream import datasets as ds

FLAT = {"ecg": 0.005, "eeg": 0.1}  # window std (mV, µV) below which PRD is undefined
BANDS = {"delta": (0.5, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 13.0), "beta": (13.0, 30.0)}


def _windows(x: np.ndarray) -> np.ndarray:
    n = len(x) // WINDOW
    return x[: n * WINDOW].reshape(n, WINDOW)


def window_metrics(ref: np.ndarray, rec: np.ndarray, modality: str) -> dict[str, np.ndarray]:
    ok = ref.std(1) >= FLAT[modality]
    err = ((ref - rec) ** 2).sum(1)
    sig = (ref ** 2).sum(1)
    dm = ref - ref.mean(1, keepdims=True)
    return {"ok": ok,
            "prd": 100 * np.sqrt(err / np.maximum(sig, 1e-30)),
            "prdn": 100 * np.sqrt(err / np.maximum((dm ** 2).sum(1), 1e-30)),
            "snr": 10 * np.log10(np.maximum(sig, 1e-30) / np.maximum(err, 1e-30))}


def coherence(ref: np.ndarray, rec: np.ndarray) -> float:
    from scipy.signal import coherence as msc

    f, c = msc(ref, rec, fs=FS, nperseg=WINDOW)
    band = (f >= 0.5) & (f <= 40.0)
    return float(np.nanmean(c[band]))


def band_power_errors(ref: np.ndarray, rec: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
    from scipy.signal import welch

    f, pr = welch(ref, fs=FS, nperseg=128, axis=-1)
    _, px = welch(rec, fs=FS, nperseg=128, axis=-1)
    out = {}
    for name, (lo, hi) in BANDS.items():
        sel = (f >= lo) & (f < hi)
        a, b = pr[:, sel].sum(1), px[:, sel].sum(1)
        good = ok & (a > 0)
        out[name] = np.abs(b[good] - a[good]) / a[good]
    return out


def _usage(idx: np.ndarray, k: int, positions: int) -> list[dict]:
    out = []
    for s in range(idx.shape[1] // positions):
        v = idx[:, s * positions:(s + 1) * positions].ravel()
        p = np.bincount(v, minlength=k) / max(v.size, 1)
        nz = p[p > 0]
        out.append({"stage": s + 1, "used": int((p > 0).sum()), "fraction": float((p > 0).mean()),
                    "perplexity": float(np.exp(-(nz * np.log(nz)).sum())) if nz.size else 0.0})
    return out


# --------------------------------------------------------------------------- workers
_CODECS: dict = {}


def _codec(weights: str | None, model_id: int | None = None):
    key = (weights, model_id)
    if key not in _CODECS:
        import torch

        torch.set_num_threads(1)
        from wardmodels import runtime

        if weights:
            model = runtime.load_model(Path(weights))
            _CODECS[key] = runtime.DeployedCodec(0, Path(weights).stem, model, None)
        else:
            _CODECS[key] = runtime.load_deployed(model_id if model_id is not None else runtime.deployed_ids()[0])
    return _CODECS[key]


def _chain_levels(codec, modality: str, ref: np.ndarray, encoder: str) -> dict[int, tuple]:
    """Indices of every Dynamic-Deep chain level (`wardmodels.dynamic`: its own codebook on the
    shared trunk) -> {level: (indices, equal to the float chain's where int8, else None)}; the
    int8 levels come from one pass of the device's analysis, as a device computes them."""
    chain = [L for L in codec.levels if L > codec.stages]
    if not chain:
        return {}
    if encoder != "int8":
        return {L: (codec.encode(modality, ref, L, encoder)[1], None) for L in chain}
    x, codes = normalise(np.atleast_2d(ref), modality)
    idx, _ = codec.analyse(modality, x, codes)
    return {L: (idx[L], codec.encode(modality, ref, L, "fp32")[1] == idx[L]) for L in chain}


def _level(codec, idx: np.ndarray, chain: dict, level: int) -> np.ndarray:
    """A level's indices: the first stages of the base encoding, or the chain level's own."""
    return idx[:, :codec.n_indices(level)] if level <= codec.stages else chain[level][0]


def _keep_chain(out: dict, chain: dict) -> None:
    for L, (i, agree) in chain.items():
        out["dd_idx"].setdefault(L, []).append(i)
        if agree is not None:
            out["dd_agree"].setdefault(L, []).append(agree)


def _ecg_record(args) -> dict:
    from wardstream.eval_qrs import detect_stream, match_beats

    data_dir, rec_name, weights, model_id, encoder, tol = args
    codec = _codec(weights, model_id)
    r = ds.load_mitdb(Path(data_dir), rec_name)
    ref = _windows(filter_record(r.ecg_mv))
    codes, idx = codec.encode("ecg", ref, 1, encoder)
    out = {"record": rec_name, "windows": len(ref), "idx": idx, "codes": codes, "levels": {}}
    if encoder == "int8":
        _, fp = codec.encode("ecg", ref, 1, "fp32")
        out["agree"] = (fp == idx)
    end_s = len(ref) * WINDOW / FS - 0.3
    beats = r.beat_times_s[r.beat_times_s < end_s]
    det0 = detect_stream(r.ecg_mv[: len(ref) * WINDOW])
    out["qrs_original"] = match_beats(beats, det0[det0 < end_s], tol)
    out["dd_idx"], out["dd_agree"] = {}, {}
    chain = _chain_levels(codec, "ecg", ref, encoder)
    _keep_chain(out, chain)
    for level in codec.levels:
        rec = codec.decode({"ecg": _level(codec, idx, chain, level), "eeg": None}, {"ecg": codes})["ecg"]
        wm = window_metrics(ref, rec, "ecg")
        det = detect_stream(rec.ravel())
        out["levels"][level] = {**wm, "coherence": coherence(ref.ravel(), rec.ravel()),
                                "qrs": match_beats(beats, det[det < end_s], tol)}
    return out


def _eeg_recording(args) -> dict:
    data_dir, name, weights, model_id, encoder = args
    codec = _codec(weights, model_id)
    sub = int(name[7:9])
    rec = next(r for r in ds.load_eegmat(Path(data_dir), [sub]) if r.name == name)
    ecg_ref = _windows(filter_record(rec.ecg_mv))
    ecg_codes, ecg_idx = codec.encode("ecg", ecg_ref, 1, encoder)
    out = {"recording": name, "channels": [], "idx": [], "codes": [], "agree": [], "dd_idx": {}, "dd_agree": {}}
    ecg_chain = _chain_levels(codec, "ecg", ecg_ref, encoder)
    for c in range(rec.eeg_uv.shape[0]):
        ref = _windows(filter_record(rec.eeg_uv[c]))
        codes, idx = codec.encode("eeg", ref, 1, encoder)
        out["idx"].append(idx)
        out["codes"].append(codes)
        if encoder == "int8":
            out["agree"].append(codec.encode("eeg", ref, 1, "fp32")[1] == idx)
        chain = _chain_levels(codec, "eeg", ref, encoder)
        _keep_chain(out, chain)
        ch = {"levels": {}}
        for level in codec.levels:
            pair = {"ecg": _level(codec, ecg_idx, ecg_chain, level), "eeg": _level(codec, idx, chain, level)}
            dec = codec.decode(pair, {"ecg": ecg_codes, "eeg": codes})
            wm = window_metrics(ref, dec["eeg"], "eeg")
            lv = {**wm, "coherence": coherence(ref.ravel(), dec["eeg"].ravel()),
                  "bandpower": band_power_errors(ref, dec["eeg"], wm["ok"])}
            if c == 0:
                lv["ecg"] = window_metrics(ecg_ref, dec["ecg"], "ecg")
            ch["levels"][level] = lv
        out["channels"].append(ch)
    return out


def _bonn_set(args) -> dict:
    """One Bonn set's segments through the codec at every level, without an ECG partner."""
    data_dir, bset, weights, model_id, encoder, limit = args
    codec = _codec(weights, model_id)
    segs = ds.load_bonn(Path(data_dir), bset)[:limit]
    refs = [_windows(filter_record(s)) for s in segs]
    ref = np.concatenate(refs)
    codes, idx = codec.encode("eeg", ref, 1, encoder)
    chain = _chain_levels(codec, "eeg", ref, encoder)
    cuts = np.cumsum([len(r) for r in refs])[:-1]
    out = {"set": bset, "segments": len(segs), "levels": {}}
    for level in codec.levels:
        rec = codec.decode({"ecg": None, "eeg": _level(codec, idx, chain, level)}, {"eeg": codes})["eeg"]
        wm = window_metrics(ref, rec, "eeg")
        out["levels"][level] = {**wm, "bandpower": band_power_errors(ref, rec, wm["ok"]),
                                "coherence": [coherence(a.ravel(), b.ravel())
                                              for a, b in zip(np.split(ref, cuts), np.split(rec, cuts))]}
    return out


def _bonn_summary(rows: list[dict], level: int) -> dict:
    out = {}
    for r in rows:
        lv = r["levels"][level]
        ok = lv["ok"]
        out[r["set"]] = {"segments": r["segments"], "eeg_prd": _dist(lv["prd"][ok]),
                         "eeg_snr_db": float(lv["snr"][ok].mean()) if ok.any() else None,
                         "eeg_coherence": float(np.nanmean(lv["coherence"])),
                         "eeg_bandpower_error": {b: float(v.mean()) if v.size else None
                                                 for b, v in lv["bandpower"].items()},
                         "windows_scored": int(ok.sum()), "windows_flat": int((~ok).sum())}
    return out


BONN_SETS = {"test": "NFS", "train": "ZO", "all": "ZONFS"}
BONN_NOTE = ("Bonn EEG (Andrzejak et al. 2001), per set, each segment resampled 173.61 -> 128 Hz and decoded "
             "without an ECG partner: Z / O healthy scalp (eyes open / closed; in the codec's training data), "
             "N / F interictal intracranial, S seizures (intracranial): out of the training distribution")


def _wire_spec(codec):
    """The wire format's view of a deployed codec (its coding tables, if any)."""
    from stream.wire import REGISTRY
    from wardmodels.wire_codec import register_deployed

    register_deployed()
    return REGISTRY.get(codec.model_id)


def _wire_coded_bits(spec, modality: str, codes: np.ndarray, idx: np.ndarray, level: int) -> float | None:
    """Mean bits of the scale code and indices of each window coded as a section of its own
    (`stream.vqcode`, its ending included), or None without tables for the level."""
    from stream import vqcode
    from stream.wire import Modality

    mod = Modality.ECG if modality == "ecg" else Modality.EEG
    if not spec.codes(mod, level):
        return None
    m = spec.section_model(mod, level)
    return float(np.mean([vqcode.coded_bits(m, c, i) for c, i in zip(codes, idx)]))


def _dist(v: np.ndarray) -> dict:
    v = np.asarray(v, dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "median": None, "p90": None, "n": 0}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "p90": float(np.percentile(v, 90)),
            "n": int(v.size)}


class LevelError(ValueError):
    """A level the codec does not have (the CLI prints it as one line)."""


def check_level(level: int, weights: str | None = None, model_id: int | None = None) -> None:
    """A `LevelError` unless ``level`` is one of the codec's (checked before the work, not after it);
    the caller's torch thread count is left as it was (`_codec` sets one thread for the workers)."""
    import torch

    threads = torch.get_num_threads()
    try:
        codec = _codec(weights, model_id)
    finally:
        torch.set_num_threads(threads)
    if level not in codec.levels:
        raw = " (level 0 sends windows raw: nothing to reconstruct)" if level == 0 else ""
        raise LevelError(f"--level {level}: the levels of codec {codec.name} are "
                         f"{', '.join(map(str, codec.levels))}{raw}")


def evaluate(data_dir: Path, split: str = "test", level: int = 1, encoder: str = "int8",
             weights: str | None = None, jobs: int | None = None, tol_s: float = 0.15,
             max_records: int | None = None, model_id: int | None = None) -> dict:
    data_dir = Path(data_dir)
    jobs = jobs or min(2, os.cpu_count() or 1)
    if weights and encoder == "int8":
        encoder = "fp32"  # a bare checkpoint has no calibrated int8 encoder
    check_level(level, weights, model_id)
    ecg_recs = ds.mitdb_records(data_dir, split)
    eeg_names = []
    if (data_dir / "eegmat" / "eegmat_128hz.npz").exists():
        with np.load(data_dir / "eegmat" / "eegmat_128hz.npz") as z:
            subs = range(24, 30) if split == "test" else (range(0, 24) if split == "train" else None)
            eeg_names = sorted(k for k in z.files if k.startswith("Subject")
                               and (subs is None or int(k[7:9]) in subs))
    bonn_sets = []
    if (data_dir / "bonn" / "bonn_eeg.npz").exists():
        with np.load(data_dir / "bonn" / "bonn_eeg.npz") as z:
            have = set(z["set"].astype(str))
        bonn_sets = [b for b in BONN_SETS.get(split, "") if b in have]
    if max_records:
        ecg_recs, eeg_names = ecg_recs[:max_records], eeg_names[:max_records]
    if not ecg_recs and not eeg_names and not bonn_sets:
        raise ds.DataMissing(f"no MIT-BIH records, eegmat recordings or Bonn sets of split {split!r} under {data_dir}")
    with ProcessPoolExecutor(max_workers=jobs) as ex:
        ecg_rows = list(ex.map(_ecg_record, [(str(data_dir), r, weights, model_id, encoder, tol_s)
                                             for r in ecg_recs]))
        eeg_rows = list(ex.map(_eeg_recording, [(str(data_dir), n, weights, model_id, encoder) for n in eeg_names]))
        bonn_rows = list(ex.map(_bonn_set, [(str(data_dir), b, weights, model_id, encoder, max_records)
                                            for b in bonn_sets]))
    codec = _codec(weights, model_id)
    out = summarise(codec, ecg_rows, eeg_rows, split, level, encoder, weights, data_dir)
    if bonn_rows:
        out["eeg_bonn"] = _bonn_summary(bonn_rows, level)
        out["eeg_bonn_note"] = BONN_NOTE
        for lv, d in out["levels"].items():
            d["eeg_bonn"] = _bonn_summary(bonn_rows, lv)
    return out


def summarise(codec, ecg_rows, eeg_rows, split, level, encoder, weights, data_dir) -> dict:
    from wardmodels import entropy

    per_level = {}
    for lv in codec.levels:
        d: dict = {"level": lv, "stages": codec.stages_for(lv), "indices": codec.n_indices(lv)}
        if ecg_rows:
            ok = np.concatenate([r["levels"][lv]["ok"] for r in ecg_rows])
            get = lambda k: np.concatenate([r["levels"][lv][k] for r in ecg_rows])[ok]  # noqa: E731
            tp, fn, fp = (sum(r["levels"][lv]["qrs"][i] for r in ecg_rows) for i in range(3))
            d.update(ecg_prd=_dist(get("prd")), ecg_prdn=_dist(get("prdn")),
                     ecg_snr_db=float(get("snr").mean()),
                     ecg_coherence=float(np.mean([r["levels"][lv]["coherence"] for r in ecg_rows])),
                     ecg_windows_scored=int(ok.sum()), ecg_windows_flat=int((~ok).sum()),
                     qrs_sensitivity=tp / max(1, tp + fn), qrs_ppv=tp / max(1, tp + fp),
                     qrs_counts={"tp": tp, "fn": fn, "fp": fp})
        if eeg_rows:
            chans = [ch["levels"][lv] for r in eeg_rows for ch in r["channels"]]
            ok = np.concatenate([c["ok"] for c in chans])
            get = lambda k: np.concatenate([c[k] for c in chans])[ok]  # noqa: E731
            d.update(eeg_prd=_dist(get("prd")), eeg_prdn=_dist(get("prdn")),
                     eeg_snr_db=float(get("snr").mean()),
                     eeg_coherence=float(np.mean([c["coherence"] for c in chans])),
                     eeg_bandpower_error={b: float(np.mean(np.concatenate([c["bandpower"][b] for c in chans])))
                                          for b in BANDS},
                     eeg_windows_scored=int(ok.sum()), eeg_windows_flat=int((~ok).sum()))
            e = [r["channels"][0]["levels"][lv]["ecg"] for r in eeg_rows]
            eok = np.concatenate([x["ok"] for x in e])
            d["ecg_prd_eegmat"] = _dist(np.concatenate([x["prd"] for x in e])[eok])
        per_level[lv] = d

    idx = {}
    if ecg_rows:
        idx["ecg"] = np.concatenate([r["idx"] for r in ecg_rows])
    if eeg_rows:
        idx["eeg"] = np.concatenate([i for r in eeg_rows for i in r["idx"]])
    usage = {m: _usage(v, codec.codebook_size, codec.positions) for m, v in idx.items()}
    codes = {}
    if ecg_rows:
        codes["ecg"] = np.concatenate([r["codes"] for r in ecg_rows])
    if eeg_rows:
        codes["eeg"] = np.concatenate([c for r in eeg_rows for c in r["codes"]])
    wire = _wire_spec(codec) if weights is None else None
    for lv in codec.levels:
        d = per_level[lv]
        n, k = codec.n_indices(lv), codec.level_codebook_size(lv)
        fixed = codec.bits(lv)
        if lv <= codec.stages:
            coded = {m: entropy.measure(codec, m, v[:, :n]) for m, v in idx.items()}
        else:  # a chain level: its own codebook, no committed prior, so no entropy coder yet
            dd = {m: np.concatenate([a for r in rows for a in r["dd_idx"][lv]])
                  for m, rows in (("ecg", ecg_rows), ("eeg", eeg_rows)) if rows}
            d["codebook_usage"] = {m: _usage(v, k, n)[0] for m, v in dd.items()}
            if encoder == "int8":
                d["int8_index_agreement"] = {
                    m: float(np.concatenate([a.ravel() for r in rows for a in r["dd_agree"][lv]]).mean())
                    for m, rows in (("ecg", ecg_rows), ("eeg", eeg_rows)) if rows}
            coded = {m: {"bits_per_window_mean": float(n * np.ceil(np.log2(k))),
                         "coder": "none (no prior committed for this level)"} for m in dd}
        section = LevelSpec(lv, n, k, side="scale8").section_bytes(WINDOW, WIRE_VERSION)
        frame_bytes = frame_overhead(WIRE_VERSION) + 2 * section  # the wire format devices send
        ent = {m: c["bits_per_window_mean"] + 8 for m, c in coded.items()}  # + scale byte
        d["bits_per_window"] = {
            "fixed_per_modality": fixed,
            "entropy_coded_per_modality": ent,
            "entropy_coder": {m: {k: v for k, v in c.items() if k != "bits_per_window_mean"} for m, c in coded.items()},
            "frame_bytes_fixed_ecg_eeg": frame_bytes,
        }
        d["compression_ratio"] = {
            "fixed": 16 * WINDOW / fixed,
            "entropy_coded": {m: 16 * WINDOW / b for m, b in ent.items()},
            "frame_fixed_ecg_eeg": 2 * 16 * WINDOW / (8 * frame_bytes),
        }
        if wire is not None and lv <= codec.stages:  # as devices send it (wire flag bit 6)
            on_wire = {m: _wire_coded_bits(wire, m, codes[m], v[:, :n], lv) for m, v in idx.items()}
            on_wire = {m: b for m, b in on_wire.items() if b is not None}
            if on_wire:
                d["bits_per_window"]["wire_coded_per_modality"] = on_wire
                d["bits_per_window"]["wire_coding"] = ("scale code + indices as devices send them entropy-coded "
                                                       f"(wire flag bit 6, {codec.entry.get('wire_tables')}; "
                                                       "the level byte and the frame's padding not included)")
                d["compression_ratio"]["wire_coded"] = {m: 16 * WINDOW / b for m, b in on_wire.items()}
    agree = {}
    if encoder == "int8":
        a_ecg = [r["agree"] for r in ecg_rows]
        a_eeg = [a for r in eeg_rows for a in r["agree"]]
        allv = np.concatenate([a.ravel() for a in a_ecg + a_eeg]) if (a_ecg or a_eeg) else np.zeros(0)
        st1 = np.concatenate([a[:, : codec.positions].ravel() for a in a_ecg + a_eeg]) if allv.size else allv
        agree = {"all_positions": float(allv.mean()) if allv.size else None,
                 "stage1_positions": float(st1.mean()) if st1.size else None,
                 "ecg": float(np.concatenate([a.ravel() for a in a_ecg]).mean()) if a_ecg else None,
                 "eeg": float(np.concatenate([a.ravel() for a in a_eeg]).mean()) if a_eeg else None}
    head = per_level[level]
    qrs0 = [sum(r["qrs_original"][i] for r in ecg_rows) for i in range(3)] if ecg_rows else [0, 0, 0]
    out = {
        "codec": codec.name, "weights": weights or "deployed", "encoder": encoder, "split": split,
        "data_dir": str(data_dir), "level": level,
        "ecg_records": [r["record"] for r in ecg_rows], "eeg_recordings": [r["recording"] for r in eeg_rows],
        **{k: v for k, v in head.items() if k not in ("level", "stages")},
        "qrs_sensitivity_original": qrs0[0] / max(1, qrs0[0] + qrs0[1]) if ecg_rows else None,
        "qrs_ppv_original": qrs0[0] / max(1, qrs0[0] + qrs0[2]) if ecg_rows else None,
        "codebook_usage": usage,
        "encoder_int8_bytes": codec.edge.nbytes() if codec.edge is not None else None,
        "int8_index_agreement": agree.get("all_positions"),
        "int8_index_agreement_detail": agree,
        "levels": per_level,
    }
    return out
