#!/usr/bin/env python3
"""Renders docs/grafana/ferrofab.json as a picture from real scrapes.

Grafana cannot be installed on the build machine, so this draws the same
panels (titles, layout, units from the dashboard JSON) with matplotlib from
real /metrics scrapes of a running cluster, e.g. `ferrofab dev`. Each
panel's PromQL expression is evaluated by a small Python function below
that computes the same quantity from the scraped samples (rates are the
difference of two consecutive scrapes over their interval); it is not a
PromQL engine, and the picture says so in its footer.

Usage (with `ferrofab dev` running; its summary prints the URLs):

    python3 tests/tools/render_dashboard.py \\
        --controller http://127.0.0.1:PORT/metrics \\
        --agent http://127.0.0.1:PORT/metrics --agent http://127.0.0.1:PORT/metrics \\
        --samples 30 --interval 2 --write-to /path/to/ferrofab-dev/volumes/demo-1 \\
        --out docs/grafana/ferrofab.png

`--write-to FILE` writes and reads 1 MiB blocks of the exposed volume file
between scrapes so the I/O panels show traffic. Needs matplotlib (`pip
install matplotlib`).
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.request

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """Prometheus text or OpenMetrics → {(name, labels tuple): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(LABEL.findall(m.group(3) or "")))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            pass
    return out


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return parse(r.read().decode())


class Scrapes:
    """Timestamped scrapes of every endpoint, merged per instant."""

    def __init__(self):
        self.points = []  # (t, {job: samples})

    def add(self, t, by_job):
        self.points.append((t, by_job))

    def series(self, job_prefix, name):
        """[(t, {labels: value})] of `name` over the jobs starting with job_prefix."""
        out = []
        for t, by_job in self.points:
            vals = {}
            for job, samples in by_job.items():
                if not job.startswith(job_prefix):
                    continue
                for (n, labels), v in samples.items():
                    if n == name:
                        vals[labels + (("job", job),)] = v
            out.append((t, vals))
        return out

    def last(self, job_prefix, name):
        return self.series(job_prefix, name)[-1][1] if self.points else {}


def lab(labels, key):
    return dict(labels).get(key, "")


def rates(s, job, name, by):
    """sum by (by) (rate(name)) between consecutive scrapes: {legend: [(t, v)]}."""
    ser = s.series(job, name)
    out = {}
    for (t0, a), (t1, b) in zip(ser, ser[1:]):
        sums = {}
        for labels, v in b.items():
            key = tuple(lab(labels, k) for k in by)
            prev = a.get(labels)
            if prev is None or v < prev:
                continue
            sums[key] = sums.get(key, 0.0) + (v - prev) / (t1 - t0)
        for key, v in sums.items():
            out.setdefault(key, []).append((t1, v))
    return out


def hist_p99(s, name):
    """histogram_quantile(0.99) per method over the whole window."""
    ser = s.series("controller", name)
    if len(ser) < 2:
        return {}
    (_, first), (_, last) = ser[0], ser[-1]
    per = {}
    for labels, v in last.items():
        d = dict(labels)
        delta = v - first.get(labels, 0.0)
        le = float("inf") if d["le"] == "+Inf" else float(d["le"])
        per.setdefault(d.get("method", ""), []).append((le, delta))
    out = {}
    for method, buckets in per.items():
        buckets.sort()
        total = buckets[-1][1]
        if total <= 0:
            continue
        target = 0.99 * total
        prev_le, prev_c = 0.0, 0.0
        for le, c in buckets:
            if c >= target:
                if le == float("inf"):
                    out[method] = prev_le
                else:
                    frac = (target - prev_c) / (c - prev_c) if c > prev_c else 1.0
                    out[method] = prev_le + (le - prev_le) * frac
                break
            prev_le, prev_c = le, c
    return out


# ---------------------------------------------------------------- panels
# Each returns ("series", {legend: [(t, v)]}) or ("values", {legend: v})
# or ("table", [rows]).

