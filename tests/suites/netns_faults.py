#!/usr/bin/env python3
"""Fault tests of the `netns` suite (see the header of netns.sh).

Expects netns.sh to have created the namespaces PREFIX-{hub,ctl,s1,s2,ws1,ws2}
with the hub's bridge and addresses; starts the controller and the agents
in them with `nsenter --net` and runs:

  1. link cut: storage node s1 loses its link for CUT_S while ws1 writes
     through its exposure; no I/O error, no lost block;
  2. partition: the controller loses its link for PARTITION_S while the
     admin changes the layout; after the heal every change is visible on
     the workstations within one resync interval.
  3. agent restarts: ext4 on a loop device on ws2's exposure of b,
     mounted, with a timed fsync'd stream running, through kill -9 of
     ws2's agent, a graceful restart and an upgrade (a copy of the binary
     reporting another version); no I/O error, the data-path holder never
     changes, the loop device keeps its live file, e2fsck -f -n is clean
     and every acknowledged block reads back. Prints the I/O pause (max
     write+fsync) of each.

Fails (exit 1) with a message naming what went wrong; the namespaces and
what runs in them are cleaned up by netns.sh.
"""
import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
import tomllib

HERE = pathlib.Path(__file__).resolve().parent
IO = [sys.executable, str(HERE / "netns_io.py")]

ADDR = {"ctl": "10.213.77.1", "s1": "10.213.77.11", "s2": "10.213.77.12",
        "ws1": "10.213.77.21", "ws2": "10.213.77.22"}
GRPC_PORT = 7443
DATA_PORT = 4420
RESYNC_S = 10            # agents' resync_interval: the convergence bound
CTRL_LOSS_TMO_S = 45     # controller [transport] ctrl_loss_tmo
CUT_S = 20               # test 1: > the initiator's 5 s keep-alive, < CTRL_LOSS_TMO_S
PARTITION_S = 60         # test 2
MIB = 1 << 20
BS = 64 * 1024
STREAM_BLOCKS = 1200     # 75 MiB of stamped blocks through the exposure
CUT_AFTER = 100          # the link goes down on this acknowledgement


class Failure(Exception):
    pass


def say(msg: str) -> None:
    print(f"\033[1m==> netns: {msg}\033[0m", file=sys.stderr, flush=True)


