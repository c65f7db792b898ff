#!/usr/bin/env python3
"""Tables of the SPDK section of `./tests/run bench` (called by bench_spdk.sh).

    bench_spdk.py WORKDIR RUNS SECONDS LOADAVG [OURS-DESCRIPTION [CLK_TCK]]
                                                  markdown on stdout

WORKDIR holds, per run N: rN-baseline.json and rN-baseline-after.json
(`bench --baseline --json` before and after the run's jobs; the ceiling is
the best of both),
rN-perf-spdk-W.txt and rN-perf-ours-W.txt (SPDK perf's output against
nvmf_tgt and against our target), rN-cpu-ours-W.txt (our target's user + system clock
ticks before and after perf drove it: its CPU time per I/O) and
rN-ours-spdk-W.json (our initiator against nvmf_tgt) for every workload
W. Every ratio is taken within one
run, then the range over the runs is printed.
"""

import json
import pathlib
import re
import statistics
import sys

WORKLOADS = [
    # name, label, loopback tests that bound it (the ceiling is the best)
    ("randread-qd1", "4K randread QD1", ["qd1_read_blocking", "qd1_read_server_busy", "qd1_read_busy"]),
    ("randread-qd32", "4K randread QD32", ["qd32_read", "qd32_read_busy"]),
    ("randwrite-qd32", "4K randwrite QD32", ["qd32_write", "qd32_write_busy"]),
    ("read-128k-qd8", "128K read QD8", ["qd8_read_128k", "qd8_read_128k_busy"]),
    ("write-128k-qd8", "128K write QD8", ["qd8_write_128k", "qd8_write_128k_busy"]),
]


def perf(path):
    """(IOPS, p50 µs) from SPDK perf's output."""
    text = path.read_text()
    total = re.search(r"^Total\s*:\s*([\d.]+)", text, re.M)
    if not total:
        raise SystemExit(f"{path}: no Total line")
    p50 = re.search(r"^\s*50\.00000%\s*:\s*([\d.]+)us", text, re.M)
    return float(total.group(1)), float(p50.group(1)) if p50 else 0.0


def ours(path):
    """(IOPS, p50 µs) from `bench --json`."""
    r = json.loads(path.read_text())
    return r["total"]["ops_per_s"], r["total"]["latency"]["p50_us"]


def ceiling(paths, names):
    """Best ops/s among the loopback tests `names` in the reports `paths`
    that exist, and which test it was."""
    results = [x for p in paths if p.exists() for x in json.loads(p.read_text())["results"]]
    return max(((x["result"]["ops_per_s"], x["name"]) for x in results if x["name"] in names),
               default=(0.0, "-"))


