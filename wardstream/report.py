"""`wardstream report RUN`: one self-contained HTML page of a demo or load-test run.

Reads what `wardstream demo` saved in the run directory (``summary.json``, ``timeline.json``,
``examples.npz``) and draws: the latency histogram, throughput and consumer lag over time, original
vs reconstructed ECG/EEG windows, the level mix, the audited windows' predicted vs observed task
error and the alarms timeline. Plots are PNGs embedded
as data URIs, so the page needs no network and no other file.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

PRIORITY_COLOURS = {"high": "#d62728", "medium": "#ff7f0e", "low": "#bcbd22", "technical": "#1f77b4"}
FS = 128


class RunMissing(FileNotFoundError):
    pass


def _fig_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_figure(summary: dict) -> str:
    plt = _plt()
    hist = {int(k): v for k, v in summary.get("latency_ms_hist", {}).items()}
    fig, ax = plt.subplots(figsize=(7, 3))
    if hist:
        ks = np.array(sorted(hist))
        vs = np.array([hist[k] for k in ks])
        edges = np.linspace(0, max(ks.max(), 1) + 1, 60)
        ax.hist(ks, bins=edges, weights=vs, color="#4c72b0")
        for p, c in (("p50", "#2ca02c"), ("p95", "#ff7f0e"), ("p99", "#d62728")):
            v = summary["latency_ms"].get(p)
            if v is not None:
                ax.axvline(v, color=c, lw=1.5, label=f"{p} {v:.0f} ms")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no latency recorded", ha="center", transform=ax.transAxes)
    ax.set_xlabel("window end → InfluxDB ack (ms)")
    ax.set_ylabel("windows")
    return _fig_uri(fig)


def throughput_figure(timeline: dict) -> str:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 4.2), sharex=False)
    w = timeline.get("windows_per_s", [])
    while w and not w[-1][1]:  # the audit window runs past the last window
        w = w[:-1]
    if w:
        t0 = w[0][0]
        a1.plot([(t - t0) / 1000 for t, _ in w], [n for _, n in w], color="#4c72b0", lw=1)
    a1.set_ylabel("windows/s stored")
    a1.set_xlabel("device time since the first window (s)")
    lag = timeline.get("lag", [])
    if lag:
        a2.step([t for t, _ in lag], [n for _, n in lag], where="post", color="#dd8452")
    else:
        a2.text(0.5, 0.5, "no lag samples", ha="center", transform=a2.transAxes)
    a2.set_ylabel("consumer lag (frames)")
    a2.set_xlabel("wall time since the demo started (s)")
    fig.tight_layout()
    return _fig_uri(fig)


def example_figures(examples: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """(caption, image) per captured bed: consecutive windows, original vs reconstruction."""
    plt = _plt()
    beds: dict[str, list[int]] = {}
    for k in examples:
        b, s_, kind = k.split("_", 2)
        if kind == "ecg":
            beds.setdefault(b, []).append(int(s_[1:]))
    out = []
    for b, seqs in sorted(beds.items()):
        seqs.sort()
        mods = ["ecg"] + (["eeg"] if f"{b}_s{seqs[0]}_eeg" in examples else [])
        fig, axes = plt.subplots(len(mods), 1, figsize=(9, 2.4 * len(mods)), squeeze=False)
        for ax, m in zip(axes[:, 0], mods):
            orig = np.concatenate([examples[f"{b}_s{q}_{m}"] for q in seqs])
            rec = np.concatenate([examples[f"{b}_s{q}_{m}_rec"] for q in seqs])
            t = np.arange(len(orig)) / FS
            ax.plot(t, orig - np.median(orig), color="#999999", lw=1, label="acquired (centred)")
            ax.plot(t, rec, color="#c44e52", lw=1, label="reconstructed in the cloud")
            ax.set_ylabel("mV" if m == "ecg" else "µV")
            ax.set_title(m.upper(), fontsize=9, loc="left")
            ax.legend(fontsize=7, loc="upper right")
        axes[-1, 0].set_xlabel("s")
        fig.tight_layout()
        levels = sorted({int(examples[f"{b}_s{q}_level"][0]) for q in seqs if f"{b}_s{q}_level" in examples})
        out.append((f"bed {b[1:]}, windows {seqs[0]}–{seqs[-1]}, ECG level {levels}; the device band-passes "
                    "0.5–40 Hz before encoding, so the reconstruction has no baseline wander", _fig_uri(fig)))
    return out


def levels_figure(summary: dict) -> str:
    plt = _plt()
    lv = {int(k): v for k, v in summary.get("ecg_levels_sent", {}).items()}
    fig, ax = plt.subplots(figsize=(5, 2.8))
    ks = list(range(0, max(lv, default=5) + 1))
    ax.bar(ks, [lv.get(k, 0) for k in ks], color="#55a868")
    ax.set_xticks(ks, [f"L{k}" for k in ks])
    ax.set_ylabel("ECG windows sent")
    ax.set_xlabel("level (0 raw … 5 deepest)")
    return _fig_uri(fig)


def alarms_figure(timeline: dict) -> str:
    plt = _plt()
    al = timeline.get("alarms", [])
    fig, ax = plt.subplots(figsize=(9, 2.8))
    if al:
        t0 = timeline["t0_ms"]
        beds = sorted({int(a["bed"]) for a in al})
        y = {b: i for i, b in enumerate(beds)}
        marker = {"active": "o", "acknowledged": "s", "resolved": "x", "escalated": "^"}
        for a in al:
            ax.scatter((a["time"] - t0) / 1000, y[int(a["bed"])], c=PRIORITY_COLOURS.get(a["priority"], "k"),
                       marker=marker.get(a["state"], "."), s=30)
        ax.set_yticks(range(len(beds)), [f"bed {b}" for b in beds])
        handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=p) for p, c in PRIORITY_COLOURS.items()]
        ax.legend(handles=handles, fontsize=7, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no alarm transitions in this run", ha="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_xlabel("device time since the first window (s)")
    return _fig_uri(fig)


def task_error_figure(timeline: dict) -> str:
    """Audited windows: the device's predicted task error against the one the cloud observed."""
    plt = _plt()
    te = [r for r in timeline.get("task_error", []) if r.get("observed") is not None]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    if te:
        obs = np.array([r["observed"] for r in te], float)
        pred = np.array([np.nan if r.get("predicted") is None else r["predicted"] for r in te], float)
        lv = np.array([int(r.get("level", -1)) for r in te])
        for L in sorted(set(lv.tolist())):
            m = lv == L
            ax.scatter(pred[m], obs[m], s=18, label=f"level {L}")
        top = float(np.nanmax(np.concatenate([obs, pred, [0.05]])))
        ax.plot([0, top], [0, top], color="#999999", lw=1, ls="--", label="observed = predicted")
        ax.set_xlabel("predicted by the device")
        ax.set_ylabel("observed by the cloud")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no audited window in this run\n(WARDSTREAM_AUDIT_EVERY_S)", ha="center",
                transform=ax.transAxes)
        ax.set_xticks([]), ax.set_yticks([])
    return _fig_uri(fig)


CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.kpis{display:flex;flex-wrap:wrap;gap:.6em}.kpi{background:#f4f6f8;border-radius:6px;padding:.5em .8em}
.kpi b{display:block;font-size:1.3em}.bad{background:#fde2e2}.good{background:#e3f4e3}
img{max-width:100%;cursor:zoom-in}img.zoom{max-width:none;cursor:zoom-out}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
figcaption{font-size:.85em;color:#555}
"""

JS = """
document.querySelectorAll('img').forEach(function (img) {
  img.addEventListener('click', function () { img.classList.toggle('zoom'); });
});
"""


def _kpi(label: str, value, cls: str = "") -> str:
    return f'<div class="kpi {cls}"><b>{html.escape(str(value))}</b>{html.escape(label)}</div>'


def render(summary: dict, timeline: dict, examples: dict[str, np.ndarray]) -> str:
    lat = summary.get("latency_ms", {})
    f = lambda v: "n/a" if v is None else f"{v:.0f} ms"  # noqa: E731
    ok = summary.get("windows_missing") == 0 and summary.get("windows_duplicated") == 0
    kpis = "".join([
        _kpi("beds", summary.get("beds")),
        _kpi("windows stored / accepted", f"{summary.get('windows_written')} / {summary.get('windows_accepted')}"),
        _kpi("missing / duplicated", f"{summary.get('windows_missing')} / {summary.get('windows_duplicated')}",
             "good" if ok else "bad"),
        _kpi("latency p50 / p95 / p99", f"{f(lat.get('p50'))} / {f(lat.get('p95'))} / {f(lat.get('p99'))}"),
        _kpi("backlog windows (before the workers started; not in the latency)",
             summary.get("backlog_windows_written", 0), "bad" if summary.get("backlog_windows_written") else ""),
        _kpi("wire vs raw bytes", f"{summary.get('wire_vs_raw', 0):.3f}"),
        _kpi("dead-lettered", summary.get("frames_dead_lettered")),
        _kpi("alarm transitions", len(timeline.get("alarms", []))),
        _kpi("fidelity holds sent / beds held at the end",
             f"{summary.get('fidelity_hold_updates_sent', 0)} / {len(summary.get('fidelity_holds') or {})}"),
        _kpi("worker CPU", f"{summary.get('worker_cpu_s', 0):.1f} s"),
        _kpi("partitions seen stalled", summary.get("partition_stalls_seen", 0),
             "bad" if summary.get("partition_stalls_seen") else ""),
        _kpi("workers restarted (exit status)",
             ", ".join(f"{r['worker']} ({r['exit_status']})" for r in summary.get("worker_restarts") or []) or "none",
             "bad" if summary.get("worker_restarts") else ""),
    ])
    ex = "".join(f'<figure><img alt="examples" src="{uri}"><figcaption>{html.escape(c)}</figcaption></figure>'
                 for c, uri in example_figures(examples)) or "<p>No example windows were captured in this run.</p>"
    t0 = timeline.get("t0_ms", 0)
    rows = "".join(
        "<tr>" + f"<td>{(a['time'] - t0) / 1000:.1f}</td>" + "".join(
            f"<td>{html.escape(str(a.get(k, '')))}</td>" for k in ("bed", "condition", "priority", "state", "why", "by"))
        + "</tr>" for a in sorted(timeline.get("alarms", []), key=lambda a: a["time"])[:100])
    alarm_table = (f"<table><tr><th>s since the first window</th><th>bed</th><th>condition</th><th>priority</th><th>state</th>"
                   f"<th>why</th><th>by</th></tr>{rows}</table>") if rows else ""
    title = (f"wardstream run: {summary.get('beds')} beds, {summary.get('duration_s', 0):.0f} s, "
             f"{summary.get('workers')} worker(s), source {summary.get('source')}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Codec policy {html.escape(str(summary.get('level_policy')))}; latency is {html.escape(str(summary.get('latency_note', '')))}.
Click a plot to see it at full size.</p>
<div class="kpis">{kpis}</div>
<h2>Latency</h2><img alt="latency histogram" src="{latency_figure(summary)}">
<h2>Throughput and consumer lag</h2><img alt="throughput and lag" src="{throughput_figure(timeline)}">
<h2>Original vs reconstructed</h2>{ex}
<h2>Level mix</h2><img alt="level mix" src="{levels_figure(summary)}">
<h2>Task error, predicted vs observed (audited windows)</h2><img alt="task error" src="{task_error_figure(timeline)}">
<h2>Alarms</h2><img alt="alarms timeline" src="{alarms_figure(timeline)}">{alarm_table}
<script>{JS}</script>
</body></html>
"""


def load_run(run: Path) -> tuple[dict, dict, dict]:
    run = Path(run)
    if not (run / "summary.json").exists():
        raise RunMissing(f"{run} is not a run directory (no summary.json): run `wardstream demo --run-dir {run}`")
    summary = json.loads((run / "summary.json").read_text())
    timeline = json.loads((run / "timeline.json").read_text()) if (run / "timeline.json").exists() else {}
    examples = dict(np.load(run / "examples.npz")) if (run / "examples.npz").exists() else {}
    return summary, timeline, examples


def write_report(run: Path, out: Path | None = None) -> Path:
    summary, timeline, examples = load_run(run)
    out = Path(out) if out else Path(run) / "report.html"
    out.write_text(render(summary, timeline, examples), encoding="utf-8")
    return out
