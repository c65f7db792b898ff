#!/usr/bin/env python3
"""Tests of the `ha` suite (see the header of ha.sh).

Expects ha.sh to have created the namespaces PREFIX-{hub,e1..e3,c1..c3,s1,
ws1,adm}; starts etcd, the controllers, the agents and the history watcher
in them with `nsenter --net`, runs the tests and checks the history.
Fails (exit 1) with a message naming what went wrong.
"""
import argparse
import json
import pathlib
import signal
import subprocess
import sys
import threading
import time
import tomllib

# The netns suite's helpers (same directory): Failure, polling, commands.
import netns_faults
from netns_faults import Failure, run, wait_for
# Test 1b, Terraform across a kill (its own file: see its docstring).
from ha_terraform import test_terraform_failover

ADDR = {"e1": "10.213.78.1", "e2": "10.213.78.2", "e3": "10.213.78.3",
        "c1": "10.213.78.11", "c2": "10.213.78.12", "c3": "10.213.78.13",
        "s1": "10.213.78.21", "ws1": "10.213.78.31", "adm": "10.213.78.40"}
ETCD = ["e1", "e2", "e3"]
CTL = ["c1", "c2", "c3"]
GRPC_PORT = 7443
DATA_PORT = 4420
TTL_S = 4                # store.etcd.lease_ttl_seconds
MIB = 1 << 20
VOL_MIB = 24
POOL_MIB = 1024          # test 1: 120 x 24 MiB do not fit; about 42 do
CLIENTS = 4
PER_CLIENT = 30
ATTACH_EVERY = 5


def say(msg: str) -> None:
    print(f"\033[1m==> ha: {msg}\033[0m", file=sys.stderr, flush=True)