def p_nodes(s):
    r = s.last("controller", "ferrofab_controller_node_ready")
    ready = sum(r.values())
    return "values", {"ready": ready, "not ready": len(r) - ready}



def p_pool_alloc(s):
    a = s.last("controller", "ferrofab_controller_pool_allocated_bytes")
    c = s.last("controller", "ferrofab_controller_pool_capacity_bytes")
    return "values", {lab(k, "pool"): v / c[k] for k, v in a.items() if c.get(k)}


def p_pool_free(s):
    out = {}
    for t, vals in s.series("controller", "ferrofab_controller_pool_free_bytes"):
        for k, v in vals.items():
            out.setdefault(f"{lab(k, 'pool')} on {lab(k, 'node')}", []).append((t, v))
    return "series", out


def p_burst(s):
    now = s.points[-1][0]
    e = s.last("controller", "ferrofab_controller_volume_expiry_timestamp_seconds")
    return "values", {f"{lab(k, 'volume')} ({lab(k, 'tenant')})": v - now for k, v in e.items()}


def p_iops(s):
    r = rates(s, "agent", "ferrofab_agent_volume_reads_total", ("volume", "pool"))
    w = rates(s, "agent", "ferrofab_agent_volume_writes_total", ("volume", "pool"))
    out = {}
    for key in set(r) | set(w):
        rs, ws = dict(r.get(key, [])), dict(w.get(key, []))
        out[f"{key[0]} ({key[1]})"] = [(t, rs.get(t, 0) + ws.get(t, 0)) for t in sorted(set(rs) | set(ws))]
    return "series", out


def p_bw(s):
    out = {}
    for name, word in (("read_bytes", "read"), ("write_bytes", "write")):
        for key, pts in rates(s, "agent", f"ferrofab_agent_volume_{name}_total", ("volume",)).items():
            out[f"{key[0]} {word}"] = pts
    return "series", out


def p_latency(s):
    busy = rates(s, "agent", "ferrofab_agent_volume_busy_seconds_total", ("volume",))
    r = rates(s, "agent", "ferrofab_agent_volume_reads_total", ("volume",))
    w = rates(s, "agent", "ferrofab_agent_volume_writes_total", ("volume",))
    out = {}
    for key, pts in busy.items():
        rs, ws = dict(r.get(key, [])), dict(w.get(key, []))
        vals = [(t, b / (rs.get(t, 0) + ws.get(t, 0))) for t, b in pts if rs.get(t, 0) + ws.get(t, 0) > 0]
        if vals:
            out[key[0]] = vals
    return "series", out


def p_att_state(s):
    out = {}
    for k in s.last("agent", "ferrofab_agent_connection_state"):
        out[lab(k, "state")] = out.get(lab(k, "state"), 0) + 1
    return "values", out


def p_hosts(s):
    h = s.last("agent", "ferrofab_agent_volume_connected_hosts")
    return "values", {lab(k, "volume") or lab(k, "nqn"): v for k, v in h.items()}


def p_events(s):
    out = {}
    for name, word in (("recorded", "recorded"), ("dropped", "dropped")):
        for _, pts in rates(s, "controller", f"ferrofab_controller_events_{name}_total", ()).items():
            out[word] = pts
    return "series", out


def p_api(s):
    return "values", hist_p99(s, "ferrofab_controller_api_latency_seconds_bucket")


def per_job(s, name, rate=False):
    out = {}
    if rate:
        for job in {j for _, by in s.points for j in by}:
            for _, pts in rates(s, job, name, ()).items():
                out[job] = pts
        return out
    for t, by in s.points:
        for job, samples in by.items():
            for (n, _), v in samples.items():
                if n == name:
                    out.setdefault(job, []).append((t, v))
    return out


def p_cpu(s):
    return "series", per_job(s, "process_cpu_seconds_total", rate=True)


def p_rss(s):
    return "series", per_job(s, "process_resident_memory_bytes")


def p_fds(s):
    return "series", per_job(s, "process_open_fds")


