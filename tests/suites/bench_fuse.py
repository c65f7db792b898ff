#!/usr/bin/env python3
"""The FUSE exposure and the microscope workload (issue 20, items 3 and 4),
part of `./tests/run bench` (called by bench.sh through bench_fuse.sh).

    bench_fuse.py BIN MICROSCOPE OUT ROUNDS    all rounds, then the summary

BIN is `ferrofab-nvmeof`, MICROSCOPE the `microscope` bench binary of
ferrofab-nvmeof-expose. One `serve` (poll mode interrupt) exports one
namespace, a page-cache file on /dev/shm of FF_MICRO_SIZE (default 8GiB,
lowered with a note when the machine's free memory cannot hold it).

Per round, each pair back to back:

* **ratios** (item 3): fio on the file `connect` exposes against
  `ferrofab-nvmeof bench` on the same namespace at the same size and depth:
  1 MiB sequential write and read with psync (QD1) and libaio QD4, and
  4 KiB randread libaio QD32;
* **microscope** (item 4): the `microscope` binary writes FF_MICRO_SIZE in
  1 MiB blocks, fsyncs, and reads it back, once through the exposed file
  and once through the initiator alone.

Poll mode of the client sides (FF_FUSE_POLL, default "interrupt"): the
same on the `connect` holder and on `bench`; the target always interrupt.
FF_FUSE_JOBS (comma-separated job names, default all) limits the pairs.

CPU: the client side (bench, or fio / microscope plus the `connect`
holder) and the target (`serve`), from getrusage and /proc/PID/stat.
Pinning (FF_FUSE_PIN, default "0:1"): clients on the first CPU, the target
on the second, so each side has the same core in every pair; "none" runs
unpinned. Results: OUT/fuse-*.json; summary: OUT/fuse.md.
"""

import json
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_initiator import children_cpu_s, free_port, proc_cpu_s, wait_line  # noqa: E402

SHM = pathlib.Path("/dev/shm/ferrofab-fuse-bench")
NQN = "nqn.2026-11.io.ferrofab:bench-fuse"
# 2 TB/h, the data rate of one light-sheet microscope, in GB/s.
MICROSCOPE_GB_S = 2e12 / 3600 / 1e9
GIB = 1 << 30


def parse_size(s):
    units = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": GIB, "gib": GIB}
    s = s.strip().lower()
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(num) * units[s[len(num):]]


