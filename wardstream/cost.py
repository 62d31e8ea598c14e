"""`wardstream cost`: what a ward costs to run per month, for each way of sending the signals.

Options compared in one run, every bed sending ECG + EEG (as the simulated beds do), one frame
per 2-s window:

* ``raw16``: both modalities as int16 samples (wire level 0);
* ``zstd``: the same int16 windows, each compressed on the device by zstd (level 19) with a 4 KiB
  dictionary trained on training-split windows (measured here on held-out windows);
* ``lossless``: the same int16 windows as the devices' raw level sends them by default
  (`stream.lossless`: polynomial predictor and Rice codes, measured on the same held-out windows);
* ``codec_L1`` / ``codec_L2``: the VQ codec at a fixed level (64 / 32 indices per modality);
* ``dynamic_deep``: ECG at the level its edge predictor picks under the bound (the level mix
  *measured* by `wardstream eval dynamic-deep` on the chosen split; its windows sent raw at their
  measured lossless size unless ``raw_lossless`` is off), EEG at a fixed level; plus the predicted
  error each of its frames carries and the audit bursts' reference ECG at the configured period
  (``WARDSTREAM_AUDIT_EVERY_S``), amortised per window.

Bytes are exact wire bytes (`stream.wire`: frame header, sections, CRC) plus a stated Kafka
per-record overhead. Decode compute is measured here (one thread, this machine). Prices are list
prices as noted by the project (``PRICES``: region, service, unit and the date noted); they are
inputs, not measurements — check them before quoting money. Everything that costs the same for
every option (the always-on broker cluster, the worker VM, InfluxDB writes of vitals, the worker's
per-bed state written to its changelog topic after every window) is listed too, so the totals are
what a hospital would pay, not only what compression changes.
"""

from __future__ import annotations

import time

import numpy as np

from stream.topics import frames_retention_ms, segment_ms
from wardmodels import DD_MODEL
from wardstream.settings import Settings

WINDOWS_PER_DAY = 86400 // 2
DAYS_PER_MONTH = 30
GB = 1e9

PRICES = {
    "noted": "2026-11 (project notes; AWS us-east-1 and InfluxDB Cloud list prices, on-demand)",
    "msk_serverless_cluster_hour": 0.75,
    "msk_serverless_partition_hour": 0.0015,
    "msk_serverless_data_in_per_gb": 0.10,
    "msk_serverless_data_out_per_gb": 0.05,
    "msk_serverless_storage_per_gb_month": 0.10,
    "s3_standard_per_gb_month": 0.023,
    "ec2_c7g_large_per_hour": 0.0725,  # 2 vCPU
    "ec2_vcpu_hour": 0.0725 / 2,
    "influxdb_cloud_data_in_per_mb": 0.0025,
    "influxdb_cloud_storage_per_gb_hour": 0.002,
}
_FRAMES_KEPT_MS = frames_retention_ms(Settings())  # the deployed frames topic's retention
ASSUMPTIONS = {
    "kafka_record_overhead_bytes": 24,  # key (10 B) + record varints/attributes; batch header amortised
    # what the deployed frames topic keeps (`stream.topics`): its retention and, at most, one more
    # segment that is not closed yet (48 h + 6 h); until 2026-12-07 this said 7 days
    "broker_retention_days": (_FRAMES_KEPT_MS + segment_ms(_FRAMES_KEPT_MS)) / 86400e3,
    "consumers_per_frame": 1,  # the worker group reads each frame once
    "partitions": 16 + 4 + 1,  # frames, dead letters, control
    "archive_days": 30,  # wire stream kept in object storage for review
    # InfluxDB: what the worker writes per window is measured (`worker_writes_per_window`: line
    # protocol through the worker's own batch code, classifiers included), kept for the worker's
    # retention policies (`processors.retention`: live 7 d, waveform strips 2 h, one-minute
    # trend aggregates 2 years) and stored at its line-protocol size (an upper bound: the storage
    # engine compresses; the price list bills data in by the MB of line protocol)
    "worker_vms": 1,  # always-on worker (QRS, classifiers, alarms) for every option
    # the worker's per-bed state is written to its changelog topic once per window (measured size:
    # `worker_writes_per_window`); compacted, so what it keeps is small: only data in is priced
    "changelog_key_bytes": 10,
    "eeg_level_dynamic": 2,
}