def p_builds(s):
    rows = []
    for _, by in s.points[-1:]:
        for job, samples in sorted(by.items()):
            for (n, labels), _ in samples.items():
                if n == "ferrofab_build_info":
                    d = dict(labels)
                    rows.append([job, d.get("component", ""), d.get("version", ""), d.get("commit", ""), d.get("build_date", "")])
    return "table", [["endpoint", "component", "version", "commit", "build date"]] + rows


PANELS = {
    "Nodes ready": p_nodes,
    "Pool allocation": p_pool_alloc,
    "Pool free": p_pool_free,
    "Burst volumes: time left": p_burst,
    "Volume IOPS": p_iops,
    "Volume bandwidth": p_bw,
    "Volume mean latency": p_latency,
    "Attachments by state": p_att_state,
    "Connected hosts per volume": p_hosts,
    "Events": p_events,
    "API latency p99": p_api,
    "CPU per daemon": p_cpu,
    "Resident memory": p_rss,
    "Open file descriptors": p_fds,
    "Builds": p_builds,
}


def fmt(v, unit):
    if unit == "bytes":
        for u in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(v) < 1024 or u == "TiB":
                return f"{v:.1f} {u}" if u != "B" else f"{v:.0f} B"
            v /= 1024
    if unit == "Bps":
        return fmt(v, "bytes") + "/s"
    if unit == "percentunit":
        return f"{v * 100:.1f}%"
    if unit == "s":
        if abs(v) >= 86400:
            return f"{v / 86400:.1f} d"
        if abs(v) >= 3600:
            return f"{v / 3600:.1f} h"
        if abs(v) >= 1:
            return f"{v:.1f} s"
        return f"{v * 1000:.2f} ms"
    if unit == "iops":
        return f"{v:.0f} io/s"
    if unit == "ops":
        return f"{v:.2f}/s"
    return f"{v:g}"