class Cluster(netns_faults.Cluster):
    """The netns suite's cluster plumbing (namespaces, `nsenter`), with
    etcd and three controllers instead of one."""

    def __init__(self, bin_dir: pathlib.Path, work: pathlib.Path, prefix: str):
        super().__init__(bin_dir, work, prefix)
        self.etcd_pki = work / "etcd-pki"

    def client_cfg(self, first: int = 0) -> pathlib.Path:
        """A CLI config listing every replica, starting with CTL[first]."""
        p = self.work / f"client-{first}.toml"
        if not p.exists():
            order = CTL[first:] + CTL[:first]
            eps = ", ".join(f'"https://{ADDR[c]}:{GRPC_PORT}"' for c in order)
            p.write_text(f"endpoints = [{eps}]\n"
                         f'[tls]\nca = "{self.pki}/ca.crt"\ncert = "{self.pki}/admin.crt"\n'
                         f'key = "{self.pki}/admin.key"\n')
        return p

    def cli(self, *args: str, first: int = 0, check: bool = True) -> subprocess.CompletedProcess:
        argv = self.ns("adm") + [str(self.bin / "ferrofab"), "--config", str(self.client_cfg(first)), *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise Failure(f"ferrofab {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def cli_json(self, *args: str, first: int = 0):
        return json.loads(self.cli(*args, "-o", "json", first=first).stdout)

    def spawn(self, name: str, node: str, argv: list[str], log: pathlib.Path, ready: str | None = "ready") -> None:
        outp = log.with_suffix(".out")
        # Appended across restarts: wait for one more ready line than now.
        seen = outp.read_text().count(ready or "\0") if outp.exists() else 0
        out = open(outp, "a")
        err = open(log, "a")
        p = subprocess.Popen(self.ns(node) + argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        self.procs[name] = p
        if ready is None:
            return
        wait_for(f"{name} to print its ready line (log {log})", 60,
                 lambda: p.poll() is not None or outp.read_text().count(ready) > seen)
        if p.poll() is not None:
            raise Failure(f"{name} exited with {p.returncode}; log {log}:\n{log.read_text()[-3000:]}")

    def stop(self, name: str, sig=signal.SIGTERM) -> None:
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def stop_all(self) -> None:
        for c in CTL:
            self.heal(c)
        for name in ["writer", "watch", "ws1"]:
            self.stop(name)
        subprocess.run(self.ns("ws1") + [str(self.bin / "ferrofab-agent"), "holder", "stop", "--state-dir",
                                         str(self.work / "ws1" / "state"), "--timeout", "20s"],
                       stderr=subprocess.DEVNULL, check=False, timeout=60)
        for name in ["s1", *CTL, *ETCD]:
            self.stop(name)

    # ------------------------------------------------------------ setup

    def start_etcd(self) -> None:
        run([str(self.bin / "ferrofab"), "pki", "init", "--dir", str(self.etcd_pki),
             *sum((["--san", ADDR[e]] for e in ETCD), [])])
        run([str(self.bin / "ferrofab"), "pki", "issue", "--dir", str(self.etcd_pki), "--identity", "admin"])
        self.start_etcd_members()

    def start_etcd_members(self) -> None:
        """A new etcd cluster on empty data directories."""
        cluster = ",".join(f"{e}=http://{ADDR[e]}:2380" for e in ETCD)
        for e in ETCD:
            d = self.work / e
            d.mkdir(parents=True, exist_ok=True)
            url = f"https://{ADDR[e]}:2379"
            self.spawn(e, e, ["etcd", f"--name={e}", f"--data-dir={d}/data",
                              f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
                              f"--listen-peer-urls=http://{ADDR[e]}:2380",
                              f"--initial-advertise-peer-urls=http://{ADDR[e]}:2380",
                              f"--initial-cluster={cluster}", "--initial-cluster-state=new",
                              f"--cert-file={self.etcd_pki}/server.crt",
                              f"--key-file={self.etcd_pki}/server.key",
                              f"--trusted-ca-file={self.etcd_pki}/ca.crt", "--client-cert-auth",
                              "--heartbeat-interval=100", "--election-timeout=1000"],
                       d / "etcd.log", ready=None)

    def controller_toml(self, c: str) -> pathlib.Path:
        d = self.work / c
        d.mkdir(parents=True, exist_ok=True)
        eps = ", ".join(f'"https://{ADDR[e]}:2379"' for e in ETCD)
        p = d / "controller.toml"
        p.write_text(
            f'listen = "0.0.0.0:{GRPC_PORT}"\nstore_path = "{d}/store.redb"\n'
            f'[pki]\ndir = "{self.pki}"\n'
            f"[expiry]\ninterval_seconds = 1\ngrace_seconds = 0\n"
            f'[store]\nbackend = "etcd"\n[store.etcd]\nendpoints = [{eps}]\n'
            f'ca_file = "{self.etcd_pki}/ca.crt"\ncert_file = "{self.etcd_pki}/admin.crt"\n'
            f'key_file = "{self.etcd_pki}/admin.key"\nreplica_name = "{c}"\n'
            f"lease_ttl_seconds = {TTL_S}\ntimeout_ms = 2000\n")
        return p

    def start_controller(self, c: str) -> None:
        cfg = self.controller_toml(c)
        self.spawn(c, c, [str(self.bin / "ferrofab-controller"), "--config", str(cfg)],
                   self.work / c / "controller.log")

    def start_controllers(self) -> None:
        run([str(self.bin / "ferrofab"), "pki", "init", "--dir", str(self.pki),
             *sum((["--san", ADDR[c]] for c in CTL), [])])
        run([str(self.bin / "ferrofab"), "pki", "issue", "--dir", str(self.pki), "--identity", "admin"])
        for c in CTL:
            # The first start waits for the etcd cluster's quorum.
            wait_for(f"{c} to start on etcd", 60, lambda: self.try_start(c), period=1)

    def try_start(self, c: str) -> bool:
        try:
            self.start_controller(c)
            return True
        except Failure as e:
            say(f"{c} not up yet: {str(e)[-200:]}")
            return False

    def start_agent(self, node: str, role: str) -> None:
        d = self.work / node
        (d / "pool").mkdir(parents=True)
        (d / "pool2").mkdir(parents=True)
        token = self.cli("node", "token", "create", "--node", node, "--ttl", "10m").stdout.strip()
        cfg = d / "etc" / "agent.toml"
        run(self.ns(node) + [
            str(self.bin / "ferrofab-agent"), "enroll", "--token", token,
            "--controller", f"{ADDR['c1']}:{GRPC_PORT}", "--ca", str(self.pki / "ca.crt"),
            "--node", node, "--roles", role, "--data-address", f"{ADDR[node]}:{DATA_PORT}",
            "--config", str(cfg), "--state-dir", str(d / "state")])
        tls = tomllib.loads(cfg.read_text())["tls"]
        eps = ", ".join(f'"https://{ADDR[c]}:{GRPC_PORT}"' for c in CTL)
        cfg.write_text(
            f'node = "{node}"\nroles = ["{role}"]\ncontroller_endpoints = [{eps}]\n'
            f'expose_dir = "{d}/volumes"\nstate_dir = "{d}/state"\n'
            f'api_socket = "{d}/agent.sock"\nresync_interval = "10s"\n'
            f'log_level = "info,ferrofab_nvmeof=warn"\n'
            f'[tls]\nca = "{tls["ca"]}"\ncert = "{tls["cert"]}"\nkey = "{tls["key"]}"\n'
            f'[pools.p-{node}]\npath = "{d}/pool"\n'
            + (f'[pools.p-big]\npath = "{d}/pool2"\n' if role == "storage" else ""))
        self.spawn(node, node, [str(self.bin / "ferrofab-agent"), "run", "--config", str(cfg)], d / "agent.log")

    def start_watch(self) -> None:
        argv = [str(self.bin / "examples" / "ha_watch"), str(self.pki / "ca.crt"),
                str(self.pki / "admin.crt"), str(self.pki / "admin.key"),
                *[f"https://{ADDR[c]}:{GRPC_PORT}" for c in CTL]]
        self.spawn("watch", "adm", argv, self.work / "watch.log", ready=None)

    # ------------------------------------------------------------ control plane

    def control_plane(self, first: int = 0) -> dict:
        r = self.cli("status", "-o", "json", first=first, check=False)
        if r.returncode != 0:
            return {}
        return json.loads(r.stdout).get("control_plane") or {}

    def leader(self, avoid: str | None = None) -> str | None:
        first = 0 if avoid is None else (CTL.index(avoid) + 1) % 3
        cp = self.control_plane(first)
        return cp.get("leader") or None

    def partition_from_etcd(self, c: str) -> None:
        for e in ETCD:
            subprocess.run(["ip", "-n", f"{self.prefix}-{c}", "route", "add", "blackhole", f"{ADDR[e]}/32"],
                           check=True)

    def heal(self, c: str) -> None:
        for e in ETCD:
            subprocess.run(["ip", "-n", f"{self.prefix}-{c}", "route", "del", "blackhole", f"{ADDR[e]}/32"],
                           stderr=subprocess.DEVNULL, check=False)

    def exposure_size(self, vol: str):
        try:
            return (self.work / "ws1" / "volumes" / vol).stat().st_size
        except OSError:
            return None


# -------------------------------------------------------------------- history

class Ledger:
    """Acknowledged changes, as the clients saw them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.created: dict[str, int] = {}      # name -> acknowledged rv
        self.attached: dict[str, str] = {}     # attachment -> volume
        self.deleted: set[str] = set()
        self.refused = 0
        self.failed: list[str] = []
        self.ack_times: list[float] = []
        # Acknowledged creates and creates refused for capacity or quota:
        # both are decisions a live replica made. Once the pool is full
        # (test 1 fills it on purpose) only refusals show the failover.
        self.answer_times: list[float] = []

    def ack(self, name: str, rv: int) -> None:
        with self.lock:
            self.created[name] = rv
            self.ack_times.append(time.monotonic())
            self.answer_times.append(time.monotonic())


def create(c: Cluster, led: Ledger, name: str, first: int, pool: str = "p-s1", size: int = VOL_MIB) -> bool:
    r = c.cli("volume", "create", name, "--tenant", "lab", "--size", f"{size}MiB", "--pool", pool,
              "-o", "json", first=first, check=False)
    if r.returncode == 0:
        led.ack(name, json.loads(r.stdout)["metadata"]["resource_version"])
        return True
    if "cannot take" in r.stderr or "quota" in r.stderr:
        with led.lock:
            led.refused += 1
            led.answer_times.append(time.monotonic())
    else:
        with led.lock:
            led.failed.append(f"{name}: {r.stderr.strip()}")
    return False


def check_history(c: Cluster, led: Ledger) -> None:
    """Per object: revisions strictly increase within one object's life,
    every acknowledged version appears, nothing but a new object follows a
    delete."""
    lines = [json.loads(x) for x in (c.work / "watch.out").read_text().splitlines() if x.strip()]
    seen: dict[str, list[dict]] = {}
    resumes = 0
    for ev in lines:
        if ev["type"] == "RESUMED":
            resumes += 1
            continue
        if ev["type"] == "EVENT_TYPE_SYNCED":
            continue
        seen.setdefault(ev["name"], []).append(ev)
    problems = []
    for name, evs in seen.items():
        life = None
        last_rev = 0
        for ev in evs:
            if ev["revision"] < last_rev:
                problems.append(f"{name}: revision {ev['revision']} after {last_rev}")
            last_rev = max(last_rev, ev["revision"])
            if ev["type"] == "EVENT_TYPE_DELETED":
                life = None
                continue
            if life is not None and ev["uid"] != life and ev["type"] != "EVENT_TYPE_ADDED":
                problems.append(f"{name}: event of uid {ev['uid']} while {life} lives")
            life = ev["uid"]
    acked_rvs = {(n, rv) for n, rv in led.created.items()}
    seen_rvs = {(n, e["rv"]) for n, evs in seen.items() for e in evs if e["type"] != "EVENT_TYPE_DELETED"}
    missing = sorted(acked_rvs - seen_rvs)
    if missing:
        problems.append(f"{len(missing)} acknowledged versions never seen by the watcher, e.g. {missing[:5]}")
    if problems:
        raise Failure("history check failed: " + "; ".join(problems[:10]))
    say(f"history: {len(lines)} events over {len(seen)} volumes, {resumes} (re)connects of the watcher; "
        f"revisions monotonic per object, all {len(acked_rvs)} acknowledged versions seen")


def items(c: Cluster, kind: str) -> list[dict]:
    doc = c.cli_json(kind, "list")
    return doc["items"] if isinstance(doc, dict) else doc


def volumes(c: Cluster) -> list[dict]:
    return items(c, "volume")


# -------------------------------------------------------------------- tests

def test_kill_leader(c: Cluster, led: Ledger) -> None:
    leader = wait_for("a leader", 30, c.leader)
    say(f"test 1: leader is {leader}; {CLIENTS} clients x {PER_CLIENT} creates of {VOL_MIB} MiB into a "
        f"{POOL_MIB} MiB pool, every {ATTACH_EVERY}th attached to ws1; kill -9 of {leader} a quarter in")
    progress = {"n": 0}
    killed = threading.Event()

    def client(i: int) -> None:
        ok = 0
        for j in range(PER_CLIENT):
            name = f"v{i}-{j}"
            if create(c, led, name, first=i % 3):
                ok += 1
                if ok % ATTACH_EVERY == 0:
                    a = f"a-{name}"
                    r = c.cli("attachment", "create", a, "--volume", name, "--node", "ws1",
                              first=i % 3, check=False)
                    if r.returncode == 0:
                        with led.lock:
                            led.attached[a] = name
                    else:
                        with led.lock:
                            led.failed.append(f"{a}: {r.stderr.strip()}")
            with led.lock:
                progress["n"] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    wait_for("a quarter of the creates", 300, lambda: progress["n"] >= CLIENTS * PER_CLIENT // 4)
    killed_at = time.monotonic()
    c.stop(leader, signal.SIGKILL)
    killed.set()
    new = wait_for("a new leader", 4 * TTL_S, lambda: (lambda l: l if l and l != leader else None)(
        c.leader(avoid=leader)), period=0.2)
    takeover = time.monotonic() - killed_at
    for t in threads:
        t.join(timeout=600)
    after = [t for t in led.answer_times if t > killed_at]
    failover = (after[0] - killed_at) if after else float("nan")
    c.start_controller(leader)
    vols = volumes(c)
    names = [v["metadata"]["name"] for v in vols]
    if len(names) != len(set(names)):
        raise Failure("a volume is listed twice")
    missing = [n for n in led.created if n not in names]
    if missing:
        raise Failure(f"acknowledged creates missing after the kill: {missing[:10]}")
    in_pool = sum(v["status"]["size_bytes"] for v in vols if v.get("status", {}).get("pool") == "p-s1")
    if in_pool > POOL_MIB * MIB:
        raise Failure(f"pool over-committed: {in_pool} bytes placed in {POOL_MIB} MiB")
    if led.failed:
        say(f"test 1: {len(led.failed)} requests failed during the failover (not acknowledged): "
            f"{led.failed[:3]}")
    atts = {a["metadata"]["name"] for a in items(c, "attachment")}
    lost = [a for a in led.attached if a not in atts]
    if lost:
        raise Failure(f"acknowledged attachments missing: {lost}")
    for a, v in led.attached.items():
        wait_for(f"{v} exposed on ws1", 120, lambda: c.exposure_size(v) == VOL_MIB * MIB)
    say(f"test 1 passed: {len(led.created)} creates acknowledged ({led.refused} refused for capacity), "
        f"{in_pool // MIB} MiB placed of {POOL_MIB}, {len(led.attached)} attachments converged; "
        f"new leader {new} {takeover:.1f}s after the kill (TTL {TTL_S}s), first create answered "
        f"(acknowledged or refused for capacity) {failover:.2f}s after it")


def expiry_deletions(c: Cluster, vol: str) -> dict[str, int]:
    out = {}
    for ctl in CTL:
        log = (c.work / ctl / "controller.log").read_text(errors="replace")
        out[ctl] = sum(1 for line in log.splitlines()
                       if "expired burst volume deleted" in line and f"volume={vol}" in line.replace('"', ""))
    return out


def test_partition_leader(c: Cluster, led: Ledger) -> None:
    leader = wait_for("a leader", 30, c.leader)
    other = (CTL.index(leader) + 1) % 3
    r = c.cli("volume", "create", "burst", "--tenant", "lab", "--size", "8MiB", "--pool", "p-s1",
              "--expires-in", "6s", "--expiry-action", "delete", "-o", "json", first=other)
    led.ack("burst", json.loads(r.stdout)["metadata"]["resource_version"])
    say(f"test 2: burst volume expiring in 6s; partitioning leader {leader} from etcd (not from agents)")
    cut_at = time.monotonic()
    c.partition_from_etcd(leader)
    new = wait_for("a new leader", 4 * TTL_S, lambda: (lambda l: l if l and l != leader else None)(
        c.leader(avoid=leader)), period=0.2)
    takeover = time.monotonic() - cut_at
    # The lease runs out TTL after the last renewal (at most one tick,
    # 0.5 s, before the cut); the next check takes it; the CLI poll adds its own.
    if takeover > TTL_S + 2:
        raise Failure(f"new leader after {takeover:.1f}s, lease TTL {TTL_S}s")
    wait_for("the burst volume to be deleted", 60,
             lambda: c.cli("volume", "get", "burst", first=other, check=False).returncode == 3)
    time.sleep(3)  # the old leader, still cut off, must not act meanwhile
    c.heal(leader)
    time.sleep(2 * TTL_S)  # and not once it is back either
    led.deleted.add("burst")
    n = expiry_deletions(c, "burst")
    if sum(n.values()) != 1 or n[leader] != 0:
        raise Failure(f"the burst volume's deletion was logged {n} times per replica; expected once, not by {leader}")
    lines = [json.loads(x) for x in (c.work / "watch.out").read_text().splitlines() if x.strip()]
    dels = {e["revision"] for e in lines if e.get("name") == "burst" and e["type"] == "EVENT_TYPE_DELETED"}
    if len(dels) != 1:
        raise Failure(f"the watcher saw {len(dels)} deletions of the burst volume")
    say(f"test 2 passed: new leader {new} {takeover:.1f}s after the partition (TTL {TTL_S}s); "
        f"the burst volume was deleted once, by {[k for k, v in n.items() if v]}")


# Most creates test 3's client makes (half of them are deleted again), and
# its pause between them, so that they span the restarts on a fast machine.
CHURN_MAX = 400
CHURN_PAUSE = 0.05


def test_rolling_restart(c: Cluster, led: Ledger) -> None:
    say("test 3: rolling restart of c1, c2, c3 while a client creates and deletes")
    stop = threading.Event()

    def churn() -> None:
        # Bounded and paced: on a quiet machine an unpaced client made over
        # 500 creates in the restart window, every other one stays, and past
        # the pool's 256-namespace limit test 4's create was refused for
        # that instead of for the lost quorum it checks.
        i = 0
        while not stop.is_set() and i < CHURN_MAX:
            name = f"r{i}"
            if create(c, led, name, first=i % 3, pool="p-big", size=4):
                if i % 2 == 1 and c.cli("volume", "delete", name, first=(i + 1) % 3,
                                        check=False).returncode == 0:
                    with led.lock:
                        led.deleted.add(name)
                        led.created.pop(name, None)
            i += 1
            time.sleep(CHURN_PAUSE)

    t = threading.Thread(target=churn)
    t.start()
    try:
        for ctl in CTL:
            c.stop(ctl)
            time.sleep(1)
            c.start_controller(ctl)
            time.sleep(2)
    finally:
        stop.set()
        t.join(timeout=120)
    names = {v["metadata"]["name"] for v in volumes(c)}
    missing = [n for n in led.created if n not in names and n not in led.deleted]
    if missing:
        raise Failure(f"acknowledged creates missing after the rolling restart: {missing[:10]}")
    back = [n for n in led.deleted if n in names]
    if back:
        raise Failure(f"acknowledged deletes undone: {back}")
    for a, v in led.attached.items():
        wait_for(f"{v} still exposed on ws1", 60, lambda: c.exposure_size(v) == VOL_MIB * MIB)
    say(f"test 3 passed: every acknowledged create and delete held; {len(led.attached)} exposures stayed")


def test_quorum_loss(c: Cluster, led: Ledger) -> None:
    """Two of three etcd members cut off: writes refused with a clear
    error, reads from the replicas' caches go on, the data path is
    untouched; after the heal writes go through again."""
    say("test 4: etcd members e2 and e3 cut off (no quorum)")
    vol = next(iter(led.attached.values()))
    before = (c.work / "ws1" / "volumes" / vol).read_bytes()[:4096]
    for e in ("e2", "e3"):
        subprocess.run(["ip", "-n", f"{c.prefix}-hub", "link", "set", f"h-{e}", "down"], check=True)
    try:
        time.sleep(2)
        r = c.cli("volume", "create", "q1", "--tenant", "lab", "--size", "4MiB", "--pool", "p-big", check=False)
        if r.returncode == 0:
            raise Failure("a write was acknowledged without an etcd quorum")
        if "etcd" not in r.stderr:
            raise Failure(f"the refused write does not say etcd is the problem: {r.stderr.strip()}")
        listed = {v["metadata"]["name"] for v in volumes(c)}
        if vol not in listed:
            raise Failure("reads from the caches stopped without a quorum")
        now = (c.work / "ws1" / "volumes" / vol).read_bytes()[:4096]
        if now != before or c.exposure_size(vol) != VOL_MIB * MIB:
            raise Failure("the data path changed while etcd had no quorum")
        say(f"test 4: write refused ({r.stderr.strip()[:140]}), reads and the data path go on")
    finally:
        for e in ("e2", "e3"):
            subprocess.run(["ip", "-n", f"{c.prefix}-hub", "link", "set", f"h-{e}", "up"], check=False)
    t0 = time.monotonic()
    wait_for("a write after the heal", 60,
             lambda: create(c, led, "q2", first=0, pool="p-big", size=4), period=0.5)
    say(f"test 4 passed: writes accepted again {time.monotonic() - t0:.1f}s after the heal")


def test_backup_restore(c: Cluster) -> None:
    """The etcd cluster is lost (every member's data deleted) and restored
    from a backup into a new one: the objects come back with their
    identities, the agents reconverge without a data-path change."""
    say("test 5: backup, loss of the whole etcd cluster, restore into a new one")
    key = c.work / "backup.key"
    key.write_text("ab" * 32 + "\n")
    backup = c.work / "state.ffbackup"
    ctl = [str(c.bin / "ferrofab-controller"), "--config", str(c.controller_toml("c1"))]
    run(c.ns("c1") + ctl + ["backup", "--out", str(backup), "--key-file", str(key)])
    before = {v["metadata"]["name"]: v["metadata"]["uid"] for v in volumes(c)}
    exposed = {v: (c.work / "ws1" / "volumes" / v).read_bytes()[:4096]
               for v in {c.cli_json("attachment", "get", a)["spec"]["volume"]
                         for a in [x["metadata"]["name"] for x in items(c, "attachment")]}}
    for name in [*CTL, *ETCD]:
        c.stop(name)
    for e in ETCD:
        subprocess.run(["rm", "-rf", str(c.work / e / "data")], check=True)
    c.start_etcd_members()
    t0 = time.monotonic()
    wait_for("the new etcd cluster to take the restore", 60, lambda: subprocess.run(
        c.ns("c1") + ctl + ["restore", "--from", str(backup), "--key-file", str(key)],
        capture_output=True, text=True, timeout=60).returncode == 0, period=1)
    for ctl_name in CTL:
        c.start_controller(ctl_name)
    after = {v["metadata"]["name"]: v["metadata"]["uid"] for v in volumes(c)}
    if after != before:
        raise Failure(f"restored volumes differ: {len(after)} vs {len(before)} before")
    time.sleep(12)  # one agent resync interval and more
    for v, head in exposed.items():
        if (c.work / "ws1" / "volumes" / v).read_bytes()[:4096] != head:
            raise Failure(f"exposure {v} changed across the restore")
    c.cli("volume", "create", "after-restore", "--tenant", "lab", "--size", "8MiB", "--pool", "p-big")
    c.cli("attachment", "create", "a-after-restore", "--volume", "after-restore", "--node", "ws1")
    wait_for("a volume attached after the restore to be exposed", 90,
             lambda: c.exposure_size("after-restore") == 8 * MIB)
    say(f"test 5 passed: {len(after)} volumes restored with their identities "
        f"{time.monotonic() - t0:.0f}s after the new etcd started; {len(exposed)} exposures unchanged; "
        f"new attachments converge")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, type=pathlib.Path)
    ap.add_argument("--work", required=True, type=pathlib.Path)
    ap.add_argument("--prefix", required=True)
    a = ap.parse_args()
    c = Cluster(a.bin.resolve(), a.work.resolve(), a.prefix)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    led = Ledger()
    try:
        c.start_etcd()
        c.start_controllers()
        c.start_watch()
        c.cli("tenant", "create", "lab", "--allowed-node", "ws1")
        c.start_agent("s1", "storage")
        c.start_agent("ws1", "workstation")
        c.cli("pool", "create", "p-s1", "--node", "s1", "--backing", "directory",
              "--path", str(c.work / "s1" / "pool"), "--capacity", f"{POOL_MIB}MiB")
        c.cli("pool", "create", "p-big", "--node", "s1", "--backing", "directory",
              "--path", str(c.work / "s1" / "pool2"), "--capacity", "100GiB")
        say(f"set up in {time.monotonic() - started:.0f}s: 3 etcd members, 3 controllers, s1, ws1")
        test_kill_leader(c, led)
        test_terraform_failover(c, CTL, ADDR, GRPC_PORT)
        test_partition_leader(c, led)
        test_rolling_restart(c, led)
        test_quorum_loss(c, led)
        time.sleep(1)
        check_history(c, led)
        c.stop("watch")  # a new etcd cluster starts its revisions anew
        test_backup_restore(c)
        say(f"all tests passed in {time.monotonic() - started:.0f}s")
        return 0
    except Failure as e:
        print(f"ha: FAILED: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ha: interrupted", file=sys.stderr)
        return 1
    finally:
        c.stop_all()


if __name__ == "__main__":
    sys.exit(main())