def usd_per_wire_byte_month() -> float:
    """Money per month for every wire byte a bed sends per second, by the same terms as
    `cost_report` uses (Kafka record overhead aside): broker data in and out, broker storage
    for the retention, archive. The cost dashboard multiplies observed bytes/s by it."""
    a, p = ASSUMPTIONS, PRICES
    bytes_month = DAYS_PER_MONTH * 86400  # one byte/s for a month
    gb = bytes_month / GB
    return (gb * p["msk_serverless_data_in_per_gb"]
            + gb * a["consumers_per_frame"] * p["msk_serverless_data_out_per_gb"]
            + gb / DAYS_PER_MONTH * a["broker_retention_days"] * p["msk_serverless_storage_per_gb_month"]
            + gb / DAYS_PER_MONTH * a["archive_days"] * p["s3_standard_per_gb_month"])


def worker_writes_per_window(waveform_hz: int = 32, windows: int = 40, beds: int = 4) -> dict:
    """What the worker writes per window and bed, measured through `processors.stages.run_batch`
    (classifiers and alarms included) on simulated beds once their buffers are full (the last half
    of ``windows`` windows each): line-protocol bytes to InfluxDB by retention policy, the series
    per bed that the one-minute trend aggregates (`processors.retention.DOWNSAMPLE`) keep, and the
    bed state it writes to its changelog (`processors.bed.BedState.to_bytes`)."""
    from device_sim.sources import SyntheticBed
    from device_sim.ward import Device, RawEncoder
    from processors.bed import BedState
    from processors.classify import Classifiers
    from processors.decode import reconstruct
    from processors.retention import DOWNSAMPLE
    from processors.stages import run_batch
    from stream.topics import bed_key
    from stream.wire import decode_frame

    clf = Classifiers()
    devs = [Device(b, SyntheticBed(b, seed=0), 1_800_000_000_000_000, RawEncoder()) for b in range(1, beds + 1)]
    states: dict = {}
    live = strip = n = 0
    trend_series, state_sizes = set(), []
    for k in range(windows):
        decoded = []
        for d in devs:
            raw, _ = d.next_frame()
            f = decode_frame(raw)
            decoded.append((bed_key(f.bed_id), f, reconstruct(f), len(raw)))
        res = run_batch(decoded, lambda key: states.get(key) or BedState(), clf, waveform_hz=waveform_hz)
        states.update(res.states)
        if k >= windows // 2:
            live += sum(len(p) + 1 for p in res.points)
            strip += sum(len(p) + 1 for p in res.strip_points)
            n += len(decoded)
            trend_series |= {p.split(" ")[0] for p in res.points if p.split(",")[0] in DOWNSAMPLE}
            state_sizes += [len(st.to_bytes()) for st in res.states.values()]
    trend_bytes = [len(p) + 1 for p in res.points if p.split(",")[0] in DOWNSAMPLE]
    return {"live": live / n, "strip": strip / n, "waveform_hz": waveform_hz,
            "trend_series_per_bed": len(trend_series) / beds,
            "trend_bytes_per_point": float(np.mean(trend_bytes)) if trend_bytes else 0.0,
            "state": float(np.mean(state_sizes))}