def wait_for(what: str, timeout: float, f, period: float = 0.2):
    """Polls f() until it returns a truthy value; Failure after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(period)


class Cluster:
    def __init__(self, bin_dir: pathlib.Path, work: pathlib.Path, prefix: str):
        self.bin = bin_dir
        self.work = work
        self.prefix = prefix
        self.procs: dict[str, subprocess.Popen] = {}
        self.pki = work / "pki"
        self.client_toml = work / "client.toml"

    # ---------------------------------------------------------------- plumbing

    def ns(self, node: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.prefix}-{node}"]

    def link(self, node: str, up: bool) -> None:
        """The hub end of NODE's link: down is a pulled cable."""
        state = "up" if up else "down"
        subprocess.run(["ip", "-n", f"{self.prefix}-hub", "link", "set", f"h-{node}", state], check=True)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """`ferrofab` as the admin, from inside the controller's namespace
        (so it still reaches the controller, on 127.0.0.1, while the
        controller is partitioned from the agents)."""
        argv = self.ns("ctl") + [str(self.bin / "ferrofab"), "--config", str(self.client_toml), *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise Failure(f"ferrofab {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def agent_cli(self, node: str, *args: str, timeout: float = 30) -> dict:
        sock = self.work / node / "agent.sock"
        r = subprocess.run([str(self.bin / "ferrofab-agent"), *args, "--json", "--socket", str(sock)],
                           capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise Failure(f"ferrofab-agent {' '.join(args)} on {node} failed: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def spawn(self, name: str, node: str, argv: list[str], log: pathlib.Path) -> None:
        """Starts a daemon in NODE's namespace and waits for its ready line
        (its first stdout line)."""
        out = open(log.with_suffix(".out"), "w")
        err = open(log, "a")
        p = subprocess.Popen(self.ns(node) + argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        self.procs[name] = p
        wait_for(f"{name} to print its ready line (log {log})", 60,
                 lambda: p.poll() is not None or "ready" in log.with_suffix(".out").read_text())
        if p.poll() is not None:
            raise Failure(f"{name} exited with {p.returncode}; log {log}:\n{log.read_text()[-3000:]}")

    def restart_agent(self, node: str, binary: pathlib.Path | None = None, env: dict | None = None) -> None:
        """Starts NODE's agent again on its existing config and state."""
        d = self.work / node
        argv = [f"{k}={v}" for k, v in (env or {}).items()]
        argv = (["env", *argv] if argv else []) + [str(binary or self.bin / "ferrofab-agent"), "run",
                                                   "--config", str(d / "etc" / "agent.toml")]
        self.spawn(node, node, argv, d / "agent.log")

    def stop_holder(self, node: str) -> None:
        """The data-path holder outlives its agent by design; stop it."""
        subprocess.run(self.ns(node) + [str(self.bin / "ferrofab-agent"), "holder", "stop",
                                        "--state-dir", str(self.work / node / "state"), "--timeout", "20s"],
                       stderr=subprocess.DEVNULL, check=False, timeout=60)

    def holder_pid(self, node: str) -> int:
        r = run([str(self.bin / "ferrofab-agent"), "holder", "status", "--state-dir",
                 str(self.work / node / "state")])
        return json.loads(r)["holder"]["pid"]

    def stop_all(self) -> None:
        """Heals every link first (a run interrupted during a cut would
        otherwise leave writes and disconnects waiting for an unreachable
        node), then stops the writer, the workstations (they unmount), the
        storage nodes and the controller."""
        for node in ADDR:
            subprocess.run(["ip", "-n", f"{self.prefix}-hub", "link", "set", f"h-{node}", "up"],
                           stderr=subprocess.DEVNULL, check=False)
        for name in ["writer", "ws1", "ws2", "s1", "s2", "controller"]:
            if name in ("s1",):
                # Workstation holders go before storage: their detach
                # flushes through the storage targets.
                for ws in ("ws1", "ws2"):
                    self.stop_holder(ws)
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # ---------------------------------------------------------------- setup

    def start_controller(self) -> None:
        d = self.work / "controller"
        d.mkdir(parents=True)
        run([str(self.bin / "ferrofab"), "pki", "init", "--dir", str(self.pki),
             "--san", ADDR["ctl"], "--san", "127.0.0.1", "--san", "localhost"])
        run([str(self.bin / "ferrofab"), "pki", "issue", "--dir", str(self.pki), "--identity", "admin"])
        (d / "controller.toml").write_text(
            f'listen = "0.0.0.0:{GRPC_PORT}"\n'
            f'store_path = "{d}/store.redb"\n'
            f'[pki]\ndir = "{self.pki}"\n'
            f"[transport]\nctrl_loss_tmo = {CTRL_LOSS_TMO_S}\n")
        self.client_toml.write_text(
            f'endpoint = "https://127.0.0.1:{GRPC_PORT}"\n'
            f'[tls]\nca = "{self.pki}/ca.crt"\ncert = "{self.pki}/admin.crt"\nkey = "{self.pki}/admin.key"\n')
        self.spawn("controller", "ctl",
                   [str(self.bin / "ferrofab-controller"), "--config", str(d / "controller.toml")],
                   d / "controller.log")

    def start_agent(self, node: str, role: str) -> None:
        d = self.work / node
        (d / "pool").mkdir(parents=True)
        token = self.cli("node", "token", "create", "--node", node, "--ttl", "10m").stdout.strip()
        cfg = d / "etc" / "agent.toml"
        run(self.ns(node) + [
            str(self.bin / "ferrofab-agent"), "enroll", "--token", token,
            "--controller", f"{ADDR['ctl']}:{GRPC_PORT}", "--ca", str(self.pki / "ca.crt"),
            "--node", node, "--roles", role, "--data-address", f"{ADDR[node]}:{DATA_PORT}",
            "--config", str(cfg), "--state-dir", str(d / "state")])
        tls = tomllib.loads(cfg.read_text())["tls"]
        cfg.write_text(
            f'node = "{node}"\nroles = ["{role}"]\n'
            f'controller_endpoints = ["https://{ADDR["ctl"]}:{GRPC_PORT}"]\n'
            f'expose_dir = "{d}/volumes"\nstate_dir = "{d}/state"\n'
            f'api_socket = "{d}/agent.sock"\nresync_interval = "{RESYNC_S}s"\n'
            f'log_level = "info,ferrofab_nvmeof=warn"\n'
            f'[tls]\nca = "{tls["ca"]}"\ncert = "{tls["cert"]}"\nkey = "{tls["key"]}"\n'
            f'[pools.p-{node}]\npath = "{d}/pool"\n')
        self.spawn(node, node, [str(self.bin / "ferrofab-agent"), "run", "--config", str(cfg)], d / "agent.log")

    def exposure(self, ws: str, volume: str) -> pathlib.Path:
        return self.work / ws / "volumes" / volume

    def size(self, ws: str, volume: str):
        try:
            return self.exposure(ws, volume).stat().st_size
        except OSError:
            return None

    def backing_file(self, storage: str, volume: str) -> pathlib.Path:
        """The backing file whose ownership marker names VOLUME."""
        for m in (self.work / storage / "pool").glob("*.ferrofab-owner"):
            if json.loads(m.read_text()).get("volume") == volume:
                return m.with_name(m.name[: -len(".ferrofab-owner")])
        raise Failure(f"no backing file of volume {volume} in {storage}'s pool")


def run(argv: list[str]) -> str:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise Failure(f"{' '.join(argv)} failed: {r.stderr.strip()}")
    return r.stdout


def io(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(IO + list(args), capture_output=True, text=True, timeout=120)


def initial_layout(c: Cluster) -> None:
    """a on s1 -> ws1 (test 1's victim), b on s2 -> ws2 (grown in test 2),
    d on s1 -> ws2 (detached in test 2)."""
    c.cli("tenant", "create", "lab", "--allowed-node", "ws1", "--allowed-node", "ws2")
    for s in ["s1", "s2"]:
        c.cli("pool", "create", f"p-{s}", "--node", s, "--backing", "directory",
              "--path", str(c.work / s / "pool"), "--capacity", "10GiB")
    for vol, size, pool, ws in [("a", "128MiB", "p-s1", "ws1"), ("b", "64MiB", "p-s2", "ws2"),
                                ("d", "32MiB", "p-s1", "ws2")]:
        c.cli("volume", "create", vol, "--tenant", "lab", "--size", size, "--pool", pool)
        c.cli("attachment", "create", f"{vol}-{ws}", "--volume", vol, "--node", ws)
    for vol, ws, size in [("a", "ws1", 128 * MIB), ("b", "ws2", 64 * MIB), ("d", "ws2", 32 * MIB)]:
        wait_for(f"{vol} exposed on {ws}", 90, lambda: c.size(ws, vol) == size)


# -------------------------------------------------------------------- test 1

def test_link_cut(c: Cluster) -> None:
    """s1's link down for CUT_S while ws1 streams fsynced blocks to a."""
    path = c.exposure("ws1", "a")
    say(f"test 1: streaming {STREAM_BLOCKS} x {BS // 1024} KiB fsynced blocks to {path}")
    w = subprocess.Popen(IO + ["stream", str(path), "--blocks", str(STREAM_BLOCKS), "--bs", str(BS), "--seed", "11"],
                         stdout=subprocess.PIPE, text=True)
    c.procs["writer"] = w
    acks = []
    ack_times = []
    errors = []
    cut = threading.Event()
    at_cut = {}

    def reader():
        # The cut is made here, on the CUT_AFTER-th acknowledgement, so the
        # stream is certainly mid-way however fast this machine writes.
        for line in w.stdout:
            if line.startswith("ack "):
                _, i, at = line.split()
                acks.append(int(i))
                ack_times.append(float(at))
                if len(acks) == CUT_AFTER:
                    c.link("s1", False)
                    at_cut.update(acks=len(acks), t=time.monotonic())
                    cut.set()
            else:
                errors.append(line.strip())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    wait_for(f"the first {CUT_AFTER} acknowledged blocks", 60, lambda: cut.is_set() or w.poll() is not None)
    if not cut.is_set():
        raise Failure(f"the writer stopped after {len(acks)} blocks, before the cut: {errors}")
    cut_at = at_cut["t"]
    say(f"test 1: s1's link down on reading ack {CUT_AFTER}; holding it down {CUT_S}s")
    states = set()
    while time.monotonic() - cut_at < CUT_S:
        try:
            for a in c.agent_cli("ws1", "attachments", timeout=5)["attachments"]:
                if a["volume"] == "a":
                    states.add(a["state"])
        except (Failure, subprocess.TimeoutExpired):
            pass
        time.sleep(1)
    healed_at = time.monotonic()
    c.link("s1", True)
    say(f"test 1: link restored; initiator states seen during the cut: {sorted(states)}")
    rc = w.wait(timeout=300)
    t.join(timeout=10)
    resumed = time.monotonic() - healed_at
    # Acks are timestamped by the writer: the reader may lag behind the pipe.
    acked_during = sum(1 for at in ack_times if cut_at < at < healed_at)
    acked_before = sum(1 for at in ack_times if at <= cut_at)
    if rc != 0 or errors:
        raise Failure(f"the write stream saw I/O errors across the link cut (exit {rc}): {errors}")
    if len(acks) != STREAM_BLOCKS or acks != list(range(STREAM_BLOCKS)):
        raise Failure(f"the write stream acknowledged {len(acks)} of {STREAM_BLOCKS} blocks")
    if "reconnecting" not in states:
        raise Failure(f"ws1's initiator never reported `reconnecting` during a {CUT_S}s cut (saw {states}): "
                      "the cut did not reach the data path")
    # A write already in flight may complete as the link goes down.
    if acked_during > 2:
        raise Failure(f"{acked_during} blocks were acknowledged while s1 was cut off: the cut was not real")
    r = io("verify", str(path), "--blocks", str(STREAM_BLOCKS), "--bs", str(BS), "--seed", "11")
    if r.returncode != 0:
        raise Failure(f"read back through the exposure: {r.stderr.strip()}")
    backing = c.backing_file("s1", "a")
    r = io("verify", str(backing), "--blocks", str(STREAM_BLOCKS), "--bs", str(BS), "--seed", "11")
    if r.returncode != 0:
        raise Failure(f"read back from s1's backing file: {r.stderr.strip()}")
    say(f"test 1 passed: {STREAM_BLOCKS} blocks acknowledged ({acked_before} before the cut, {acked_during} "
        f"during its {CUT_S}s), all read back "
        f"(exposure and backing file); the stream finished {resumed:.1f}s after the link came back")


# -------------------------------------------------------------------- test 2

def probe_data_path(c: Cluster, rnd: int) -> list[str]:
    """One verified write+read on each existing exposure; returns failures."""
    bad = []
    for ws, vol, first in [("ws1", "a", STREAM_BLOCKS), ("ws2", "b", 0), ("ws2", "d", 0)]:
        # On a: past test 1's stream, whose blocks stay as verified.
        index = first + rnd % 200
        r = io("probe", str(c.exposure(ws, vol)), "--bs", str(BS), "--seed", str(1000 + rnd),
               "--index", str(index))
        if r.returncode != 0:
            bad.append(f"{ws}/{vol}: {r.stderr.strip()}")
    return bad


def converged(c: Cluster) -> dict:
    """Which of the partition's changes are visible now (data path and controller)."""
    done = {
        "c exposed on ws1 (32 MiB)": c.size("ws1", "c") == 32 * MIB,
        "b grown to 96 MiB on ws2": c.size("ws2", "b") == 96 * MIB,
        "d unexposed on ws2": c.size("ws2", "d") is None,
    }
    r = c.cli("attachment", "get", "d-ws2", check=False)
    done["attachment d-ws2 removed by the controller"] = r.returncode != 0 and "not found" in r.stderr.lower()
    return done


def test_partition(c: Cluster) -> None:
    d_backing = c.backing_file("s1", "d")
    c.link("ctl", False)
    t0 = time.monotonic()
    say(f"test 2: controller partitioned from every agent for {PARTITION_S}s; changing the layout")
    c.cli("volume", "create", "c", "--tenant", "lab", "--size", "32MiB", "--pool", "p-s2")
    c.cli("attachment", "create", "c-ws1", "--volume", "c", "--node", "ws1")
    c.cli("volume", "resize", "b", "96MiB")
    c.cli("attachment", "delete", "d-ws2")
    say(f"test 2: layout changed {time.monotonic() - t0:.1f}s into the partition; probing the data path")
    rounds = 0
    failures = []
    while time.monotonic() - t0 < PARTITION_S - 3:
        failures += probe_data_path(c, rounds)
        rounds += 1
        time.sleep(2)
    if failures:
        raise Failure(f"the data path failed during the partition: {failures}")
    during = converged(c)
    early = [k for k, v in during.items() if v and "controller" not in k]
    if early:
        raise Failure(f"changes reached the agents during the partition, so it was not one: {early}")
    disconnected = [n for n in ["s1", "s2", "ws1", "ws2"]
                    if not c.agent_cli(n, "status")["controller_connected"]]
    if len(disconnected) != 4:
        raise Failure(f"agents still believe they are connected after {PARTITION_S - 3}s of partition: "
                      f"only {disconnected} noticed")
    while time.monotonic() - t0 < PARTITION_S:
        time.sleep(0.1)
    c.link("ctl", True)
    healed = time.monotonic()
    say(f"test 2: healed after {healed - t0:.1f}s ({rounds * 3} verified probes OK, all 4 agents had "
        f"noticed); waiting for convergence")
    seen: dict[str, float] = {}
    deadline = healed + 6 * RESYNC_S
    while len(seen) < 4 and time.monotonic() < deadline:
        now = time.monotonic()
        for k, v in converged(c).items():
            if v and k not in seen:
                seen[k] = now - healed
        time.sleep(0.2)
    for k in converged(c):
        say(f"test 2:   {k}: " + (f"{seen[k]:.1f}s after the heal" if k in seen else "NOT converged"))
    if len(seen) < 4:
        raise Failure(f"not converged {6 * RESYNC_S}s after the heal: {[k for k in converged(c) if k not in seen]}")
    slowest = max(seen.values())
    if slowest > RESYNC_S:
        raise Failure(f"converged {slowest:.1f}s after the heal, more than one resync interval ({RESYNC_S}s)")
    # The new volume works, and detaching kept d's data (nothing deleted).
    r = io("probe", str(c.exposure("ws1", "c")), "--bs", str(BS), "--seed", "77", "--index", "3")
    if r.returncode != 0:
        raise Failure(f"I/O on the volume created during the partition: {r.stderr.strip()}")
    if not d_backing.exists():
        raise Failure(f"detaching d removed its backing file {d_backing}")
    say(f"test 2 passed: every change converged {slowest:.1f}s after the heal (resync interval {RESYNC_S}s)")


# -------------------------------------------------------------------- test 3

def sh(*argv: str) -> str:
    r = subprocess.run(list(argv), capture_output=True, text=True)
    if r.returncode != 0:
        raise Failure(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r.stdout.strip()


def loop_backing(dev: str) -> str:
    return pathlib.Path(f"/sys/block/{dev.removeprefix('/dev/')}/loop/backing_file").read_text().strip()


def test_agent_restarts(c: Cluster) -> None:
    exposure = c.exposure("ws2", "b")
    mnt = c.work / "mnt-b"
    mnt.mkdir(exist_ok=True)
    dev = sh("losetup", "-f", "--show", str(exposure))
    blocks, bs, seed = 2048, 4096, 33
    stop = c.work / "timed.stop"
    acks: list[tuple[int, float, float]] = []
    try:
        sh("mkfs.ext4", "-q", "-F", dev)
        sh("mount", dev, str(mnt))
        live = loop_backing(dev)
        holder = c.holder_pid("ws2")
        say(f"test 3: ext4 on {dev} -> {exposure}, mounted at {mnt}; holder pid {holder}")
        w = subprocess.Popen(IO + ["timed", str(mnt / "stream.dat"), "--stop", str(stop), "--blocks",
                                   str(blocks), "--bs", str(bs), "--seed", str(seed)],
                             stdout=subprocess.PIPE, text=True)
        c.procs["writer"] = w

        def reader():
            for line in w.stdout:
                parts = line.split()
                if parts[:1] == ["ack"]:
                    acks.append((int(parts[1]), float(parts[2]), time.monotonic()))
                elif parts[:1] == ["error"]:
                    say(f"test 3: writer: {line.strip()}")

        threading.Thread(target=reader, daemon=True).start()

        def more(n: int, what: str) -> None:
            target = len(acks) + n
            wait_for(what, 90, lambda: len(acks) >= target or w.poll() is not None)
            if w.poll() is not None:
                raise Failure(f"test 3: the write stream failed {what}")

        more(20, "the stream to start")
        t0 = time.monotonic()
        more(100, "the stream to run")
        baseline = max(ms for _, ms, t in acks if t >= t0)
        say(f"test 3: no restart (baseline): max write+fsync {baseline:.0f} ms")
        v2 = c.work / "ferrofab-agent-v2"
        subprocess.run(["cp", str(c.bin / "ferrofab-agent"), str(v2)], check=True)
        pauses = []
        for kind in ["kill -9", "graceful restart", "upgrade"]:
            t0 = time.monotonic()
            p = c.procs.pop("ws2")
            if kind == "kill -9":
                p.kill()
            else:
                p.terminate()
            p.wait(timeout=30)
            time.sleep(0.5)
            if kind == "upgrade":
                c.restart_agent("ws2", v2, {"FERROFAB_AGENT_VERSION_OVERRIDE": "ferrofab-agent 99.0.0-netns"})
            else:
                c.restart_agent("ws2")
            wait_for("ws2's attachment of b connected again", 60,
                     lambda: any(a["volume"] == "b" and a["state"] == "live"
                                 for a in c.agent_cli("ws2", "attachments").get("attachments", [])))
            more(100, f"after the {kind}")
            worst = max(ms for _, ms, t in acks if t >= t0)
            pauses.append((kind, worst))
            say(f"test 3: {kind} of ws2's agent: stream kept going, max write+fsync {worst:.0f} ms")
        if c.holder_pid("ws2") != holder:
            raise Failure("test 3: the data-path holder was replaced")
        if loop_backing(dev) != live:
            raise Failure(f"test 3: {dev} now refers to {loop_backing(dev)}, not {live}")
        if "99.0.0-netns" not in (c.work / "ws2" / "agent.log").read_text():
            raise Failure("test 3: the upgraded agent did not adopt the holder")
        stop.touch()
        w.wait(timeout=60)
        c.procs.pop("writer", None)
        if w.returncode != 0:
            raise Failure(f"test 3: the write stream exited {w.returncode} (I/O error)")
        last = {}
        for i, _, _ in acks:
            last[i % blocks] = i
        sh("umount", str(mnt))
        r = subprocess.run(["e2fsck", "-f", "-n", dev], capture_output=True, text=True)
        if r.returncode != 0:
            raise Failure(f"test 3: e2fsck -f -n {dev}: {r.stdout}{r.stderr}")
        sh("mount", "-o", "ro", dev, str(mnt))
        with open(mnt / "stream.dat", "rb") as f:
            for off, i in sorted(last.items()):
                f.seek(off * bs)
                if f.read(bs) != block(seed, i, bs):
                    raise Failure(f"test 3: block {off} (write {i}) does not read back")
        say(f"test 3 passed: {len(acks)} fsync'd writes, none failed, all read back, e2fsck clean; pauses: "
            + ", ".join(f"{k} {ms:.0f} ms" for k, ms in pauses) + f" (no restart: {baseline:.0f} ms)")
    finally:
        stop.touch()
        writer = c.procs.pop("writer", None)
        if writer is not None and writer.poll() is None:
            try:
                writer.wait(timeout=30)
            except subprocess.TimeoutExpired:
                writer.kill()
                writer.wait()
        subprocess.run(["umount", str(mnt)], stderr=subprocess.DEVNULL, check=False)
        subprocess.run(["losetup", "-d", dev], stderr=subprocess.DEVNULL, check=False)


def block(seed: int, i: int, bs: int) -> bytes:
    """netns_io.py's block content."""
    import hashlib
    head = f"ferrofab-netns seed={seed} block={i};".encode()
    body = hashlib.sha256(head).digest() * (bs // 32 + 1)
    return (head + body)[:bs]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True, type=pathlib.Path)
    p.add_argument("--work", required=True, type=pathlib.Path)
    p.add_argument("--prefix", required=True)
    a = p.parse_args()
    # netns.sh passes on SIGTERM/SIGINT: unwind through `finally` so the
    # daemons are stopped cleanly (workstations unmount their exposures).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    c = Cluster(a.bin, a.work, a.prefix)
    started = time.monotonic()
    try:
        say("starting the controller and 4 agents, each in its own namespace")
        c.start_controller()
        for node, role in [("s1", "storage"), ("s2", "storage"), ("ws1", "workstation"), ("ws2", "workstation")]:
            c.start_agent(node, role)
        initial_layout(c)
        say(f"cluster converged {time.monotonic() - started:.1f}s after start")
        test_link_cut(c)
        test_partition(c)
        test_agent_restarts(c)
    except KeyboardInterrupt:
        print("netns: interrupted", file=sys.stderr)
        return 130
    except (Failure, subprocess.TimeoutExpired) as e:
        print(f"netns: FAILED: {e}\n(logs in {a.work})", file=sys.stderr)
        return 1
    finally:
        c.stop_all()
    say(f"all three tests passed in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
