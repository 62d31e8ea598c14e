"""The `wardstream` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from wardmodels import DD_MODEL
from wardstream.settings import from_env


def _common(p: argparse.ArgumentParser, nested: bool = False) -> None:
    """The connection and directory options. ``nested``: on a sub-command of a command that has them
    too (``dashboards check --influx-url …`` as well as ``dashboards --influx-url … check``): not set
    unless given, so the command's value stands."""
    kw = {"default": argparse.SUPPRESS} if nested else {}
    p.add_argument("--kafka", dest="kafka_bootstrap", help="bootstrap host:port (WARDSTREAM_KAFKA_BOOTSTRAP)", **kw)
    p.add_argument("--influx-url", help="InfluxDB base URL (WARDSTREAM_INFLUX_URL)", **kw)
    p.add_argument("--influx-api", choices=["v1", "v2"], help="InfluxDB write API (WARDSTREAM_INFLUX_API)", **kw)
    p.add_argument("--state-dir", type=Path, help="where local services keep data (WARDSTREAM_STATE_DIR)", **kw)
    p.add_argument("--data-dir", type=Path, help="recordings directory (WARDSTREAM_DATA_DIR)", **kw)


def _arg(kind, ok, what: str):
    """An argparse type: ``kind(text)`` when ``ok`` of it, else "'text' is not ``what``"."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return v
    return parse


# --bound (0: every window's error must be 0); --duration, --speed; --beds, --workers, --first-bed
_bound = _arg(float, lambda v: 0 <= v < float("inf"), "a task-error bound (a finite number >= 0)")
_positive = _arg(float, lambda v: 0 < v < float("inf"), "a finite number > 0")
_count = _arg(int, lambda v: v >= 1, "a whole number >= 1")


def _settings(a: argparse.Namespace):
    return from_env(kafka_bootstrap=a.kafka_bootstrap, influx_url=a.influx_url,
                    influx_api=a.influx_api, state_dir=a.state_dir, data_dir=a.data_dir)


def _predictor_id(s, predictor: str) -> str:
    """``wardstream control --predictor``: an id as it is, or a kind / file of the devices' codec
    (`Settings.codec_model`) as its id (`Predictor.digest`)."""
    from stream.wire import is_predictor_id

    if is_predictor_id(predictor):
        return predictor
    from wardmodels.runtime import load_deployed

    return load_deployed(s.codec_model).predictor_of(predictor).digest  # a WeightsError without one


def _write_json(d: dict, path: Path | None) -> None:
    text = json.dumps(d, indent=2, default=str)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # an hour's evaluation is not lost to a missing folder
        Path(path).write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="wardstream", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    sv = sub.add_parser("services", help="local broker and InfluxDB on 127.0.0.1")
    sv.add_argument("action", choices=["up", "down", "status"])
    _common(sv)

    tp = sub.add_parser("topics", help="create the topics with their partition counts")
    _common(tp)

    wk = sub.add_parser("worker", help="run one Faust worker in the foreground")
    _common(wk)
    wk.add_argument("--supervise", action="store_true",
                    help="run it as a child process that is started again when it exits and killed and "
                         "started again when its heartbeat goes stale (WARDSTREAM_WORKER_LIVENESS_S)")

    sim = sub.add_parser("sim", help="run the device simulator against the broker")
    _common(sim)
    sim.add_argument("--beds", type=_count, default=200)
    sim.add_argument("--first-bed", type=_count, default=1,
                     help="beds FIRST .. FIRST+BEDS-1 (several simulators, e.g. devices of another firmware "
                          "or predictor, side by side in one ward)")
    sim.add_argument("--duration", type=_positive, default=60.0)
    sim.add_argument("--speed", type=_positive, default=1.0)
    sim.add_argument("--source", default="synthetic", choices=["synthetic", "mitdb", "eegmat", "replay"])
    sim.add_argument("--seed", type=int, default=0)

    dm = sub.add_parser("demo", help="services + workers + simulated ward + exactly-once audit")
    _common(dm)
    dm.add_argument("--beds", type=_count, default=200)
    dm.add_argument("--duration", type=_positive, default=60.0)
    dm.add_argument("--speed", type=_positive, default=1.0)
    dm.add_argument("--workers", type=_count, default=1)
    dm.add_argument("--source", default="synthetic", choices=["synthetic", "mitdb", "eegmat", "replay"])
    dm.add_argument("--bad-every", type=int, default=500,
                    help="also send one malformed frame every N windows (0: none)")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--json", type=Path)
    dm.add_argument("--no-services", action="store_true",
                    help="use the configured broker and InfluxDB as they are; start nothing local")
    dm.add_argument("--run-dir", type=Path, default=None,
                    help="save the run here for `wardstream report` (default runs/demo-<UTC time>)")

    db = sub.add_parser("dashboards", help="Grafana dashboards as code: build, check against InfluxDB, push")
    _common(db)
    dbs = db.add_subparsers(dest="action", required=True)
    dbb = dbs.add_parser("build", help="write the dashboards' JSON")
    _common(dbb, nested=True)
    dbb.add_argument("--out", type=Path, default=Path("dashboards/generated"))
    dbc = dbs.add_parser("check", help="run every panel's query against InfluxDB; JSON of rows per panel")
    _common(dbc, nested=True)
    dbc.add_argument("--beds", default="", help="comma-separated beds for $bed (default: all)")
    dbc.add_argument("--range", type=int, default=3600, help="seconds back from now ($timeFilter)")
    dbc.add_argument("--json", type=Path)
    dbp = dbs.add_parser("push", help="create/update data source, folder and dashboards in Grafana "
                                      "(GRAFANA_URL, GRAFANA_TOKEN from the environment)")
    _common(dbp, nested=True)
    dbp.add_argument("--grafana-url", default=None, help="default $GRAFANA_URL or http://127.0.0.1:3000")
    dbp.add_argument("--datasource-url", default=None,
                     help="InfluxDB as Grafana reaches it (default: WARDSTREAM_INFLUX_URL)")

    rp = sub.add_parser("report", help="a self-contained HTML page of a demo or load-test run")
    rp.add_argument("run", type=Path, help="a run directory written by `wardstream demo`")
    rp.add_argument("--out", type=Path, default=None, help="default RUN/report.html")
    _common(rp)

    bn = sub.add_parser("bench", help="benchmarks that print JSON")
    bsub = bn.add_subparsers(dest="what", required=True)
    bp = bsub.add_parser("pipeline", help="windows/s one worker process sustains")
    _common(bp)
    bp.add_argument("--beds", type=_count, default=2000)
    bp.add_argument("--duration", type=_positive, default=60.0)
    bp.add_argument("--json", type=Path)

    bc = bsub.add_parser("codec", help="codec decode throughput, encode cost, model sizes")
    _common(bc)
    bc.add_argument("--model-id", type=int)
    bc.add_argument("--threads", type=int, default=2)
    bc.add_argument("--seconds", type=float, default=5.0)
    bc.add_argument("--json", type=Path)

    bl = bsub.add_parser("classifier", help="rhythm decisions/s and beats/s of the deployed classifiers")
    _common(bl)
    bl.add_argument("--threads", type=int, default=2)
    bl.add_argument("--seconds", type=float, default=4.0)
    bl.add_argument("--rhythm-weights", type=Path, default=None,
                    help="a packed rhythm model to measure instead of the deployed one (a streaming one runs as it streams)")
    bl.add_argument("--json", type=Path)

    bf = bsub.add_parser("firmware", help="the device the settings configure (encoder, Dynamic-Deep edge, wire "
                                          "frame) in C on an emulated Cortex-M7 (QEMU): frames byte for byte "
                                          "against the simulated device, instructions per step")
    _common(bf)
    bf.add_argument("--model-id", type=int)
    bf.add_argument("--pairs", type=int, default=40)
    bf.add_argument("--json", type=Path)

    tr = sub.add_parser("train", help="train models on the recordings (resumable)")
    tsub = tr.add_subparsers(dest="what", required=True)
    tc = tsub.add_parser("codec", help="the dual VQ codec")
    _common(tc)
    tc.add_argument("--variant", default="ward")
    tc.add_argument("--ablation", default=None)
    tc.add_argument("--steps", type=int, default=11000)
    tc.add_argument("--budget-min", type=float, default=None, help="stop (resumably) after this long")
    tc.add_argument("--seed", type=int, default=0)
    tc.add_argument("--run-dir", type=Path, default=Path("runs"))
    tc.add_argument("--out-dir", type=Path, default=None, help="where the final weights go")
    tc.add_argument("--threads", type=int, default=None)
    tc.add_argument("--init-from", type=Path, default=None,
                    help="freeze this trained codec's encoders and codebooks; train attention + decoders "
                         "(with --finetune: start from all its weights instead)")
    tc.add_argument("--finetune", choices=("ecg", "eeg"), default=None,
                    help="with --init-from: start from all its weights and train only this modality's side")
    tc.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the variant's)")

    ta = tsub.add_parser("codec-ablations", help="the paper's five ablations at one step budget")
    _common(ta)
    ta.add_argument("--variant", default="ward")
    ta.add_argument("--steps", type=int, default=1000)
    ta.add_argument("--max-records", type=_count, default=6)
    ta.add_argument("--run-dir", type=Path, default=Path("runs"))

    tk = tsub.add_parser("classifier", help="the rhythm and beat classifiers (ResNet1D)")
    _common(tk)
    tk.add_argument("--kind", default="both", choices=["rhythm", "rhythm-stream", "beat", "both", "hubert", "beat-stack"],
                    help="rhythm-stream: the causal rhythm model decided window by window (wardmodels.stream_rhythm); "
                         "beat-stack: the beat CNN's second stage, fitted on out-of-fold CNN outputs over DS1 "
                         "(wardmodels.beat_stack; trains --folds CNNs of --epochs)")
    tk.add_argument("--folds", type=int, default=4, help="beat-stack: patient-wise folds of DS1")
    tk.add_argument("--pretrain-steps", type=int, default=800, help="hubert: masked-prediction steps")
    tk.add_argument("--epochs", type=int, default=None, help="default: rhythm 40, beat 30")
    tk.add_argument("--budget-min", type=float, default=None, help="stop (resumably) after this long")
    tk.add_argument("--seed", type=int, default=0)
    tk.add_argument("--threads", type=int, default=2)
    tk.add_argument("--codec-model", type=int, default=2, help="codec whose reconstructions join the mix (0: none)")
    tk.add_argument("--levels", default="1,2", help="rhythm: the codec levels whose reconstructions join the mix")
    tk.add_argument("--crops-per-record", type=int, default=1, help="rhythm: random 10-s crops per CinC record per epoch")
    tk.add_argument("--mix-levels", action="store_true",
                    help="rhythm: half the reconstructed crops take each 2-s window at its own level")
    tk.add_argument("--artefact-share", type=float, default=0.0,
                    help="rhythm: share of the non-noisy crops given muscle or motion artefacts at 3-20 dB, "
                         "labels kept (clf_data.add_artefacts)")
    tk.add_argument("--morph-aug", type=float, default=0.0,
                    help="beat: share of training beats reshaped as another patient's (beat and template alike)")
    tk.add_argument("--init-from", type=Path, default=None,
                    help="rhythm: fine-tune this saved model (.pt) instead of starting from random weights")
    tk.add_argument("--lr", type=float, default=1e-3, help="rhythm: Adam learning rate")
    tk.add_argument("--schedule", choices=("plateau", "cosine"), default="plateau",
                    help="rhythm: ReduceLROnPlateau on the calib loss, or cosine to --min-lr over all epochs")
    tk.add_argument("--min-lr", type=float, default=1e-5, help="rhythm: where the cosine schedule ends")
    tk.add_argument("--out-dir", type=Path, default=None, help="where the final weights go (default runs/)")

    td = tsub.add_parser("dynamic-deep", help="Dynamic-Deep levels (phases 1-2) or the edge error predictor (phase 3)")
    _common(td)
    td.add_argument("--phase", default="levels", choices=["levels", "edge-rhythm", "predictor"],
                    help="levels: phases 1-2; edge-rhythm: the device's small rhythm model distilled from the "
                         "deployed one (wardmodels.edge_rhythm); predictor: phase 3")
    td.add_argument("--model-id", type=int, default=None,
                    help="levels: the base codec (default 2); predictor: the Dynamic-Deep codec (default: the deployed one, wardmodels.DD_MODEL)")
    td.add_argument("--recon-steps", type=int, default=2500)
    td.add_argument("--task-steps", type=int, default=800)
    td.add_argument("--task-weight", type=float, default=1.0)
    td.add_argument("--qrs-weight", type=float, default=0.0,
                    help="levels: weight of the QRS-envelope term in the task phase (0: left out)")
    td.add_argument("--exclude-calib", action="store_true",
                    help="levels: train the chains without the predictor's calibration patients (MIT-BIH DS1 "
                         "records 17-22, CinC calib), so the calibrated slack sees a new patient's errors")
    td.add_argument("--alpha", type=float, default=0.05, help="predictor: allowed share of windows over the bound")
    td.add_argument("--w-kl", type=float, default=1.0, help="predictor: weight of the rhythm-classifier KL")
    td.add_argument("--w-qrs", type=float, default=1.0, help="predictor: weight of the QRS error")
    td.add_argument("--w-beat", type=float, default=0.0,
                    help="predictor: weight of the beat term (the beat classifier's largest class-probability change "
                         "over the window's beats, wardmodels.predictor.beat_term; 0: left out)")
    td.add_argument("--no-deploy", action="store_true",
                    help="predictor: save the fitted predictor (in --out-dir, default runs/predictors) without "
                         "deploying it; eval dynamic-deep --predictor PATH and WARDSTREAM_DD_PREDICTOR=PATH use it")
    td.add_argument("--quantile", type=float, default=None,
                    help="predictor: fit this quantile of each level's error (pinball loss) instead of the mean")
    td.add_argument("--patient-delta", type=float, default=None,
                    help="predictor: also keep the upper 1-delta bootstrap bound (whole calib patients resampled) "
                         "of the violation rate under alpha")
    td.add_argument("--cross-fit", type=int, default=None, metavar="K",
                    help="predictor: also calibrate on out-of-fold predictions of the fit part (K patient-wise "
                         "folds), so the slack sees every MIT-BIH DS1 patient, not only the 6 of calib")
    td.add_argument("--level-offsets", action="store_true",
                    help="predictor: per-level offsets on the predictions, chosen on the out-of-fold rows of the "
                         "fit part (needs --cross-fit) so that neither the mean nor the aggregate gain drops")
    td.add_argument("--offset-bound", type=float, default=None,
                    help="predictor: the bound the level offsets are chosen at (default: the deployed one)")
    td.add_argument("--no-task-features", action="store_true",
                    help="predictor: latent-distortion features only (before 2026-12-02), not the device's "
                         "own QRS detector's (dd_edge.TaskStream)")
    td.add_argument("--decode-check", action="store_true",
                    help="predictor: also read the device's decode check (dd_edge.DecodeCheck: every level "
                         "decoded on the device and its QRS detector run on each; ~12 M multiply-adds per level)")
    td.add_argument("--rhythm-check", action="store_true",
                    help="predictor: also read the device's small rhythm model on the last 10 s of the original and "
                         "every level (wardmodels.edge_rhythm; needs --decode-check; ~32 M multiply-adds per window)")
    td.add_argument("--epochs", type=int, default=25, help="edge-rhythm: epochs of the rhythm recipe (step 1)")
    td.add_argument("--distill-epochs", type=int, default=3, help="edge-rhythm: epochs of distillation (step 2)")
    td.add_argument("--train-part-only", action="store_true",
                    help="edge-rhythm: distil on the predictor's train part only, not also the rest of CinC fit")
    td.add_argument("--per-source", action="store_true",
                    help="predictor: the violation condition must hold on the MIT-BIH and on the CinC windows "
                         "each on their own, not only on their mix")
    td.add_argument("--f1-confidence", type=float, default=None, metavar="C",
                    help="predictor: deploy the largest bound whose upper C paired-bootstrap bound of the "
                         "calib F1 loss is within 1 point (default: whose point loss is)")
    td.add_argument("--budget-min", type=float, default=None)
    td.add_argument("--seed", type=int, default=0)
    td.add_argument("--threads", type=int, default=2)
    td.add_argument("--out-dir", type=Path, default=None)

    co = sub.add_parser("cost", help="radio, broker, storage, compute and money for N beds (JSON)")
    _common(co)
    co.add_argument("--beds", type=int, default=200)
    co.add_argument("--split", default="test", choices=["test", "all", "calib"],
                    help="recordings whose measured level mix prices the Dynamic-Deep option")
    co.add_argument("--bound", type=_bound, default=None)
    co.add_argument("--json", type=Path)

    st = sub.add_parser("status", help="the running ward from the broker and InfluxDB: lag, group, workers, "
                                       "open alarms (JSON)")
    _common(st)
    st.add_argument("--json", type=Path)
    st.add_argument("--check", action="store_true",
                    help="exit 1 when the answer lists problems (frames waiting with nobody processing them, "
                         "beds not monitored, InfluxDB unreadable), 2 when the broker cannot be reached")

    ct = sub.add_parser("control", help="publish a run-time setting on the control topic")
    _common(ct)
    ct.add_argument("setting", choices=["bound", "show"],
                    help="bound: set one; show: the ward's and every bed's bound and slack correction as devices read them")
    ct.add_argument("value", nargs="?", help="bound: a positive number, or 'clear' (a bed's or a predictor's)")
    ct.add_argument("--bed", type=int, default=None, help="this bed only (default: the whole ward)")
    ct.add_argument("--predictor", default=None,
                    help="the beds whose devices run this error predictor only: its id (12 hex digits), a kind "
                         "(default, decode, rhythm) or a predictor file — in a ward of mixed predictors, whose task "
                         "errors differ, each its own bound")
    ct.add_argument("--by", default="wardstream-cli")

    xp = sub.add_parser("export", help="deployable artefacts from trained weights")
    xsub = xp.add_subparsers(dest="what", required=True)
    xc = xsub.add_parser("codec", help="int8 edge encoder + entropy tables, recorded in MANIFEST.json")
    _common(xc)
    xc.add_argument("weights", type=Path)
    xc.add_argument("--model-id", type=int, default=1)
    xc.add_argument("--act-bits", type=int, default=16, choices=[8, 16])
    xc.add_argument("--context-classes", type=int, default=4)
    xc.add_argument("--out-dir", type=Path, default=None)

    xf = xsub.add_parser("firmware", help="the deployed int8 edge encoder as the C firmware's parameter blob "
                                          "(format: wardmodels/firmware.py)")
    _common(xf)
    xf.add_argument("--model-id", type=int, default=None, help="wire model id (default: the devices' codec)")
    xf.add_argument("--out", type=Path, default=Path("runs/firmware/edge.wse"))

    xk = xsub.add_parser("classifier", help="LAQ-compress trained classifiers, pack them, record them")
    _common(xk)
    xk.add_argument("--rhythm", type=Path, default=None, help="trained rhythm weights (clf-rhythm-*.pt)")
    xk.add_argument("--beat", type=Path, default=None, help="trained beat weights (clf-beat-*.pt)")
    xk.add_argument("--gamma", type=float, default=0.04)
    xk.add_argument("--tolerance", type=float, default=0.005)
    xk.add_argument("--beat-fixed-bits", type=int, default=None,
                    help="pack the beat model at one bit-width instead of LAQ (DS1 has no held-out patients to calibrate LAQ on)")
    xk.add_argument("--bit-choices", default=None, help="LAQ: the bit-widths a layer may take, e.g. 2,3 (default: 2,3,4,5,6,8)")
    xk.add_argument("--qat-epochs", type=int, default=0,
                    help="rhythm: quantization-aware fine-tuning epochs at the LAQ bit-widths (0: none)")
    xk.add_argument("--qat-lr", type=float, default=1e-4)
    xk.add_argument("--qat-distill", type=float, default=0.0,
                    help="rhythm QAT: weight in [0, 1] of distillation from the FP32 source (0: labels only)")
    xk.add_argument("--qat-temperature", type=float, default=2.0)
    xk.add_argument("--bits-from", type=Path, default=None,
                    help="reuse the per-layer bit-widths a classifier manifest (CLASSIFIERS.json) recorded "
                         "for the same source weights instead of searching them again")
    xk.add_argument("--seed", type=int, default=0)
    xk.add_argument("--out-dir", type=Path, default=None)

    xd = xsub.add_parser("dynamic-deep", help="int8 level chains; deploy as a new wire model id")
    _common(xd)
    xd.add_argument("weights", type=Path)
    xd.add_argument("--model-id", type=int, required=True, help="the wire model id to deploy the chains as")

    xw = xsub.add_parser("wire-tables", help="entropy-coding tables of a wire model's sections (wire flag bit 6)")
    _common(xw)
    xw.add_argument("--model-id", type=int, required=True)
    xw.add_argument("--windows", type=int, default=16384)
    xw.add_argument("--context-classes", type=int, default=0,
                    help="0: one table per stage (fits the edge budget); C: C context classes per stage")
    xw.add_argument("--seed", type=int, default=7)

    ev = sub.add_parser("eval", help="evaluations on recorded data")
    esub = ev.add_subparsers(dest="what", required=True)
    ea = esub.add_parser("alarms", help="alarms on MIT-BIH replays through the pipeline's code, vs the annotations")
    _common(ea)
    ea.add_argument("--split", default="test", choices=["test", "all"])
    ea.add_argument("--records", default=None, help="comma-separated MIT-BIH records instead of the split")
    ea.add_argument("--limits", default=None,
                    help='alarm limits over the defaults for every bed, JSON, e.g. \'{"afib_p": 0.6}\'')
    ea.add_argument("--af-threshold-curve", action="store_true",
                    help="instead of the replay: the AF alarm's threshold against the CinC calib records")
    ea.add_argument("--af-irregularity-curve", action="store_true",
                    help="instead of the replay: the AF alarm's RR-irregularity limit against the CinC calib "
                         "records, each replayed through the pipeline")
    ea.add_argument("--json", type=Path)

    ed = esub.add_parser("dynamic-deep", help="gain, level mix, bound violations, F1 on reconstructions")
    _common(ed)
    ed.add_argument("--split", default="test", choices=["test", "all", "calib", "train"])
    ed.add_argument("--bound", type=_bound, default=None, help="default: the deployed bound")
    ed.add_argument("--model-id", type=int, default=None, help="default: the deployed Dynamic-Deep codec")
    ed.add_argument("--json", type=Path)
    ed.add_argument("--predictor", default=None,
                    help="the edge error predictor scored (default: WARDSTREAM_DD_PREDICTOR, else 'default'); "
                         "'decode' also reads the device's own decode of every level (dd_edge.DecodeCheck), "
                         "'rhythm' also its small rhythm model on each (wardmodels.edge_rhythm); or the path of "
                         "a predictor file (train dynamic-deep --phase predictor --no-deploy)")
    ed.add_argument("--png", type=Path, default=None, help="the bound curve (default: next to --json)")
    ed.add_argument("--audit-every", type=int, default=None, metavar="N",
                    help="also score the per-bed slack correction of the audits (one observed window every N "
                         "windows, as the worker scores them) on the same windows")
    ed.add_argument("--raw-int16", action="store_true",
                    help="count windows sent raw as plain int16 (devices with WARDSTREAM_RAW_LOSSLESS=0)")
    ed.add_argument("--wire-version", type=int, choices=[1, 2], default=None,
                    help="count the sections of this wire format (default: WARDSTREAM_WIRE_VERSION, 2)")
    ed.add_argument("--bit-packed", action="store_true",
                    help="count the codec-level sections bit-packed (devices with WARDSTREAM_WIRE_CODED=0), "
                         "not entropy-coded")
    ev_cv = esub.add_parser("beat-cv", help="the beat recipe by patient-wise cross-validation inside MIT-BIH DS1")
    _common(ev_cv)
    ev_cv.add_argument("--folds", type=int, default=4)
    ev_cv.add_argument("--epochs", type=int, default=6)
    ev_cv.add_argument("--seed", type=int, default=0)
    ev_cv.add_argument("--threads", type=int, default=2)
    ev_cv.add_argument("--codec-model", type=int, default=2, help="codec whose reconstructions join the mix (0: none)")
    ev_cv.add_argument("--morph-aug", type=float, default=0.0, help="share of training beats reshaped as another patient's")
    ev_cv.add_argument("--json", type=Path)
    eq = esub.add_parser("qrs", help="streaming QRS detection on MIT-BIH")
    _common(eq)
    eq.add_argument("--split", default="test", choices=["test", "train", "all"])
    eq.add_argument("--tolerance", type=float, default=0.15)
    eq.add_argument("--json", type=Path)

    ec = esub.add_parser("codec", help="codec quality, bits and int8 agreement on recordings")
    _common(ec)
    ec.add_argument("--split", default="test", choices=["test", "train", "all"])
    ec.add_argument("--level", type=int, default=1, help="level whose metrics are the top-level keys")
    ec.add_argument("--encoder", default="int8", choices=["int8", "fp32"])
    ec.add_argument("--weights", default=None, help="evaluate this checkpoint (fp32) instead of the deployed codec")
    ec.add_argument("--max-records", type=_count, default=None)
    ec.add_argument("--model-id", type=int, default=None, help="deployed codec (default: the devices' codec)")
    ec.add_argument("--json", type=Path)

    el = esub.add_parser("classifier", help="rhythm (cinc2017) or beat (mitdb) classification")
    _common(el)
    el.add_argument("--dataset", required=True, choices=["cinc2017", "mitdb"])
    el.add_argument("--split", default="test", choices=["test", "all", "val", "train"])
    el.add_argument("--level", type=int, default=None, help="codec level for the reconstructed scores (default: deployed)")
    el.add_argument("--encoder", default="int8", choices=["int8", "fp32"])
    el.add_argument("--weights", type=Path, default=None, help="an FP32 checkpoint (.pt) or a packed file (.wpk) instead of the deployed model")
    el.add_argument("--sweep", type=Path, default=None, help="also run the fixed bit/pruning sweep of this FP32 checkpoint")
    el.add_argument("--robustness", action="store_true",
                    help="cinc2017: also score the rhythm model under noise, electrode motion and lead-off, "
                         "and on eegmat's real ECG (key robustness; wardstream/eval_robust.py)")
    el.add_argument("--max-records", type=_count, default=None)
    el.add_argument("--json", type=Path)

    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    s = _settings(a)
    from aiokafka.errors import KafkaConnectionError

    from wardmodels.hashname import WeightsError
    from wardstream.datasets import DataMissing
    from wardstream.eval_codec import LevelError
    from wardstream.report import RunMissing

    try:
        return _dispatch(ap, a, s, sys.argv[1:] if argv is None else argv)
    # what a command needs and does not find (recordings, weights, a run): one line that says what
    except (DataMissing, WeightsError, RunMissing, LevelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KafkaConnectionError as exc:  # sim, control, topics
        print(f"error: no broker at {s.kafka_bootstrap} ({exc}); `./ward services up` starts the local one",
              file=sys.stderr)
        return 2


def _dispatch(ap: argparse.ArgumentParser, a: argparse.Namespace, s, argv: list[str]) -> int:
    if a.cmd == "services":
        from wardstream import services

        try:
            if a.action == "up":
                sts = services.up(s)
            elif a.action == "down":
                services.down(s)
                sts = services.status(s)
            else:
                sts = services.status(s)
        except services.ServiceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for st in sts:
            state = "healthy" if st.healthy else ("running, not answering" if st.running else "stopped")
            print(f"{st.name:9s} {state:24s} {st.address}  pid={st.pid}")
        return 0 if a.action == "down" or all(st.healthy for st in sts) else 1

    if a.cmd == "topics":
        from stream.topics import ensure_topics

        print("created:", asyncio.run(ensure_topics(s)) or "nothing (all exist)")
        return 0

    if a.cmd == "worker" and a.supervise:
        from wardstream.workers import run_supervised

        return run_supervised(s)

    if a.cmd == "worker":
        from processors.worker import main as worker_main

        worker_main([])
        return 0

    if a.cmd == "sim":
        from device_sim.ward import run_ward

        rep = asyncio.run(run_ward(s, a.beds, a.duration, a.speed, source=a.source, seed=a.seed,
                                   first_bed=a.first_bed))
        print(json.dumps(rep.summary(), indent=2))
        return 0 if rep.frames_failed == 0 else 1

    if a.cmd == "demo":
        from wardstream.demo import main as demo_main

        run_dir = a.run_dir or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S", time.gmtime())
        return demo_main(s, a.beds, a.duration, a.speed, a.workers, a.source, a.bad_every, a.seed,
                         a.json, start_services=not a.no_services, run_dir=run_dir)

    if a.cmd == "dashboards":
        if a.action == "build":
            from dashboards.build import build_all

            a.out.mkdir(parents=True, exist_ok=True)
            for name, d in build_all().items():
                (a.out / name).write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n")
                print(a.out / name)
            return 0
        if a.action == "check":
            from dashboards.check import check

            res = check(s, [b for b in a.beds.split(",") if b], a.range)
            _write_json({"panels": [{**vars(r), "events_only": r.events_only} for r in res],
                         "empty": sum(1 for r in res if not r.values), "errors": sum(1 for r in res if r.error)},
                        a.json)
            return 1 if any(r.error for r in res) else 0
        from dashboards.push import from_env as grafana_from_env, push

        did = push(grafana_from_env(a.grafana_url), a.datasource_url or s.influx_url, s.influx_db, s.influx_api,
                   s.influx_token)
        _write_json(did, None)
        return 0

    if a.cmd == "report":
        from wardstream.report import write_report

        out = write_report(a.run, a.out)
        print(out)
        return 0

    if a.cmd == "train" and a.what == "codec":
        from wardmodels.train_codec import train

        d = train(s.data_dir, a.variant, a.ablation, a.steps, a.budget_min, a.run_dir, a.out_dir, a.seed,
                  a.threads, init_from=a.init_from, finetune=a.finetune, lr=a.lr)
        _write_json(d, None)
        return 0 if d["done"] else 3

    if a.cmd == "train" and a.what == "classifier":
        from wardmodels import train_classifier as tcl

        res = {}
        cm = a.codec_model or None
        if a.kind in ("rhythm", "rhythm-stream", "both"):
            res["rhythm"] = tcl.train_rhythm(s.data_dir, a.epochs or 40, seed=a.seed, threads=a.threads,
                                             budget_min=a.budget_min, out_dir=a.out_dir, codec_model=cm,
                                             levels=tuple(int(v) for v in a.levels.split(",")),
                                             crops_per_record=a.crops_per_record, mix_levels=a.mix_levels,
                                             variant="rhythm-stream" if a.kind == "rhythm-stream" else "rhythm",
                                             init_from=a.init_from, lr=a.lr, schedule=a.schedule, min_lr=a.min_lr,
                                             artefact_share=a.artefact_share)
        if a.kind in ("beat", "both") and res.get("rhythm", {}).get("finished", True):
            res["beat"] = tcl.train_beat(s.data_dir, a.epochs or 30, seed=a.seed, threads=a.threads,
                                         budget_min=a.budget_min, out_dir=a.out_dir, codec_model=cm,
                                         morph_aug=a.morph_aug)
        if a.kind == "beat-stack":
            from wardmodels.beat_stack import train_stack

            res["beat-stack"] = {"finished": True, **train_stack(s.data_dir, a.folds, a.epochs or 10, a.seed, a.threads,
                                                                  cm, a.out_dir)}
        if a.kind == "hubert":
            res["hubert"] = tcl.train_hubert(s.data_dir, a.pretrain_steps, a.epochs or 8, seed=a.seed,
                                             threads=a.threads, budget_min=a.budget_min, out_dir=a.out_dir,
                                             codec_model=cm)
        _write_json(res, None)
        return 0 if all(r["finished"] for r in res.values()) else 3

    if a.cmd == "train" and a.what == "codec-ablations":
        from wardmodels.ablate import run

        _write_json(run(s.data_dir, a.variant, a.steps, a.run_dir, a.max_records), None)
        return 0

    if a.cmd == "export" and a.what == "codec":
        from wardmodels.export import export

        cmd = "wardstream " + " ".join(argv)
        _write_json(export(a.weights, s.data_dir, a.model_id, a.act_bits, classes=a.context_classes,
                           out_dir=a.out_dir, reproduce=[cmd]), None)
        return 0

    if a.cmd == "eval" and a.what == "codec":
        from wardstream.eval_codec import evaluate

        mid = a.model_id if a.model_id is not None else (None if a.weights else s.codec_model)
        _write_json(evaluate(s.data_dir, a.split, a.level, a.encoder, a.weights,
                             max_records=a.max_records, model_id=mid), a.json)
        return 0

    if a.cmd == "bench" and a.what == "codec":
        from wardstream.bench_codec import bench

        _write_json(bench(a.model_id if a.model_id is not None else s.codec_model, a.threads, a.seconds), a.json)
        return 0

    if a.cmd == "bench" and a.what == "firmware":
        from wardstream.bench_firmware import bench

        _write_json(bench(s, a.pairs, a.model_id), a.json)
        return 0
    if a.cmd == "bench" and a.what == "classifier":
        from wardstream.bench_classifier import bench

        _write_json(bench(a.threads, a.seconds, rhythm_weights=a.rhythm_weights), a.json)
        return 0

    if a.cmd == "export" and a.what == "firmware":
        from wardmodels import runtime
        from wardmodels.firmware import export as export_firmware

        mid = a.model_id if a.model_id is not None else s.codec_model
        codec = runtime.load_deployed(mid)
        if codec.edge is None:
            raise SystemExit(f"the deployed codec under model id {mid} has no edge encoder")
        res = export_firmware(codec, a.out)
        _write_json({**res, "model_id": mid}, None)
        return 0
    if a.cmd == "export" and a.what == "classifier":
        from wardmodels.clf_runtime import bits_from_manifest, export_classifier

        res = {}
        for kind, w in (("rhythm", a.rhythm), ("beat", a.beat)):
            if w is not None:
                fixed = a.beat_fixed_bits if kind == "beat" else None
                qat = a.qat_epochs if kind == "rhythm" else 0
                choices = {"choices": tuple(int(b) for b in a.bit_choices.split(","))} if a.bit_choices else {}
                given = bits_from_manifest(a.bits_from, kind, w) if a.bits_from else None
                distill = a.qat_distill if qat else 0.0
                cmd = (f"wardstream export classifier --{kind} {w} --gamma {a.gamma} --tolerance {a.tolerance}"
                       + (f" --bit-choices {a.bit_choices}" if choices else "")
                       + (f" --beat-fixed-bits {fixed}" if fixed else "")
                       + (f" --bits-from {a.bits_from}" if given else "")
                       + (f" --qat-epochs {qat} --qat-lr {a.qat_lr} --seed {a.seed}" if qat else "")
                       + (f" --qat-distill {distill} --qat-temperature {a.qat_temperature}" if distill else ""))
                res[kind] = export_classifier(kind, w, s.data_dir, a.out_dir, a.gamma, a.tolerance, reproduce=[cmd],
                                              fixed_bits=fixed, qat_epochs=qat, qat_lr=a.qat_lr, seed=a.seed,
                                              bits=given, qat_distill=distill, qat_temperature=a.qat_temperature,
                                              **choices)
        _write_json(res, None)
        return 0

    if a.cmd == "eval" and a.what == "classifier":
        from wardstream.eval_classifier import evaluate, sweep

        from wardstream.eval_codec import check_level

        if a.robustness and a.dataset != "cinc2017":
            print("error: --robustness scores the rhythm model: --dataset cinc2017", file=sys.stderr)
            return 2
        level = a.level if a.level is not None else s.codec_level
        check_level(level, None, s.codec_model)  # the reconstructions' codec, before the work
        d = evaluate(s.data_dir, a.dataset, a.split, s.codec_model, level, a.encoder, a.max_records, a.weights,
                     robust=a.robustness)
        if a.sweep:
            d["sweep"] = sweep("rhythm" if a.dataset == "cinc2017" else "beat", a.sweep, s.data_dir, a.split)
        _write_json(d, a.json)
        return 0

    if a.cmd == "eval" and a.what == "beat-cv":
        from wardmodels.beat_cv import cross_validate

        _write_json(cross_validate(s.data_dir, a.folds, a.epochs, a.seed, a.threads, a.codec_model or None,
                                   morph_aug=a.morph_aug), a.json)
        return 0

    if a.cmd == "bench" and a.what == "pipeline":
        from wardstream.bench import bench_pipeline

        d = asyncio.run(bench_pipeline(s, a.beds, a.duration))
        _write_json(d, a.json)
        return 0

    if a.cmd == "train" and a.what == "dynamic-deep":
        if a.phase == "levels":
            from wardmodels.train_dynamic import train as train_dd

            d = train_dd(s.data_dir, a.model_id or 2, a.recon_steps, a.task_steps, a.task_weight,
                         budget_min=a.budget_min, out_dir=a.out_dir, seed=a.seed, threads=a.threads,
                         exclude_calib=a.exclude_calib, qrs_weight=a.qrs_weight)
            _write_json(d, None)
            return 0 if d["done"] else 3
        if a.phase == "edge-rhythm":
            from wardmodels.edge_rhythm import train_edge_rhythm

            _write_json(train_edge_rhythm(s.data_dir, a.model_id or DD_MODEL, a.epochs, a.distill_epochs, a.seed,
                                          a.threads, out_dir=a.out_dir, all_fit=not a.train_part_only), None)
            return 0
        import torch

        from wardmodels.predictor import TaskWeights
        from wardstream.eval_dynamic import train_predictor

        torch.set_num_threads(a.threads)
        d = train_predictor(s.data_dir, a.model_id or DD_MODEL, a.alpha, TaskWeights(a.w_kl, a.w_qrs, a.w_beat),
                            seed=a.seed, deploy=not a.no_deploy, out_dir=a.out_dir,
                            quantile=a.quantile, patient_delta=a.patient_delta,
                            task_features=not a.no_task_features, cross_fit=a.cross_fit,
                            level_offsets=a.level_offsets, offset_bound=a.offset_bound,
                            decode_check=a.decode_check, per_source=a.per_source,
                            f1_confidence=a.f1_confidence, rhythm_check=a.rhythm_check)
        _write_json(d, None)
        return 0

    if a.cmd == "export" and a.what == "dynamic-deep":
        from wardmodels.train_dynamic import export as export_dd

        cmd = f"wardstream export dynamic-deep {a.weights} --model-id {a.model_id}"
        _write_json(export_dd(a.weights, s.data_dir, a.model_id, reproduce=[cmd]), None)
        return 0

    if a.cmd == "export" and a.what == "wire-tables":
        from wardmodels.wire_tables import export as export_tables

        cmd = (f"wardstream export wire-tables --model-id {a.model_id} --windows {a.windows} "
               f"--context-classes {a.context_classes} --seed {a.seed}")
        _write_json(export_tables(a.model_id, s.data_dir, a.windows, a.context_classes, a.seed, reproduce=cmd), None)
        return 0

    if a.cmd == "eval" and a.what == "dynamic-deep":
        from wardstream.eval_dynamic import evaluate as eval_dd

        from wardmodels.runtime import check_predictor

        png = a.png or (a.json.with_suffix(".png") if a.json else None)
        try:
            if a.predictor is not None:
                check_predictor(a.predictor)
        except ValueError as exc:
            print(f"error: --predictor: {exc}", file=sys.stderr)
            return 2
        mid = DD_MODEL if a.model_id is None else a.model_id
        d = eval_dd(s.data_dir, a.split, a.bound, mid, png, audit_every=a.audit_every,
                    raw_lossless=not a.raw_int16, wire_version=a.wire_version or s.wire_version,
                    predictor=a.predictor or s.dd_predictor, coded=s.wire_coded and not a.bit_packed)
        _write_json(d, a.json)
        return 0

    if a.cmd == "eval" and a.what == "alarms":
        from wardstream.eval_alarms import af_irregularity_curve, af_threshold_curve
        from wardstream.eval_alarms import evaluate as eval_alarms

        try:
            d = af_threshold_curve(s) if a.af_threshold_curve else af_irregularity_curve(s) \
                if a.af_irregularity_curve else \
                eval_alarms(s, a.split, [r.strip() for r in a.records.split(",") if r.strip()] if a.records else None,
                            json.loads(a.limits) if a.limits else None)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        _write_json(d, a.json)
        return 0

    if a.cmd == "cost":
        from wardstream.cost import cost_report

        _write_json(cost_report(s, a.beds, a.split, a.bound), a.json)
        return 0

    if a.cmd == "status":
        from wardstream.status import collect

        try:
            d = asyncio.run(collect(s))
        except Exception as exc:  # the broker unreachable: say where, not a traceback
            print(f"error: no status from {s.kafka_bootstrap}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        _write_json(d, a.json)
        if a.check and d["problems"]:
            print("problems: " + "; ".join(d["problems"]), file=sys.stderr)
            return 1
        return 0

    if a.cmd == "control" and a.setting == "show":
        from device_sim.control import Bounds, latest

        b = Bounds(default=float("nan"))
        for key, value in asyncio.run(latest(s)).items():
            b.apply(key, value)
        print(json.dumps({"topic": s.control_topic, "ward": b.ward, "predictors": dict(sorted(b.predictors.items())),
                          "beds": {str(k): v for k, v in sorted(b.beds.items())},
                          "slacks": {str(k): v for k, v in sorted(b.slacks.items())},
                          "holds": {str(k): v for k, v in sorted(b.holds.items())}, "rejected": b.rejected}))
        return 0
    if a.cmd == "control":
        from device_sim.control import ControlError, publish
        from wardmodels.hashname import WeightsError

        if a.value is None:
            print("error: control bound needs a value (a positive number, or 'clear' with --bed)", file=sys.stderr)
            return 2
        try:
            value = None if a.value == "clear" else float(a.value)
            pid = _predictor_id(s, a.predictor) if a.predictor is not None else None
            if value is None and a.bed is None and pid is None:
                raise ControlError("bad_bound", "only a bed's or a predictor's bound can be cleared (the ward keeps one)")
            asyncio.run(publish(s, value, a.bed, a.by, pid))
        except (ValueError, ControlError, WeightsError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps({"topic": s.control_topic, "bed": a.bed, "predictor": pid, "bound": value}))
        return 0

    if a.cmd == "eval" and a.what == "qrs":
        from wardstream.eval_qrs import evaluate

        d = evaluate(s.data_dir, a.split, a.tolerance)
        _write_json(d, a.json)
        return 0
    ap.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