def _influx_volume(ib: dict, beds: int) -> tuple[float, dict]:
    """(line-protocol bytes written a month, GB stored per retention policy) for the measured
    `worker_writes_per_window` of ``beds`` beds (steady state: every policy's retention full)."""
    from processors.retention import LIVE_SECONDS, STRIP_SECONDS, TREND_SECONDS

    per_bed_s = 1 / 2.0  # windows per second and bed
    trend_per_bed_s = ib["trend_series_per_bed"] * ib["trend_bytes_per_point"] / 60.0
    month_s = 86400 * DAYS_PER_MONTH
    written = beds * ((ib["live"] + ib["strip"]) * per_bed_s + trend_per_bed_s) * month_s
    stored = {"live": beds * ib["live"] * per_bed_s * LIVE_SECONDS / GB,
              "strip": beds * ib["strip"] * per_bed_s * STRIP_SECONDS / GB,
              "trend": beds * trend_per_bed_s * TREND_SECONDS / GB}
    return written, stored


def _measured_section_bytes(data_dir, n_train: int = 4000, n_test: int = 4000, seed: int = 0,
                            version: int | None = None) -> tuple[dict, dict]:
    """Mean bytes of a zstd-compressed int16 window (+ section header and side) per modality,
    and of the same held-out windows lossless-coded as the raw level sends them."""
    import zstandard as zstd

    from stream.wire import RAW_LEVEL, WIRE_VERSION, raw_section_bytes
    from wardstream import datasets as ds

    version = version or WIRE_VERSION
    head = RAW_LEVEL.section_bytes(256, version) - RAW_LEVEL.payload_bytes(256)  # section head + f32 side
    rng = np.random.default_rng(seed)
    out, ll = {}, {}
    present = ds.mitdb_records_present(data_dir)
    tr = [r for r in present if r in ds.DS1][:6] or present[: max(1, len(present) // 2)]
    te = [r for r in present if r in ds.DS2][:6] or present[len(present) // 2:]
    ecg_tr = [ds.load_mitdb(data_dir, r).ecg_mv for r in tr]
    ecg_te = [ds.load_mitdb(data_dir, r).ecg_mv for r in te]
    eeg = ds.load_eegmat(data_dir)
    eeg_tr = [c for rec in eeg[: len(eeg) // 2] for c in rec.eeg_uv]
    eeg_te = [c for rec in eeg[len(eeg) // 2:] for c in rec.eeg_uv]
    for name, tr, te, gain in (("ecg", ecg_tr, ecg_te, 0.001), ("eeg", eeg_tr, eeg_te, 0.1)):
        def windows(recs, n):
            ws = []
            for _ in range(n):
                r = recs[rng.integers(len(recs))]
                s = rng.integers(0, len(r) - 256)
                ws.append(np.clip(np.rint(r[s:s + 256] / gain), -32768, 32767).astype(">i2").tobytes())
            return ws
        d = zstd.train_dictionary(4096, windows(tr, n_train))
        c = zstd.ZstdCompressor(level=19, dict_data=d)
        test = windows(te, n_test)
        sizes = [len(c.compress(w)) for w in test]
        out[name] = {"mean_payload_bytes": float(np.mean(sizes)), "section_bytes": head + float(np.mean(sizes)),
                     "dictionary_bytes": 4096, "test_windows": n_test}
        ll_sizes = [raw_section_bytes(np.frombuffer(w, ">i2"), True, version) for w in test]
        ll[name] = {"mean_payload_bytes": float(np.mean(ll_sizes)) - head,  # its u16 length included
                    "section_bytes": float(np.mean(ll_sizes)), "test_windows": n_test}
    return out, ll


def _measured_coded_section_bytes(data_dir, codec, n: int = 2000, seed: int = 0) -> dict | None:
    """Mean bytes of a codec-level section entropy-coded as devices send it (wire flag bit 6,
    the model's tables; level byte included, the frame's stream padding not), per modality and
    level, on held-out windows as a device's front end sees them: MIT-BIH DS2 (ECG) and eegmat
    subjects 24-29 (EEG, every channel). None without tables."""
    from stream import vqcode
    from stream.wire import REGISTRY, Modality
    from wardmodels.frontend import filter_record, normalise
    from wardmodels.wire_codec import register_deployed
    from wardmodels.wire_tables import level_indices
    from wardstream import datasets as ds

    register_deployed()
    spec = REGISTRY[codec.model_id]
    if not codec.entry.get("wire_tables") or not all(spec.codes(m, L) for m in Modality for L in codec.levels):
        return None
    rng = np.random.default_rng(seed)
    present = ds.mitdb_records_present(data_dir)
    sigs = {"ecg": [filter_record(ds.load_mitdb(data_dir, r).ecg_mv) for r in present if r in ds.DS2]
            or [filter_record(ds.load_mitdb(data_dir, r).ecg_mv) for r in present],
            "eeg": [filter_record(c) for rec in ds.load_eegmat(data_dir, range(24, 30)) for c in rec.eeg_uv]}
    out = {"windows_per_modality": n, "tables": codec.entry["wire_tables"],
           "note": "level byte + the section's share of the frame's coded stream (its ending included); "
                   "MIT-BIH DS2 and eegmat 24-29 windows"}
    for m, recs in sigs.items():
        if not recs:
            return None
        w = []
        for _ in range(n):
            r = recs[rng.integers(len(recs))]
            s = rng.integers(0, len(r) - 256)
            w.append(r[s:s + 256])
        xn, codes = normalise(np.stack(w), m)
        idx = level_indices(codec, m, xn, codes)
        mod = Modality.ECG if m == "ecg" else Modality.EEG
        out[m] = {str(L): float(np.mean([1 + vqcode.coded_bits(spec.section_model(mod, L), codes[t], idx[L][t]) / 8
                                         for t in range(n)])) for L in codec.levels}
    return out


def _decode_seconds_per_window(codec, level: int, n: int = 1024) -> float:
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    width = codec.n_indices(level)
    k = codec.level_codebook_size(level)
    idx = rng.integers(0, k, (n, width)).astype(np.uint16)
    codes = np.full(n, 150, np.uint8)
    codec.decode({"ecg": idx[:64], "eeg": None}, {"ecg": codes[:64], "eeg": None})
    t = time.perf_counter()
    for i in range(0, n, 256):
        codec.decode({"ecg": idx[i:i + 256], "eeg": None}, {"ecg": codes[i:i + 256], "eeg": None})
    return (time.perf_counter() - t) / n


def cost_report(settings, beds: int = 200, split: str = "test", bound: float | None = None,
                model_id: int = DD_MODEL) -> dict:
    from stream.wire import AUDIT_WINDOWS, REGISTRY, audit_period_windows, frame_overhead
    from wardmodels.runtime import load_deployed
    from wardmodels.wire_codec import register_deployed
    from wardstream.eval_dynamic import (coded_level_bits, device_pred_bits, front_state_bits, part_for, per_window_bits,
                                         raw_level_bits, record_starts, reference_bits, score, section_bits)

    register_deployed()
    codec = load_deployed(model_id)
    spec = REGISTRY[model_id]

    version = settings.wire_version  # the frame format the devices send

    def plain(level):
        return spec.level(level).section_bytes(256, version)

    # wire flag bit 6: devices send their sections entropy-coded (the frame when shorter; counted
    # here always coded, plus a whole byte of stream padding per frame: no less than they send)
    coded = _measured_coded_section_bytes(settings.data_dir, codec) \
        if settings.wire_coded and version == 2 else None

    def sec(level, modality="ecg"):
        return coded[modality][str(level)] if coded is not None and level > 0 else plain(level)

    pad = 1.0 if coded is not None else 0.0

    pr = codec.predictor_of(settings.dd_predictor)
    bound = float(bound if bound is not None else pr.meta["deployed_bound"])
    part = part_for(settings.data_dir, split, model_id, pr)
    pred, err = pr.predict(part.features(pr.n_in)), part.errors(pr.weights)
    bits = {L: section_bits(codec, L, version=version) for L in range(0, 6)}
    cb = coded_level_bits(settings.data_dir, split, part, codec, shorter=False) if coded is not None else None
    if cb is not None:  # the ECG gains as `eval dynamic-deep` counts them: each window's own section, or
        # the bit-packed one where that is shorter
        fixed = np.array([bits[L] for L in range(1, 6)], np.float64)
        bits = per_window_bits(bits, np.minimum(cb, fixed[None, :]), len(pred))
    rb = raw_level_bits(settings.data_dir, split, part, version) if settings.raw_lossless else None
    pred_bits = device_pred_bits(version)
    starts = record_starts(part)
    sc, lv = score(pred, err, bits, pr, bound, rb,
                   lambda p_, l_: pred_bits(p_, l_) + front_state_bits(l_, starts, version))
    pred_bytes = float(pred_bits(pred, lv).mean()) / 8  # 0 where wire v2 packs it into the level byte
    # the front end's state, with each raw window after a codec-level one (wire v2)
    state_bytes_dd = float(front_state_bits(lv, starts, version).mean()) / 8
    mix = np.bincount(lv, minlength=6) / len(lv)
    raw_sent = float(rb[lv == 0].mean()) / 8 if rb is not None and (lv == 0).any() else float(sec(0))
    if cb is not None:  # the coded ECG section of each window at the level it was sent at
        level_bytes = {L: float(cb[lv == L, L - 1].mean()) / 8 if (lv == L).any() else 0.0 for L in range(1, 6)}
    else:
        level_bytes = {L: float(sec(L)) for L in range(1, 6)}
    # what a device that picks its level adds to its frames: its predicted error, and every
    # WARDSTREAM_AUDIT_EVERY_S a burst of AUDIT_WINDOWS windows carrying the reference ECG (its
    # size measured on every 20th window of the split, lossless-coded as the devices send it)
    sample = np.arange(len(lv)) % 20 == 0
    ref_bytes = float(reference_bits(settings.data_dir, split, part, sample, settings.raw_lossless, version)[sample].mean()) / 8
    audit_every = audit_period_windows(settings.audit_every_s)
    audit_bytes = ref_bytes * AUDIT_WINDOWS / audit_every if audit_every else 0.0
    ecg_dd = float(mix[0] * raw_sent + sum(mix[L] * level_bytes[L] for L in range(1, 6))) + pred_bytes + audit_bytes \
        + state_bytes_dd
    zs, ll = _measured_section_bytes(settings.data_dir, version=version)
    eeg_lvl = ASSUMPTIONS["eeg_level_dynamic"]
    options = {
        "raw16": {"ecg": sec(0), "eeg": sec(0), "decode_levels": {}},
        "zstd": {"ecg": zs["ecg"]["section_bytes"], "eeg": zs["eeg"]["section_bytes"], "decode_levels": {}},
        "lossless": {"ecg": ll["ecg"]["section_bytes"], "eeg": ll["eeg"]["section_bytes"], "decode_levels": {}},
        "codec_L1": {"ecg": sec(1), "eeg": sec(1, "eeg"), "pad": pad, "decode_levels": {1: 2.0}},
        "codec_L2": {"ecg": sec(2), "eeg": sec(2, "eeg"), "pad": pad, "decode_levels": {2: 2.0}},
        "dynamic_deep": {"ecg": ecg_dd, "eeg": sec(eeg_lvl, "eeg"), "pad": pad,
                         "decode_levels": {L: float(mix[L]) + (1.0 if L == eeg_lvl else 0.0) for L in range(1, 6)}},
    }
    dec_s = {L: _decode_seconds_per_window(codec, L) for L in range(1, 6)}
    a, p = ASSUMPTIONS, PRICES
    hours = 24 * DAYS_PER_MONTH
    fixed = {"broker_cluster": p["msk_serverless_cluster_hour"] * hours,
             "broker_partitions": p["msk_serverless_partition_hour"] * a["partitions"] * hours,
             "worker_vms": p["ec2_c7g_large_per_hour"] * a["worker_vms"] * hours}
    ib = worker_writes_per_window(settings.waveform_hz)
    influx_bytes_month, influx_stored = _influx_volume(ib, beds)
    influx_stored_gb = sum(influx_stored.values())
    fixed["influxdb_writes"] = influx_bytes_month / 1e6 * p["influxdb_cloud_data_in_per_mb"]
    state_bytes = ib["state"]
    changelog_gb = ((state_bytes + a["changelog_key_bytes"] + a["kafka_record_overhead_bytes"])
                    * beds * WINDOWS_PER_DAY * DAYS_PER_MONTH / GB)
    fixed["worker_state_changelog"] = changelog_gb * p["msk_serverless_data_in_per_gb"]
    fixed["influxdb_storage"] = influx_stored_gb * p["influxdb_cloud_storage_per_gb_hour"] * hours
    out_opts = {}
    for name, o in options.items():
        frame = frame_overhead(version) + o["ecg"] + o["eeg"] + o.get("pad", 0.0)
        per_bed_day = frame * WINDOWS_PER_DAY
        month_bytes = per_bed_day * beds * DAYS_PER_MONTH
        kafka_bytes = (frame + a["kafka_record_overhead_bytes"]) * WINDOWS_PER_DAY * beds * DAYS_PER_MONTH
        stored_gb = kafka_bytes / DAYS_PER_MONTH * a["broker_retention_days"] / GB
        archive_gb = month_bytes / DAYS_PER_MONTH * a["archive_days"] / GB
        decode_cpu_s = sum(share * dec_s[L] for L, share in o["decode_levels"].items()) * WINDOWS_PER_DAY * beds * DAYS_PER_MONTH
        variable = {
            "broker_data_in": kafka_bytes / GB * p["msk_serverless_data_in_per_gb"],
            "broker_data_out": kafka_bytes * a["consumers_per_frame"] / GB * p["msk_serverless_data_out_per_gb"],
            "broker_storage": stored_gb * p["msk_serverless_storage_per_gb_month"],
            "archive_storage": archive_gb * p["s3_standard_per_gb_month"],
            "decode_compute": decode_cpu_s / 3600 * p["ec2_vcpu_hour"],
        }
        total = sum(variable.values()) + sum(fixed.values())
        out_opts[name] = {
            "ecg_section_bytes": round(o["ecg"], 2), "eeg_section_bytes": round(o["eeg"], 2),
            "frame_bytes": round(frame, 2), "radio_bytes_per_bed_per_day": round(per_bed_day),
            "compression_gain_vs_16bit_frame": 2 * 512 / frame,
            "broker_bytes_per_month": round(kafka_bytes), "broker_storage_gb": round(stored_gb, 3),
            "archive_storage_gb": round(archive_gb, 3), "influxdb_storage_gb": round(influx_stored_gb, 3),
            "decode_vcpu_hours_per_month": round(decode_cpu_s / 3600, 3),
            "usd_per_month": {"variable": {k: round(v, 2) for k, v in variable.items()},
                              "fixed": {k: round(v, 2) for k, v in fixed.items()},
                              "variable_total": round(sum(variable.values()), 2), "total": round(total, 2)},
        }
    raw, dd = out_opts["raw16"]["usd_per_month"], out_opts["dynamic_deep"]["usd_per_month"]
    # the same ward with WARDSTREAM_WAVEFORM_HZ=0: only the InfluxDB terms change
    w0, st0 = _influx_volume({**ib, "strip": 0.0}, beds)
    influx0 = (w0 / 1e6 * p["influxdb_cloud_data_in_per_mb"]
               + sum(st0.values()) * p["influxdb_cloud_storage_per_gb_hour"] * hours)
    delta = influx0 - fixed["influxdb_writes"] - fixed["influxdb_storage"]
    no_strips = {"influxdb_usd_per_month": round(influx0, 2),
                 "total_usd_per_month": {k: round(o["usd_per_month"]["total"] + delta, 2) for k, o in out_opts.items()},
                 "reduction_vs_raw": 1 - (dd["total"] + delta) / (raw["total"] + delta)}
    return {
        "beds": beds, "modalities": ["ecg", "eeg"], "windows_per_bed_per_day": WINDOWS_PER_DAY,
        "wire_version": version, "frame_overhead_bytes": frame_overhead(version),
        "days_per_month": DAYS_PER_MONTH,
        "dynamic_deep": {"model_id": model_id, "predictor": settings.dd_predictor, "bound": bound, "split": split,
                         "windows_measured": int(len(lv)),
                         "ecg_level_mix": {str(L): round(float(mix[L]), 4) for L in range(6)},
                         "ecg_mean_compression_gain": sc["mean_compression_gain"],
                         "ecg_aggregate_compression_gain": sc["aggregate_compression_gain"],
                         "ecg_raw_section_bytes": round(raw_sent, 2),
                         # mean bytes of the ECG sections sent at each VQ level (coded: those windows' own)
                         "ecg_section_bytes_by_level": {str(L): round(v, 3) for L, v in level_bytes.items()},
                         "predicted_error_bytes_per_frame": pred_bytes,
                         "front_state_bytes_per_frame": round(state_bytes_dd, 4),
                         "audit": {"every_s": settings.audit_every_s, "windows_per_burst": AUDIT_WINDOWS,
                                   "reference_bytes": round(ref_bytes, 2),
                                   "bytes_per_window": round(audit_bytes, 3)},
                         "raw_coding": "lossless" if rb is not None else "int16",
                         "eeg_level": eeg_lvl},
        "influxdb_measured": {"live_bytes_per_window": round(ib["live"], 1),
                              "strip_bytes_per_window": round(ib["strip"], 1), "waveform_hz": ib["waveform_hz"],
                              "trend_series_per_bed": ib["trend_series_per_bed"],
                              "trend_bytes_per_point": round(ib["trend_bytes_per_point"], 1),
                              "gb_written_per_month": round(influx_bytes_month / GB, 1),
                              "gb_stored_by_policy": {k: round(v, 2) for k, v in influx_stored.items()},
                              "note": "line protocol as the worker writes it (its retention policies: "
                                      "live 7 d, strip 2 h, trend 2 years of 1-min aggregates); "
                                      "WARDSTREAM_WAVEFORM_HZ=0 drops the strips"},
        "without_waveform_strips": no_strips,
        "zstd_measured": zs,
        "vq_coding": "entropy-coded (wire flag bit 6)" if coded is not None else "bit-packed",
        **({"coded_measured": coded} if coded is not None else {}),
        "lossless_measured": ll,
        "worker_state_changelog": {"state_bytes_per_window": round(state_bytes, 1),
                                   "broker_gb_per_month": round(changelog_gb, 1)},
        "decode_seconds_per_window_1_thread": {str(k): v for k, v in dec_s.items()},
        "options": out_opts,
        "reduction_vs_raw": 1 - dd["total"] / raw["total"],
        "reduction_vs_raw_variable_costs": 1 - dd["variable_total"] / raw["variable_total"],
        "reduction_vs_raw_radio_bytes": 1 - out_opts["dynamic_deep"]["radio_bytes_per_bed_per_day"]
        / out_opts["raw16"]["radio_bytes_per_bed_per_day"],
        "prices": PRICES, "assumptions": ASSUMPTIONS,
        "note": "reduction_vs_raw compares total monthly cost (fixed costs included); the variable "
                "costs are those that scale with the bytes sent and the decoding work",
    }