def rng(xs, fmt="{:.2f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    lo, hi = min(xs), max(xs)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}–{fmt.format(hi)}"


def kiops(xs):
    xs = [x for x in xs if x]
    if xs and max(xs) < 10_000:
        return rng([x / 1000 for x in xs], "{:.2f}K")
    return rng([x / 1000 for x in xs], "{:.0f}K")


def cpu_us_per_io(path, iops, secs, tick):
    """Our target's CPU µs per I/O while perf drove it, from the clock
    ticks before and after (None when not recorded)."""
    if not path.exists() or not iops:
        return None
    ticks = [int(x) for x in path.read_text().split()]
    if len(ticks) != 2:
        return None
    return (ticks[1] - ticks[0]) / tick * 1e6 / (iops * float(secs))


def div(a, b):
    return a / b if a and b else None


def main():
    work, runs, secs, load = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    # Where our target's namespace lives (FF_SPDK_OURS_BACKEND), and the
    # clock ticks per second of /proc/PID/stat.
    ours_desc = sys.argv[5] if len(sys.argv) > 5 else "a page-cache file on /dev/shm"
    tick = int(sys.argv[6]) if len(sys.argv) > 6 else 100
    rows = {}
    for name, _, names in WORKLOADS:
        per = []
        for n in range(1, runs + 1):
            c, cname = ceiling([work / f"r{n}-baseline.json", work / f"r{n}-baseline-after.json"], names)
            ps, ps50 = perf(work / f"r{n}-perf-spdk-{name}.txt")
            po, po50 = perf(work / f"r{n}-perf-ours-{name}.txt")
            cpu = cpu_us_per_io(work / f"r{n}-cpu-ours-{name}.txt", po, secs, tick)
            oi, oi50 = ours(work / f"r{n}-ours-spdk-{name}.json")
            intr = work / f"r{n}-ours-spdk-{name}-interrupt.json"
            ii, ii50 = ours(intr) if intr.exists() else (None, None)
            adap = work / f"r{n}-ours-spdk-{name}-adaptive.json"
            ai, ai50 = ours(adap) if adap.exists() else (None, None)
            per.append(dict(c=c, cname=cname, ps=ps, ps50=ps50, po=po, po50=po50, cpu=cpu,
                            oi=oi, oi50=oi50, ii=ii, ii50=ii50, ai=ai, ai50=ai50))
        rows[name] = per

    print("## Against SPDK v23.01.1 (same run)\n")
    print(f"`./tests/run bench` (tests/suites/bench_spdk.sh): {runs} run(s), {secs} s per "
          f"perf/bench run, every target on core 1 and every client on core 0; the loopback "
          f"ceiling is `bench --baseline` (pipelined and batched, client core 0, server core 1) "
          f"of the same run, before and after its jobs, the best of the tests named. Load average at the end: {load}. "
          f"Each cell is the range over the runs of a same-run figure.\n")

    def row(label, per, mine, mine50, ceiling_col, spdk_vs_ceiling=True, cpu_col=False):
        """One line: `mine` (a key of the per-run dicts) against SPDK perf
        to nvmf_tgt, and both against the ceiling of the same run (SPDK's
        left out when `spdk_vs_ceiling` is false: a row that repeats it)."""
        p50 = ", ".join(f"{r[mine50]:.1f} vs {r['ps50']:.1f}" for r in per)
        names = "/".join(sorted({r["cname"] for r in per}))
        ceil = f"| {kiops([r['c'] for r in per])} ({names}) " if ceiling_col else ""
        spdk_c = rng([div(r["ps"], r["c"]) for r in per]) + "×" if spdk_vs_ceiling else ""
        cpu = f" {rng([r['cpu'] for r in per], '{:.1f}')} |" if cpu_col else ""
        print(f"| {label} | {kiops([r[mine] for r in per])} | {kiops([r['ps'] for r in per])} "
              f"| {rng([div(r[mine], r['ps']) for r in per])}× | {p50} {ceil}"
              f"| {rng([div(r[mine], r['c']) for r in per])}× "
              f"| {spdk_c} |{cpu}")

    print("**Our target, driven by SPDK's perf, against SPDK's nvmf_tgt (RAM bdev) driven the same way** "
          f"(ours: {ours_desc}):\n")
    print("| workload | perf → ours | perf → nvmf_tgt | ours / SPDK | p50 ours vs SPDK µs "
          "| loopback ceiling | ours / ceiling | SPDK / ceiling | our target's CPU µs/I/O |")
    print("|---|---:|---:|---:|---|---|---:|---:|---:|")
    for name, label, _ in WORKLOADS:
        row(label, rows[name], "po", "po50", True, cpu_col=True)

    print("\n**Our initiator (`ferrofab-nvmeof bench`, busy-polling) against SPDK's perf, "
          "both against SPDK's nvmf_tgt:**\n")
    print("| workload | ours → nvmf_tgt | perf → nvmf_tgt | ours / SPDK perf | p50 ours vs SPDK µs "
          "| ours / ceiling | SPDK / ceiling |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for name, label, _ in WORKLOADS:
        row(label, rows[name], "oi", "oi50", False)
        if rows[name][0]["ii"] is not None:
            row(f"{label}, ours in interrupt mode", rows[name], "ii", "ii50", False, False)
        if rows[name][0]["ai"] is not None:
            row(f"{label}, ours adaptive (the default)", rows[name], "ai", "ai50", False, False)

    who = [("ps", "perf → nvmf_tgt"), ("po", "perf → ours"), ("oi", "ours → nvmf_tgt"),
           ("ii", "ours (interrupt) → nvmf_tgt"), ("ai", "ours (adaptive) → nvmf_tgt")]

    def beat(r):
        """Who beat the ceiling `r['c']` of one run, and by how much."""
        return ", ".join(f"{w} {r[k] / r['c']:.2f}×" for k, w in who if (r.get(k) or 0) > r["c"])

    beaten = [f"{label} in run {n + 1} ({beat(r)})"
              for name, label, _ in WORKLOADS for n, r in enumerate(rows[name])
              if r["c"] and beat(r)]
    missing = sorted({label for name, label, _ in WORKLOADS for r in rows[name] if not r["c"]})
    print()
    if missing:
        print("**No loopback ceiling** for " + ", ".join(missing) + " (the baseline lacks its tests).\n")
    if beaten:
        print("**The loopback ceiling was beaten** (a peer faster than the raw exchange, so it is "
              "no ceiling there): " + "; ".join(beaten) + ".")
    else:
        print("The loopback ceiling held: no NVMe/TCP pair beat it in any workload of any run.")


if __name__ == "__main__":
    main()
