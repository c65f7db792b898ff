#!/usr/bin/env python3
"""Timeline of one attach or detach of the agent benchmark's traced run.

    FERROFAB_BENCH_TRACE=DIR FERROFAB_BENCH_REAL_VOLUMES=0 \\
        cargo bench -q -p ferrofab-agent --bench agent
    attach_trace.py DIR                  the 5 slowest attaches and detaches
    attach_trace.py DIR CYCLE [detach]   every log line of that cycle

DIR holds cycles.tsv (cycle, wall-clock start in microseconds and
duration of its attach and its detach) and the logs of the controller,
both agents and the workstation's holder. Each line is printed with its
offset in milliseconds from the API call, so a slow cycle shows which
process held it up (e.g. a throttled report, a slow connect).
"""

import datetime
import pathlib
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+(.*)")


def cycles(d):
    rows = (d / "cycles.tsv").read_text().splitlines()[1:]
    return [dict(zip(("cycle", "a_us", "a_ms", "d_us", "d_ms"), r.split("\t"))) for r in rows]


def events(d, start_us, end_us):
    out = []
    for f in sorted(d.glob("*.log")):
        who = f.name.split("_")[0].removesuffix(".log")
        for line in f.read_text(errors="replace").splitlines():
            m = STAMP.match(ANSI.sub("", line))
            if not m:
                continue
            t = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
            us = t.timestamp() * 1e6
            if start_us - 2000 <= us <= end_us:
                out.append((us, who, m.group(2)))
    return sorted(out)


def main():
    d = pathlib.Path(sys.argv[1])
    rows = cycles(d)
    if len(sys.argv) < 3:
        for kind, key in (("attach", "a_ms"), ("detach", "d_ms")):
            worst = sorted(rows, key=lambda r: -float(r[key]))[:5]
            print(f"slowest {kind}es: " + ", ".join(f"cycle {r['cycle']} {r[key]} ms" for r in worst))
        return
    row = next(r for r in rows if r["cycle"] == sys.argv[2])
    kind = sys.argv[3] if len(sys.argv) > 3 else "attach"
    start = int(row["a_us" if kind == "attach" else "d_us"])
    ms = float(row["a_ms" if kind == "attach" else "d_ms"])
    print(f"cycle {row['cycle']} {kind}: {ms} ms")
    for us, who, text in events(d, start, start + ms * 1000 + 5000):
        print(f"{(us - start) / 1000:9.2f} ms  {who:10} {text[:240]}")


if __name__ == "__main__":
    main()