def mem_available():
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def fitting_size(wanted):
    """The namespace lives in RAM: keep 4 GiB of the machine free. Whole
    GiB, at least one."""
    wanted = max(GIB, wanted // GIB * GIB)
    room = mem_available() - 4 * GIB
    if wanted <= room:
        return wanted, None
    size = max(GIB, room // GIB * GIB)
    return size, (f"FF_MICRO_SIZE {wanted / GIB:.0f} GiB does not fit the free memory "
                  f"({mem_available() / GIB:.1f} GiB available); ran {size / GIB:.0f} GiB")


def poll_mode():
    """The initiator's poll mode on both client sides, the `connect` holder
    and `bench` (FF_FUSE_POLL, default "interrupt"; the workstation agent's
    and `connect`'s own default is "adaptive")."""
    return os.environ.get("FF_FUSE_POLL", "interrupt")


def pin_prefix(role):
    spec = os.environ.get("FF_FUSE_PIN", "0:1")
    if spec == "none":
        return []
    client, target = spec.split(":")
    return ["taskset", "-c", client if role == "client" else target]


class Serve:
    def __init__(self, bin_, out, path, size):
        self.port = free_port()
        self.log = out / "fuse-serve.log"
        conf = out / "fuse-serve.toml"
        conf.write_text(
            f'[target]\npoll_mode = "interrupt"\n\n[[listener]]\naddress = "127.0.0.1:{self.port}"\n\n'
            f'[[subsystem]]\nnqn = "{NQN}"\nallow_any_host = true\n\n'
            f'[[subsystem.namespace]]\nnsid = 1\npath = "{path}"\nsize = "{size // GIB}GiB"\n')
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(pin_prefix("target") + [bin_, "serve", "--no-watch", "-c", str(conf)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_line(self.log, "ready, serving")

    def cpu(self):
        return proc_cpu_s(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Holder:
    """`ferrofab-nvmeof connect`: the process that holds the FUSE mount."""

    def __init__(self, bin_, out, serve):
        self.bin, self.run_dir = bin_, out / "fuse-run"
        self.file = out / "fuse-volumes" / "mic"
        self.log = out / "fuse-connect.log"
        cmd = pin_prefix("client") + [
            bin_, "connect", "-a", "127.0.0.1", "-s", str(serve.port), "-n", NQN, "--poll-mode",
            poll_mode(), "--expose-dir", str(out / "fuse-volumes"), "--name", "mic", "--run-dir",
            str(self.run_dir)]
        self.command = shlex.join(cmd)
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_line(self.log, "exposed at")

    def cpu(self):
        return proc_cpu_s(self.proc.pid)

    def stop(self):
        subprocess.run([self.bin, "disconnect", "-n", NQN, "--run-dir", str(self.run_dir)],
                       check=True, stdout=subprocess.DEVNULL)
        self.proc.wait(timeout=60)


def measured(cmd, serve, holder=None):
    """Run cmd; wall seconds, its CPU (children rusage), the holder's and
    the target's CPU over the run."""
    h0 = holder.cpu() if holder else 0.0
    t0, c0 = serve.cpu(), children_cpu_s()
    start = time.monotonic()
    res = subprocess.run(pin_prefix("client") + cmd, check=True, capture_output=True, text=True)
    wall = time.monotonic() - start
    return res.stdout, dict(wall_s=wall, tool_cpu_s=children_cpu_s() - c0,
                            holder_cpu_s=(holder.cpu() - h0) if holder else 0.0,
                            target_cpu_s=serve.cpu() - t0, command=shlex.join(cmd))


# name: (bench args, fio args)
RATIO_JOBS = {
    "write-1m-psync": (["--pattern", "write", "--bs", "1M", "--qd", "1"],
                       ["--rw=write", "--bs=1M", "--ioengine=psync"]),
    "read-1m-psync": (["--pattern", "read", "--bs", "1M", "--qd", "1"],
                      ["--rw=read", "--bs=1M", "--ioengine=psync"]),
    "write-1m-libaio-qd4": (["--pattern", "write", "--bs", "1M", "--qd", "4"],
                            ["--rw=write", "--bs=1M", "--ioengine=libaio", "--iodepth=4"]),
    "read-1m-libaio-qd4": (["--pattern", "read", "--bs", "1M", "--qd", "4"],
                           ["--rw=read", "--bs=1M", "--ioengine=libaio", "--iodepth=4"]),
    "randread-4k-libaio-qd32": (["--pattern", "randread", "--bs", "4k", "--qd", "32"],
                                ["--rw=randread", "--bs=4k", "--ioengine=libaio", "--iodepth=32"]),
}


def ratio_jobs():
    """RATIO_JOBS, or those named in FF_FUSE_JOBS (comma-separated)."""
    names = [n for n in os.environ.get("FF_FUSE_JOBS", "").split(",") if n]
    unknown = [n for n in names if n not in RATIO_JOBS]
    if unknown:
        sys.exit(f"bench_fuse: unknown FF_FUSE_JOBS {unknown}; known: {', '.join(RATIO_JOBS)}")
    return {n: RATIO_JOBS[n] for n in names} if names else RATIO_JOBS


def ratio_round(bin_, out, rnd, serve, jobtime, size):
    remote = ["-a", "127.0.0.1", "-s", str(serve.port), "-n", NQN, "--poll-mode", poll_mode()]
    for name, (bargs, fargs) in ratio_jobs().items():
        # The initiator alone.
        stdout, m = measured([bin_, "bench", *remote, *bargs, "--time", jobtime, "--json"], serve)
        t = json.loads(stdout)["total"]
        ops = max(t["ops"], 1)
        init = dict(m, mb_s=t["mb_per_s"], iops=t["ops_per_s"],
                    client_cpu_us=m["tool_cpu_s"] / ops * 1e6, target_cpu_us=m["target_cpu_s"] / ops * 1e6)
        # The same through the exposed file.
        holder = Holder(bin_, out, serve)
        try:
            stdout, m = measured(
                ["fio", "--name=ff", f"--filename={holder.file}", "--direct=1", "--time_based",
                 f"--runtime={jobtime}", f"--size={size}", "--output-format=json", *fargs],
                serve, holder)
        finally:
            holder.stop()
        j = json.loads(stdout)["jobs"][0]
        rw = "write" if "write" in fargs[0] else "read"
        ops = max(j[rw]["total_ios"], 1)
        secs = max(j["job_runtime"], 1) / 1000
        fuse = dict(m, mb_s=j[rw]["io_bytes"] / secs / 1e6, iops=ops / secs, holder=holder.command,
                    client_cpu_us=(m["tool_cpu_s"] + m["holder_cpu_s"]) / ops * 1e6,
                    holder_cpu_us=m["holder_cpu_s"] / ops * 1e6,
                    target_cpu_us=m["target_cpu_s"] / ops * 1e6)
        rec = dict(name=name, round=rnd, initiator=init, fuse=fuse,
                   ratio=fuse["mb_s"] / init["mb_s"] if init["mb_s"] else 0.0)
        (out / f"fuse-ratio-{name}-r{rnd}.json").write_text(json.dumps(rec, indent=1))
        print(f"  {name}: initiator {init['mb_s']:.0f} MB/s, FUSE {fuse['mb_s']:.0f} MB/s, "
              f"ratio {rec['ratio']:.2f}", file=sys.stderr)


def microscope_round(bin_, micro, out, rnd, serve, size):
    base = [micro, "--size", str(size), "--bs", "1MiB", "--qd", os.environ.get("FF_MICRO_QD", "1")]
    paths = [("initiator", None), ("fuse", True)]
    if rnd % 2 == 0:
        paths.reverse()  # neither path always runs on a warmer machine
    for path, _ in paths:
        holder = Holder(bin_, out, serve) if path == "fuse" else None
        try:
            where = (["--file", str(holder.file)] if holder else
                     ["--addr", f"127.0.0.1:{serve.port}", "--nqn", NQN])
            for phase in ("write", "read"):
                stdout, m = measured(base + where + ["--phase", phase], serve, holder)
                r = json.loads(stdout.strip().splitlines()[-1])
                if r["verify_failures"]:
                    raise SystemExit(f"microscope {path} {phase}: {r['verify_failures']} blocks failed verify")
                gb = r["bytes"] / 1e9
                rec = dict({**r, **m}, path=path, round=rnd,
                           microscopes=r["gb_per_s"] / MICROSCOPE_GB_S,
                           client_cpu_s_per_gb=(r["cpu_s"] + m["holder_cpu_s"]) / gb,
                           holder_cpu_s_per_gb=m["holder_cpu_s"] / gb,
                           target_cpu_s_per_gb=m["target_cpu_s"] / gb,
                           holder_command=holder.command if holder else None)
                (out / f"fuse-micro-{path}-{phase}-r{rnd}.json").write_text(json.dumps(rec, indent=1))
                print(f"  microscope {path} {phase}: {r['gb_per_s']:.2f} GB/s "
                      f"({rec['microscopes']:.1f} microscopes), client {rec['client_cpu_s_per_gb']:.2f} "
                      f"+ target {rec['target_cpu_s_per_gb']:.2f} CPU s/GB", file=sys.stderr)
        finally:
            if holder:
                holder.stop()


def summary(out, size, note):
    med = statistics.median
    lines = ["## The FUSE exposure and the microscope workload (issue 20, items 3 and 4)", ""]
    if note:
        lines += [f"Note: {note}.", ""]
    pin = os.environ.get("FF_FUSE_PIN", "0:1")
    lines += [f"Pinning `{pin}` (client CPU : target CPU); client poll mode `{poll_mode()}` (holder and "
              f"`bench`); load at the end: "
              f"{pathlib.Path('/proc/loadavg').read_text().split()[:3]}.", "",
              "### fio on the exposed file vs `ferrofab-nvmeof bench` (same namespace, same run)", "",
              "| job | initiator MB/s | FUSE MB/s | ratio (per round, median) | goal | initiator client CPU µs/IO "
              "| FUSE client (fio + holder) CPU µs/IO | of it the holder | target CPU µs/IO (initiator / FUSE) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name in RATIO_JOBS:
        rs = [json.loads(f.read_text()) for f in sorted(out.glob(f"fuse-ratio-{name}-r*.json"))]
        if not rs:
            continue
        g = lambda side, k: med(r[side][k] for r in rs)
        goal = "0.5" if "4k" in name else "0.7"
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in rs)
        lines.append(f"| {name} | {g('initiator', 'mb_s'):.0f} | {g('fuse', 'mb_s'):.0f} | "
                     f"{med(r['ratio'] for r in rs):.2f} ({ratios}) | ≥ {goal} | "
                     f"{g('initiator', 'client_cpu_us'):.1f} | {g('fuse', 'client_cpu_us'):.1f} | "
                     f"{g('fuse', 'holder_cpu_us'):.1f} | {g('initiator', 'target_cpu_us'):.1f} / "
                     f"{g('fuse', 'target_cpu_us'):.1f} |")
    lines += ["", f"### The microscope workload: {size / GIB:.0f} GiB in 1 MiB blocks, fsync, read back", "",
              f"A microscope = 2 TB/h = {MICROSCOPE_GB_S:.3f} GB/s. CPU s per GB: client = the microscope "
              "process (with the initiator in it, or writing the file) plus the `connect` holder; "
              "target = `serve`.", "",
              "| path | phase | GB/s (median; rounds) | microscopes served | client CPU s/GB | of it the holder "
              "| target CPU s/GB | fsync s |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for path in ("initiator", "fuse"):
        for phase in ("write", "read"):
            rs = [json.loads(f.read_text()) for f in sorted(out.glob(f"fuse-micro-{path}-{phase}-r*.json"))]
            if not rs:
                continue
            g = lambda k: med(r[k] for r in rs)
            each = ", ".join(f"{r['gb_per_s']:.2f}" for r in rs)
            lines.append(f"| {'FUSE file' if path == 'fuse' else 'initiator alone'} | {phase} | "
                         f"{g('gb_per_s'):.2f} ({each}) | {g('microscopes'):.1f} | "
                         f"{g('client_cpu_s_per_gb'):.2f} | {g('holder_cpu_s_per_gb'):.2f} | "
                         f"{g('target_cpu_s_per_gb'):.2f} | {g('fsync_seconds'):.3f} |")
    cmds = sorted({json.loads(f.read_text())["command"] for f in out.glob("fuse-micro-*-r1.json")})
    ratio_cmds = []
    for f in sorted(out.glob("fuse-ratio-*-r1.json")):
        r = json.loads(f.read_text())
        ratio_cmds += [r["initiator"]["command"], r["fuse"]["command"]]
    holder = next((json.loads(f.read_text())["fuse"]["holder"] for f in out.glob("fuse-ratio-*-r1.json")), "")
    lines += ["", "Commands (round 1; ports change per run):", "", "    " + holder]
    lines += ["    " + c for c in ratio_cmds + cmds]
    (out / "fuse.md").write_text("\n".join(lines) + "\n")


def main():
    bin_, micro, out, rounds = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), int(sys.argv[4])
    jobtime = os.environ.get("FF_FUSE_TIME", "5s")
    size, note = fitting_size(parse_size(os.environ.get("FF_MICRO_SIZE", "8GiB")))
    if note:
        print(f"bench_fuse: {note}", file=sys.stderr)
    SHM.mkdir(parents=True, exist_ok=True)
    img = SHM / "ns.img"
    serve = Serve(bin_, out, img, size)
    try:
        for rnd in range(1, rounds + 1):
            print(f"round {rnd}: FUSE ratios", file=sys.stderr)
            ratio_round(bin_, out, rnd, serve, jobtime, min(size, 2 * GIB))
            print(f"round {rnd}: microscope ({size / GIB:.0f} GiB)", file=sys.stderr)
            microscope_round(bin_, micro, out, rnd, serve, size)
    finally:
        serve.stop()
        img.unlink(missing_ok=True)
        SHM.rmdir()
    summary(out, size, note)
    print((out / "fuse.md").read_text())


if __name__ == "__main__":
    main()