def draw(dash, s, out, note):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    bg, panel_bg, fg, grid = "#111217", "#181b1f", "#ccccdc", "#2c3038"
    palette = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c", "#8ab8ff", "#96d98d"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
    unit_w, unit_h = 0.75, 0.42
    W, H = 24 * unit_w, rows * unit_h + 1.2
    fig = plt.figure(figsize=(W, H), facecolor=bg)
    fig.text(0.01, 1 - 0.35 / H, dash["title"], color=fg, fontsize=18, weight="bold", va="top")
    fig.text(0.01, 0.15 / H, note, color="#8e8e9e", fontsize=9, va="bottom")
    t0 = s.points[0][0]
    for p in dash["panels"]:
        g = p["gridPos"]
        pad = 0.08
        # Room for the tick labels inside the panel's own cell.
        inner = 0.95 if p["type"] in ("timeseries", "bargauge") else 0.0
        below = 0.35 if p["type"] in ("timeseries", "bargauge") else 0.0
        left = (g["x"] * unit_w + pad + inner) / W
        bottom = (H - 0.8 - (g["y"] + g["h"]) * unit_h + pad + below) / H
        width = (g["w"] * unit_w - 2 * pad - inner - 0.15) / W
        height = (g["h"] * unit_h - 2 * pad - 0.3 - below) / H
        ax = fig.add_axes([left, bottom, width, height], facecolor=panel_bg)
        fig.text((g["x"] * unit_w + pad) / W, bottom + height + 0.05 / H, p["title"], color=fg, fontsize=11, weight="bold")
        for side in ax.spines.values():
            side.set_color(grid)
        ax.tick_params(colors=fg, labelsize=8)
        unit = p["fieldConfig"]["defaults"].get("unit", "none")
        kind, data = PANELS[p["title"]](s)
        if kind == "series":
            for i, (legend, pts) in enumerate(sorted(data.items())):
                if pts:
                    ax.plot([t - t0 for t, _ in pts], [v for _, v in pts], color=palette[i % len(palette)], label=str(legend), lw=1.6)
            ax.grid(color=grid, lw=0.5)
            ax.set_xlabel("seconds", color=fg, fontsize=8)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, u=unit: fmt(v, u)))
            if data:
                ax.legend(fontsize=7, facecolor=panel_bg, edgecolor=grid, labelcolor=fg, loc="upper left")
            else:
                ax.text(0.5, 0.5, "no data", color="#8e8e9e", ha="center", va="center", transform=ax.transAxes)
        elif kind == "values" and p["type"] == "stat":
            ax.axis("off")
            items = list(data.items())
            for i, (legend, v) in enumerate(items):
                x = (i + 0.5) / max(len(items), 1)
                ax.text(x, 0.55, fmt(v, unit), color=palette[i % len(palette)], fontsize=26, weight="bold", ha="center", transform=ax.transAxes)
                ax.text(x, 0.2, legend, color=fg, fontsize=10, ha="center", transform=ax.transAxes)
            if not items:
                ax.text(0.5, 0.5, "no data", color="#8e8e9e", ha="center", transform=ax.transAxes)
        elif kind == "values":
            items = sorted(data.items())
            if items:
                ax.barh([str(k) for k, _ in items], [v for _, v in items], height=0.5, color=[palette[i % len(palette)] for i in range(len(items))])
                ax.set_ylim(-0.75, max(len(items), 2) - 0.25)
                for i, (_, v) in enumerate(items):
                    ax.text(v, i, " " + fmt(v, unit), color=fg, va="center", fontsize=8)
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _, u=unit: fmt(v, u)))
                ax.invert_yaxis()
            else:
                ax.text(0.5, 0.5, "no data", color="#8e8e9e", ha="center", va="center", transform=ax.transAxes)
            ax.grid(axis="x", color=grid, lw=0.5)
        else:
            ax.axis("off")
            table = ax.table(cellText=data[1:] or [["-"] * len(data[0])], colLabels=data[0], loc="upper left", cellLoc="left")
            table.auto_set_font_size(False)
            table.set_fontsize(9)
            for cell in table.get_celld().values():
                cell.set_facecolor(panel_bg)
                cell.set_edgecolor(grid)
                cell.get_text().set_color(fg)
    fig.savefig(out, dpi=80, facecolor=bg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dashboard", default=os.path.join(os.path.dirname(__file__), "..", "..", "docs", "grafana", "ferrofab.json"))
    ap.add_argument("--controller", required=True, help="controller /metrics URL")
    ap.add_argument("--agent", action="append", default=[], help="agent /metrics URL (repeatable)")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--write-to", help="exposed volume file to write and read between scrapes")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    dash = json.load(open(a.dashboard))
    missing = [p["title"] for p in dash["panels"] if p["title"] not in PANELS]
    if missing:
        sys.exit(f"panels without an evaluator: {missing}")
    s = Scrapes()
    block = os.urandom(1 << 20)
    for i in range(a.samples):
        by_job = {"controller": scrape(a.controller)}
        for n, url in enumerate(a.agent):
            by_job[f"agent-{n + 1}"] = scrape(url)
        s.add(time.time(), by_job)
        if a.write_to and i + 1 < a.samples:
            # Varying load: more blocks in the middle of the run.
            n = 4 + 12 * (i % 10 < 5)
            with open(a.write_to, "r+b") as f:
                for j in range(n):
                    f.seek(((i * 16 + j) % 64) << 20)
                    f.write(block)
                f.flush()
                os.fsync(f.fileno())
                f.seek(0)
                f.read(n << 20)
        time.sleep(a.interval)
    note = (f"Rendered by tests/tools/render_dashboard.py with matplotlib from {a.samples} real scrapes "
            f"({a.interval:g} s apart) of a running `ferrofab dev`; each panel's PromQL is mirrored in Python "
            "(rates between consecutive scrapes).\nNot a Grafana screenshot. In `ferrofab dev` the controller and both agents "
            "run in one process, so the three process_* lines are that one process.")
    draw(dash, s, a.out, note)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
