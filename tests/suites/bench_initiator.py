#!/usr/bin/env python3
"""The initiator part of `./tests/run bench` (called by bench.sh).

    bench_initiator.py BIN OUT ROUND JOBTIME    one round of runs
    bench_initiator.py BIN OUT summary          markdown on stdout

A round measures, against the loopback baseline of the same round
(OUT/baseline-rROUND.json, written by bench.sh just before):

* the local ceiling: the namespace's own backing file through the target's
  backend (tmpfs, page cache; and an O_DIRECT file on ext4);
* the built-in initiator against the built-in target (`bench -a`), with the
  target and the initiator both busy-polling, and both sleeping;
* the exposed FUSE file of `connect` with dd and fio.

Every run records the exact command, the host-side CPU (the bench or
dd/fio process, plus the connect process for FUSE runs) and the target's
CPU (from /proc/PID/stat), per I/O. Results: OUT/init-NAME-rROUND.json.
"""

import json
import os
import pathlib
import random
import resource
import shlex
import socket
import subprocess
import statistics
import sys
import time

SHM = pathlib.Path("/dev/shm/ferrofab-bench")
NS_SIZE = "1GiB"
NS_BYTES = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    """A free port below the ephemeral range, so no outgoing connection
    (an initiator reconnecting, say) can take it between check and use."""
    low = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.sample(range(10000, max(low, 12000)), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise SystemExit("no free port")


def proc_cpu_s(pid):
    """utime + stime of a process, in seconds (fields 14 and 15)."""
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_line(path, text, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {text!r} in {path}:\n{path.read_text(errors='replace')}")


class Serve:
    """`ferrofab-nvmeof serve` with one subsystem per (name, path, direct_io)."""

    def __init__(self, bin_, out, tag, poll_mode, namespaces):
        self.port = free_port()
        self.conf = out / f"serve-{tag}.toml"
        self.log = out / f"serve-{tag}.log"
        lines = [f'[target]\npoll_mode = "{poll_mode}"\n',
                 f'[[listener]]\naddress = "127.0.0.1:{self.port}"\n']
        for nqn, path, direct in namespaces:
            lines.append(f'[[subsystem]]\nnqn = "{nqn}"\nallow_any_host = true\n\n'
                         f'[[subsystem.namespace]]\nnsid = 1\npath = "{path}"\n'
                         f'size = "{NS_SIZE}"\ndirect_io = "{direct}"\n')
        self.conf.write_text("\n".join(lines))
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([bin_, "serve", "--no-watch", "-c", str(self.conf)],
                                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_line(self.log, "ready, serving")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)


class Connect:
    """`ferrofab-nvmeof connect` exposing one namespace as OUT/volumes/NAME."""

    def __init__(self, bin_, out, serve, nqn, name):
        self.out, self.nqn, self.bin = out, nqn, bin_
        self.run_dir = out / "run"
        self.file = out / "volumes" / name
        self.log = out / f"connect-{name}.log"
        self.cmd = [bin_, "connect", "-a", "127.0.0.1", "-s", str(serve.port), "-n", nqn,
                    "--poll-mode", "interrupt", "--expose-dir", str(out / "volumes"),
                    "--name", name, "--run-dir", str(self.run_dir)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        wait_line(self.log, "exposed at")

    def stop(self):
        subprocess.run([self.bin, "disconnect", "-n", self.nqn, "--run-dir", str(self.run_dir)],
                       check=True, stdout=subprocess.DEVNULL)
        self.proc.wait(timeout=30)


class Round:
    def __init__(self, bin_, out, rnd, jobtime):
        self.bin, self.out, self.round, self.jobtime = bin_, out, rnd, jobtime
        base = json.loads((out / f"baseline-r{rnd}.json").read_text())
        self.base = {r["name"]: r for r in base["results"]}
        self.commands = []

    def save(self, name, rec):
        rec.update(name=name, round=self.round)
        (self.out / f"init-{name}-r{self.round}.json").write_text(json.dumps(rec, indent=1))
        self.commands.append(f"{name}: {rec['command']}")
        print(f"  {name}: {rec['iops']:.0f} IOPS {rec['mb_s']:.1f} MB/s p50 {rec['p50_us']:.1f} us "
              f"host {rec['host_cpu_us']:.1f} + target {rec['target_cpu_us']:.1f} CPU us/IO",
              file=sys.stderr)

    def compare(self, rec, test, metric):
        """Ratio against the loopback test of this round, and its CPU."""
        b = self.base[test]
        if metric == "p50_us":
            raw = b["result"]["latency"]["p50_us"]
        elif metric == "mb_s":
            raw = b["result"]["mb_per_s"]
        else:
            raw = b["result"]["ops_per_s"]
        rec.update(base_test=test, base_metric=metric, base_value=raw,
                   base_cpu_us=b["cpu"]["per_op_us"],
                   ratio=(rec[metric] / raw) if raw else 0.0)

    def bench(self, name, args, serve=None, base=None):
        """One `ferrofab-nvmeof bench` job; the target's CPU from /proc."""
        cmd = [self.bin, "bench", *args, "--time", self.jobtime, "--json"]
        pid = serve.proc.pid if serve else None
        t0 = proc_cpu_s(pid)
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        target_cpu = proc_cpu_s(pid) - t0
        j = json.loads(res.stdout)
        t = j["total"]
        ops = max(t["ops"], 1)
        rec = dict(kind="bench", command=shlex.join(cmd), iops=t["ops_per_s"],
                   mb_s=t["mb_per_s"], p50_us=t["latency"]["p50_us"],
                   p99_us=t["latency"]["p99_us"], host_cpu_us=j["cpu"]["per_op_us"],
                   target_cpu_us=target_cpu / ops * 1e6 if serve else 0.0)
        if base:
            self.compare(rec, *base)
        self.save(name, rec)

    def external(self, name, cmd, ops, serve, conn, parse=None, base=None):
        """dd or fio on the exposed file: CPU of the tool, of connect and
        of the target over the run."""
        c0, t0, h0 = proc_cpu_s(conn.proc.pid), proc_cpu_s(serve.proc.pid), children_cpu_s()
        start = time.monotonic()
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        elapsed = time.monotonic() - start
        tool = children_cpu_s() - h0
        conn_cpu = proc_cpu_s(conn.proc.pid) - c0
        target = proc_cpu_s(serve.proc.pid) - t0
        rec = dict(kind="external", command=shlex.join(cmd), p50_us=0.0, p99_us=0.0)
        if parse:
            ops, elapsed, extra = parse(res.stdout)
            rec.update(extra)
        rec.update(iops=ops / elapsed, mb_s=rec.pop("bytes", 0) / elapsed / 1e6,
                   host_cpu_us=(tool + conn_cpu) / ops * 1e6, target_cpu_us=target / ops * 1e6,
                   tool_cpu_us=tool / ops * 1e6, connect_cpu_us=conn_cpu / ops * 1e6)
        if base:
            self.compare(rec, *base)
        self.save(name, rec)

    def dd(self, name, serve, conn, args, bs, count, base=None):
        cmd = ["dd", *args, f"bs={bs}", f"count={count}", "status=none"]
        start = time.monotonic()
        self.external(name, cmd, count, serve, conn,
                      parse=lambda _out: (count, time.monotonic() - start,
                                          {"bytes": bs * count}),
                      base=base)

    def fio(self, name, serve, conn, args, base=None):
        cmd = ["fio", "--name=ff", f"--filename={conn.file}", "--direct=1", "--time_based",
               f"--runtime={self.jobtime}", "--output-format=json", *args]

        def parse(out):
            j = json.loads(out)["jobs"]
            rw = "write" if any("write" in a for a in args) else "read"
            ops = sum(x[rw]["total_ios"] for x in j)
            secs = max(x["job_runtime"] for x in j) / 1000
            p50 = statistics.median(
                x[rw]["clat_ns"]["percentile"].get("50.000000", 0) for x in j) / 1000
            return ops, secs, {"bytes": sum(x[rw]["io_bytes"] for x in j), "p50_us": p50}

        self.external(name, cmd, 1, serve, conn, parse=parse, base=base)


def prefill(bin_, path):
    if path.exists() and path.stat().st_size == NS_BYTES:
        return
    subprocess.run([bin_, "bench", "--file", str(path), "--file-size", NS_SIZE, "--pattern",
                    "write", "--bs", "1M", "--qd", "4", "--size", NS_SIZE, "--json"],
                   check=True, stdout=subprocess.DEVNULL)


def run_round(bin_, out, rnd, jobtime):
    SHM.mkdir(parents=True, exist_ok=True)
    shm_ns, shm_busy = SHM / "ns.img", SHM / "ns-busy.img"
    ext4_ns = out / "ceiling.img"  # prefilled by bench.sh; O_DIRECT on ext4
    for p in (shm_ns, shm_busy, ext4_ns):
        prefill(bin_, p)
    r = Round(bin_, out, rnd, jobtime)
    rr = ["--pattern", "randread", "--bs", "4k"]
    print(f"round {rnd}: local ceilings", file=sys.stderr)
    f = ["--file", str(shm_ns)]
    r.bench("ceiling-shm-qd1", f + rr + ["--qd", "1"])
    r.bench("ceiling-shm-qd32", f + rr + ["--qd", "32"])
    r.bench("ceiling-shm-read-128k", f + ["--pattern", "read", "--bs", "128k", "--qd", "1"])
    r.bench("ceiling-shm-write-128k", f + ["--pattern", "write", "--bs", "128k", "--qd", "1"])
    e = ["--file", str(ext4_ns), "--direct", "on"]
    r.bench("ceiling-ext4-direct-qd1", e + rr + ["--qd", "1"])
    r.bench("ceiling-ext4-direct-qd32", e + rr + ["--qd", "32"])

    print(f"round {rnd}: busy-polling target and initiator", file=sys.stderr)
    nqn_busy = "nqn.2026-11.io.ferrofab:bench-busy"
    busy = Serve(bin_, out, "busy", "busy", [(nqn_busy, shm_busy, "auto")])
    try:
        a = ["-a", "127.0.0.1", "-s", str(busy.port), "-n", nqn_busy, "--poll-mode", "busy"]
        r.bench("nvme-qd1-busy", a + rr + ["--qd", "1"], busy, ("qd1_read_busy", "p50_us"))
        r.bench("nvme-randwrite-qd1-busy", a + ["--pattern", "randwrite", "--bs", "4k", "--qd", "1"],
                busy, ("qd1_write_busy", "p50_us"))
    finally:
        busy.stop()

    print(f"round {rnd}: sleeping target and initiator", file=sys.stderr)
    nqn_shm, nqn_ext4 = "nqn.2026-11.io.ferrofab:bench-shm", "nqn.2026-11.io.ferrofab:bench-ext4"
    serve = Serve(bin_, out, "interrupt", "interrupt",
                  [(nqn_shm, shm_ns, "auto"), (nqn_ext4, ext4_ns, "on")])
    try:
        a = ["-a", "127.0.0.1", "-s", str(serve.port), "-n", nqn_shm, "--poll-mode", "interrupt"]
        r.bench("nvme-qd1-interrupt", a + rr + ["--qd", "1"], serve,
                ("qd1_read_blocking", "p50_us"))
        r.bench("nvme-qd32", a + rr + ["--qd", "32"], serve, ("qd32_read", "iops"))
        rw = ["--pattern", "randwrite", "--bs", "4k"]
        r.bench("nvme-randwrite-qd1", a + rw + ["--qd", "1"], serve,
                ("qd1_write_blocking", "p50_us"))
        r.bench("nvme-randwrite-qd32", a + rw + ["--qd", "32"], serve, ("qd32_write", "iops"))
        r.bench("nvme-read-128k", a + ["--pattern", "read", "--bs", "128k", "--qd", "8"], serve,
                ("stream_128k", "mb_s"))
        r.bench("nvme-write-128k", a + ["--pattern", "write", "--bs", "128k", "--qd", "8"],
                serve, ("stream_128k", "mb_s"))
        # Two queues, as the Linux host uses on this 2-CPU machine.
        r.bench("nvme-read-128k-2q", a + ["--pattern", "read", "--bs", "128k", "--qd", "8",
                                           "--queues", "2"], serve, ("stream_128k", "mb_s"))
        r.bench("nvme-write-128k-2q", a + ["--pattern", "write", "--bs", "128k", "--qd", "8",
                                            "--queues", "2"], serve, ("stream_128k", "mb_s"))
        a4 = ["-a", "127.0.0.1", "-s", str(serve.port), "-n", nqn_ext4, "--poll-mode",
              "interrupt"]
        r.bench("nvme-ext4-direct-qd1", a4 + rr + ["--qd", "1"], serve,
                ("qd1_read_blocking", "p50_us"))
        r.bench("nvme-ext4-direct-qd32", a4 + rr + ["--qd", "32"], serve, ("qd32_read", "iops"))

        print(f"round {rnd}: the exposed FUSE file", file=sys.stderr)
        conn = Connect(bin_, out, serve, nqn_shm, "shm")
        try:
            v = str(conn.file)
            r.dd("fuse-dd-read-4k", serve, conn, [f"if={v}", "of=/dev/null"], 4096, 40000,
                 ("qd1_read_blocking", "iops"))
            r.dd("fuse-dd-read-128k", serve, conn, [f"if={v}", "of=/dev/null"], 128 << 10, 8192,
                 ("stream_128k", "mb_s"))
            r.dd("fuse-dd-write-128k", serve, conn,
                 ["if=/dev/zero", f"of={v}", "conv=notrunc,fsync"], 128 << 10, 8192,
                 ("stream_128k", "mb_s"))
            r.fio("fuse-fio-randread-qd1", serve, conn,
                  ["--rw=randread", "--bs=4k", "--ioengine=psync"],
                  ("qd1_read_blocking", "p50_us"))
            r.fio("fuse-fio-randread-4x8", serve, conn,
                  ["--rw=randread", "--bs=4k", "--ioengine=libaio", "--iodepth=8",
                   "--numjobs=4", "--group_reporting=0"], ("qd32_read", "iops"))
            r.fio("fuse-fio-read-128k", serve, conn,
                  ["--rw=read", "--bs=128k", "--ioengine=psync"], ("stream_128k", "mb_s"))
            r.fio("fuse-fio-write-128k", serve, conn,
                  ["--rw=write", "--bs=128k", "--ioengine=psync"], ("stream_128k", "mb_s"))
        finally:
            conn.stop()
    finally:
        serve.stop()
    with open(out / "initiator-commands.txt", "a") as fh:
        fh.write(f"# round {rnd}\n" + "\n".join(r.commands) + "\n")


def summary(out):
    runs = {}
    for f in sorted(out.glob("init-*-r*.json")):
        rec = json.loads(f.read_text())
        runs.setdefault(rec["name"], []).append(rec)
    med = lambda rs, k: statistics.median(r.get(k, 0.0) for r in rs)
    print("\n## Built-in initiator vs built-in target (medians over rounds)\n")
    print("Ratios are per round against that round's loopback baseline, then the median. "
          "CPU is µs per I/O: host = bench, or dd/fio plus the connect process; "
          "target = the serve process; raw = both ends of the loopback test.\n")
    print("| run | IOPS | MB/s | p50 µs | p99 µs | vs loopback test | ratio | host CPU | target CPU | raw CPU |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for name, rs in runs.items():
        p50 = med(rs, "p50_us")
        vs = "-"
        ratio = "-"
        raw_cpu = "-"
        if rs[0].get("base_test"):
            unit = {"p50_us": "µs p50", "mb_s": "MB/s", "iops": "ops/s"}[rs[0]["base_metric"]]
            vs = f"{rs[0]['base_test']} {med(rs, 'base_value'):.1f} {unit}"
            ratio = f"{med(rs, 'ratio'):.2f}"
            raw_cpu = f"{med(rs, 'base_cpu_us'):.1f}"
        print(f"| {name} | {med(rs, 'iops'):.0f} | {med(rs, 'mb_s'):.1f} "
              f"| {p50:.1f} | {med(rs, 'p99_us'):.1f} | {vs} | {ratio} | {med(rs, 'host_cpu_us'):.1f} "
              f"| {med(rs, 'target_cpu_us'):.1f} | {raw_cpu} |" if p50 else
              f"| {name} | {med(rs, 'iops'):.0f} | {med(rs, 'mb_s'):.1f} "
              f"| - | - | {vs} | {ratio} | {med(rs, 'host_cpu_us'):.1f} "
              f"| {med(rs, 'target_cpu_us'):.1f} | {raw_cpu} |")


def main():
    bin_, out = sys.argv[1], pathlib.Path(sys.argv[2])
    if sys.argv[3] == "summary":
        summary(out)
    elif sys.argv[3] == "cleanup":
        for p in SHM.glob("*.img"):
            p.unlink()
        if SHM.exists():
            SHM.rmdir()
    else:
        run_round(bin_, out, int(sys.argv[3]), sys.argv[4])


if __name__ == "__main__":
    main()
