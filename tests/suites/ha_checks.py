#!/usr/bin/env python3
"""Tests of the `ha` suite (see the header of ha.sh).

Expects ha.sh to have created the namespaces PREFIX-{hub,e1..e3,c1..c3,
s1,s2,ws1..ws3,adm}; starts etcd, the controllers, the agents and the
history watcher in them with `nsenter --net`, runs the tests and checks
the recorded history after each of them.
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
        "s1": "10.213.78.21", "s2": "10.213.78.22",
        "ws1": "10.213.78.31", "ws2": "10.213.78.32", "ws3": "10.213.78.33",
        "adm": "10.213.78.40"}
ETCD = ["e1", "e2", "e3"]
CTL = ["c1", "c2", "c3"]
STORAGE = ["s1", "s2"]
WORKSTATIONS = ["ws1", "ws2", "ws3"]
# Each storage agent's second pool (its directory pool2): p-big on s1 takes
# tests 3-5's volumes, p-q on s2 the quota tenant's in test 1.
SECOND_POOL = {"s1": "p-big", "s2": "p-q"}
GRPC_PORT = 7443
HTTP_PORT = 7444         # [http_api]: test 4 checks the 503 there too
DATA_PORT = 4420
TTL_S = 4                # store.etcd.lease_ttl_seconds
MIB = 1 << 20
# Test 1: 500 creates. Clients 0-3 create VOL_MIB volumes for tenant lab,
# alternately into p-s1 and p-s2 (400 requests, 200 per pool); each pool
# holds POOL_VOLS of them, so both fill up and refuse the rest. Client 4
# creates for tenant quota (QUOTA_VOLS volumes at most) into p-q. Every
# ATTACH_EVERY-th acknowledged volume of a client is attached, round robin
# over the three workstations.
VOL_MIB = 4
POOL_VOLS = 180
POOL_MIB = POOL_VOLS * VOL_MIB
QUOTA_VOLS = 60
CLIENTS = 5
PER_CLIENT = 100
ATTACH_EVERY = 8


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
        for name in ["writer", *[n for n in self.procs if n.startswith("watch")], *WORKSTATIONS]:
            self.stop(name)
        for ws in WORKSTATIONS:
            subprocess.run(self.ns(ws) + [str(self.bin / "ferrofab-agent"), "holder", "stop", "--state-dir",
                                          str(self.work / ws / "state"), "--timeout", "20s"],
                           stderr=subprocess.DEVNULL, check=False, timeout=60)
        for name in [*STORAGE, *CTL, *ETCD]:
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
            f'[http_api]\nlisten = "0.0.0.0:{HTTP_PORT}"\ndashboard = false\n'
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
            + (f'[pools.{SECOND_POOL[node]}]\npath = "{d}/pool2"\n' if role == "storage" else ""))
        self.spawn(node, node, [str(self.bin / "ferrofab-agent"), "run", "--config", str(cfg)], d / "agent.log")

    def start_watch(self, name: str = "watch") -> pathlib.Path:
        """The history recorder (volumes and attachments); returns the
        file its events go to."""
        argv = [str(self.bin / "examples" / "ha_watch"), str(self.pki / "ca.crt"),
                str(self.pki / "admin.crt"), str(self.pki / "admin.key"),
                *[f"https://{ADDR[c]}:{GRPC_PORT}" for c in CTL]]
        self.spawn(name, "adm", argv, self.work / f"{name}.log", ready=None)
        return self.work / f"{name}.out"

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

    def exposure_size(self, vol: str, ws: str = "ws1"):
        try:
            return (self.work / ws / "volumes" / vol).stat().st_size
        except OSError:
            return None

    def link(self, node: str, up: bool) -> None:
        """NODE's cable at the hub: down cuts it off from everyone."""
        subprocess.run(["ip", "-n", f"{self.prefix}-hub", "link", "set", f"h-{node}",
                        "up" if up else "down"], check=up)

    def http_create(self, ctl: str, body: dict) -> tuple[int, dict]:
        """POST /v1/volumes on CTL's HTTP API from the admin's namespace:
        (HTTP status, JSON body)."""
        r = subprocess.run(self.ns("adm") + [
            "curl", "-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}",
            "--cacert", str(self.pki / "ca.crt"), "--cert", str(self.pki / "admin.crt"),
            "--key", str(self.pki / "admin.key"), "-H", "Content-Type: application/json",
            "-X", "POST", f"https://{ADDR[ctl]}:{HTTP_PORT}/v1/volumes", "-d", json.dumps(body)],
            capture_output=True, text=True, timeout=60)
        out, _, code = r.stdout.rpartition("\n")
        try:
            return int(code), json.loads(out or "{}")
        except ValueError:
            raise Failure(f"curl to {ctl}'s HTTP API failed: {r.stderr.strip()} {r.stdout[:200]}")


# -------------------------------------------------------------------- history

class Ledger:
    """Acknowledged changes, as the clients saw them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.created: dict[str, int] = {}      # name -> acknowledged rv
        self.uids: dict[str, str] = {}         # name -> acknowledged uid
        self.attached: dict[str, tuple[str, str]] = {}  # attachment -> (volume, workstation)
        self.att_rvs: dict[str, int] = {}      # attachment -> acknowledged rv
        self.deleted: set[str] = set()
        self.refused = 0
        self.failed: list[str] = []
        self.ack_times: list[float] = []
        # Acknowledged creates and creates refused for capacity or quota:
        # both are decisions a live replica made. Once the pool is full
        # (test 1 fills it on purpose) only refusals show the failover.
        self.answer_times: list[float] = []

    def ack(self, name: str, rv: int, uid: str = "") -> None:
        with self.lock:
            self.created[name] = rv
            if uid:
                self.uids[name] = uid
            self.ack_times.append(time.monotonic())
            self.answer_times.append(time.monotonic())

    def acked_versions(self) -> set[tuple[str, str, int]]:
        """(kind, name, rv) of every acknowledged create."""
        with self.lock:
            return ({("volume", n, rv) for n, rv in self.created.items()}
                    | {("attachment", n, rv) for n, rv in self.att_rvs.items()})


def create(c: Cluster, led: Ledger, name: str, first: int, pool: str = "p-s1", size: int = VOL_MIB,
           tenant: str = "lab") -> bool:
    r = c.cli("volume", "create", name, "--tenant", tenant, "--size", f"{size}MiB", "--pool", pool,
              "-o", "json", first=first, check=False)
    if r.returncode == 0:
        meta = json.loads(r.stdout)["metadata"]
        led.ack(name, meta["resource_version"], meta["uid"])
        return True
    if "cannot take" in r.stderr or "quota" in r.stderr:
        with led.lock:
            led.refused += 1
            led.answer_times.append(time.monotonic())
    else:
        with led.lock:
            led.failed.append(f"{name}: {r.stderr.strip()}")
    return False


def attach(c: Cluster, led: Ledger, vol: str, ws: str, first: int) -> bool:
    a = f"a-{vol}"
    r = c.cli("attachment", "create", a, "--volume", vol, "--node", ws, "-o", "json", first=first, check=False)
    with led.lock:
        if r.returncode == 0:
            led.attached[a] = (vol, ws)
            led.att_rvs[a] = json.loads(r.stdout)["metadata"]["resource_version"]
            return True
        led.failed.append(f"{a}: {r.stderr.strip()}")
    return False


def read_history(path: pathlib.Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def history_problems(lines: list[dict], led: Ledger) -> tuple[list[str], dict]:
    """The per-object invariants of one recorded history: within an
    object's life its events' revisions strictly increase and each
    carries its own version (rv == the event's revision); nothing but a
    new object follows a delete; every acknowledged version appears; the
    recorder never had to start over from a snapshot (a gap). Returns the
    problems and the last event per (kind, name)."""
    problems = []
    started: set[str] = set()
    last: dict[tuple[str, str], dict] = {}
    for ev in lines:
        kind = ev.get("kind", "volume")
        if ev["type"] == "RESUMED":
            if ev["from"] == 0 and kind in started:
                problems.append(f"the {kind} watcher had to start over from a snapshot: its history has a gap")
            started.add(kind)
            continue
        if ev["type"] == "EVENT_TYPE_SYNCED":
            continue
        key = (kind, ev["name"])
        prev = last.get(key)
        if prev is not None:
            if ev["revision"] <= prev["revision"]:
                problems.append(f"{kind} {ev['name']}: revision {ev['revision']} after {prev['revision']}")
            if (prev["type"] != "EVENT_TYPE_DELETED" and ev["uid"] != prev["uid"]
                    and ev["type"] != "EVENT_TYPE_ADDED"):
                problems.append(f"{kind} {ev['name']}: event of uid {ev['uid']} while {prev['uid']} lives")
            if prev["type"] == "EVENT_TYPE_DELETED" and ev["type"] != "EVENT_TYPE_ADDED":
                problems.append(f"{kind} {ev['name']}: {ev['type']} after its delete")
        if ev["type"] != "EVENT_TYPE_DELETED" and ev["rv"] != ev["revision"]:
            problems.append(f"{kind} {ev['name']}: version {ev['rv']} delivered at revision {ev['revision']}")
        last[key] = ev
    seen = {(ev.get("kind", "volume"), ev["name"], ev["rv"]) for ev in lines
            if ev["type"] not in ("RESUMED", "EVENT_TYPE_SYNCED", "EVENT_TYPE_DELETED")}
    missing = sorted(led.acked_versions() - seen)
    if missing:
        problems.append(f"{len(missing)} acknowledged versions never seen by the watcher, e.g. {missing[:5]}")
    return problems, last


def listed_versions(c: Cluster) -> dict[tuple[str, str], int]:
    out = {}
    for kind in ("volume", "attachment"):
        for o in items(c, kind):
            out[(kind, o["metadata"]["name"])] = o["metadata"]["resource_version"]
    return out


def check_history(c: Cluster, led: Ledger, test: str, path: pathlib.Path | None = None) -> None:
    """Checks the history recorded so far ([`history_problems`]) and that
    the watcher's view ends where the store is: every listed object's last
    event carries its listed version, every object the watcher still
    holds is listed (no change was skipped at the end either)."""
    path = path or c.work / "watch.out"
    diff: list[str] = []

    def caught_up() -> bool:
        listed = listed_versions(c)
        _, last = history_problems(read_history(path), Ledger())
        held = {k: ev["rv"] for k, ev in last.items() if ev["type"] != "EVENT_TYPE_DELETED"}
        diff[:] = [f"{k[0]} {k[1]}: listed at {listed.get(k)}, watcher holds {held.get(k)}"
                   for k in sorted(set(listed) | set(held)) if listed.get(k) != held.get(k)]
        return not diff

    try:
        wait_for("the watcher to hold what the replicas list", 30, caught_up, period=0.5)
    except Failure:
        raise Failure(f"history after {test}: the watcher's view differs from the store in {len(diff)} "
                      f"objects, e.g. {diff[:5]}")
    lines = read_history(path)
    problems, last = history_problems(lines, led)
    if problems:
        raise Failure(f"history after {test} failed: " + "; ".join(problems[:10]))
    resumes = sum(1 for ev in lines if ev["type"] == "RESUMED")
    say(f"history after {test}: {len(lines)} events over {len(last)} objects, {resumes} (re)connects "
        f"of the watcher; per object monotonic and gap-free, all {len(led.acked_versions())} acknowledged "
        f"versions seen, the watcher's view equals the store's")


def items(c: Cluster, kind: str, first: int = 0) -> list[dict]:
    doc = c.cli_json(kind, "list", first=first)
    return doc["items"] if isinstance(doc, dict) else doc


def volumes(c: Cluster) -> list[dict]:
    return items(c, "volume")


# -------------------------------------------------------------------- tests

def stream_client(c: Cluster, led: Ledger, i: int, progress: dict) -> None:
    """Test 1's client i: PER_CLIENT creates (see the constants), every
    ATTACH_EVERY-th acknowledged one attached to a workstation."""
    ok = 0
    for j in range(PER_CLIENT):
        name = f"v{i}-{j}"
        if i == CLIENTS - 1:
            placed = create(c, led, name, first=i % 3, pool="p-q", tenant="quota")
        else:
            placed = create(c, led, name, first=i % 3, pool=f"p-{STORAGE[j % 2]}")
        if placed:
            ok += 1
            if ok % ATTACH_EVERY == 0:
                attach(c, led, name, WORKSTATIONS[(ok // ATTACH_EVERY + i) % 3], first=i % 3)
        with led.lock:
            progress["n"] += 1


def check_stream(c: Cluster, led: Ledger) -> tuple[int, int]:
    """After test 1: every acknowledged create and attachment present with
    its identity, none twice, no pool or quota over-committed. Returns the
    bytes placed in the two tight pools and the quota tenant's volumes."""
    vols = volumes(c)
    names = [v["metadata"]["name"] for v in vols]
    if len(names) != len(set(names)):
        raise Failure("a volume is listed twice")
    uid = {v["metadata"]["name"]: v["metadata"]["uid"] for v in vols}
    missing = [n for n in led.created if n not in uid]
    if missing:
        raise Failure(f"acknowledged creates missing after the kill: {missing[:10]}")
    changed = [n for n, u in led.uids.items() if uid[n] != u]
    if changed:
        raise Failure(f"acknowledged volumes replaced by another object of the same name: {changed[:10]}")
    uids = list(uid.values())
    if len(uids) != len(set(uids)):
        raise Failure("two volumes share a uid")
    placed = 0
    for p in ("p-s1", "p-s2"):
        in_pool = sum(v["status"]["size_bytes"] for v in vols if v.get("status", {}).get("pool") == p)
        if in_pool > POOL_MIB * MIB:
            raise Failure(f"pool {p} over-committed: {in_pool} bytes placed in {POOL_MIB} MiB")
        placed += in_pool
    quota = sum(1 for v in vols if v["spec"]["tenant"] == "quota")
    if quota > QUOTA_VOLS:
        raise Failure(f"tenant quota over-committed: {quota} volumes, quota {QUOTA_VOLS}")
    atts = {a["metadata"]["name"]: a["spec"] for a in items(c, "attachment")}
    lost = [a for a in led.attached if a not in atts]
    if lost:
        raise Failure(f"acknowledged attachments missing: {lost}")
    return placed, quota


def test_kill_leader(c: Cluster, led: Ledger) -> None:
    leader = wait_for("a leader", 30, c.leader)
    n = CLIENTS * PER_CLIENT
    say(f"test 1: leader is {leader}; {n} creates of {VOL_MIB} MiB from {CLIENTS} clients into two pools "
        f"of {POOL_VOLS} volumes and a {QUOTA_VOLS}-volume quota, every {ATTACH_EVERY}th attached to "
        f"ws1-ws3; kill -9 of {leader} a quarter in")
    progress = {"n": 0}
    t_start = time.monotonic()
    threads = [threading.Thread(target=stream_client, args=(c, led, i, progress)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    wait_for("a quarter of the creates", 300, lambda: progress["n"] >= n // 4)
    killed_at = time.monotonic()
    c.stop(leader, signal.SIGKILL)
    new = wait_for("a new leader", 4 * TTL_S, lambda: (lambda l: l if l and l != leader else None)(
        c.leader(avoid=leader)), period=0.2)
    takeover = time.monotonic() - killed_at
    for t in threads:
        t.join(timeout=900)
    stream_s = time.monotonic() - t_start
    after = [t for t in led.answer_times if t > killed_at]
    failover = (after[0] - killed_at) if after else float("nan")
    c.start_controller(leader)
    placed, quota = check_stream(c, led)
    if led.failed:
        say(f"test 1: {len(led.failed)} requests failed during the failover (not acknowledged): "
            f"{led.failed[:3]}")
    t0 = time.monotonic()
    for a, (v, ws) in led.attached.items():
        wait_for(f"{v} exposed on {ws}", 120, lambda: c.exposure_size(v, ws) == VOL_MIB * MIB)
    converged = time.monotonic() - t0
    say(f"test 1 passed: {len(led.created)} of {n} creates acknowledged ({led.refused} refused for "
        f"capacity or quota) in {stream_s:.0f}s, {placed // MIB} MiB placed of 2 x {POOL_MIB}, "
        f"{quota} of {QUOTA_VOLS} quota volumes, {len(led.attached)} attachments converged on "
        f"{len(WORKSTATIONS)} workstations ({converged:.1f}s after the stream); new leader {new} "
        f"{takeover:.1f}s after the kill (TTL {TTL_S}s), first create answered (acknowledged or "
        f"refused for capacity) {failover:.2f}s after it")


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
    r = c.cli("volume", "create", "burst", "--tenant", "lab", "--size", "8MiB", "--pool", "p-big",
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
    for a, (v, ws) in led.attached.items():
        wait_for(f"{v} still exposed on {ws}", 60, lambda: c.exposure_size(v, ws) == VOL_MIB * MIB)
    say(f"test 3 passed: every acknowledged create and delete held; {len(led.attached)} exposures stayed")


def refused_unavailable(c: Cluster, name: str) -> str:
    """A create while etcd has no quorum: refused through the CLI (whose
    `controller unavailable:` prefix is its rendering of gRPC UNAVAILABLE)
    and through the HTTP API with 503 and code UNAVAILABLE, both naming
    the cause. Returns the CLI's message."""
    r = c.cli("volume", "create", name, "--tenant", "lab", "--size", "4MiB", "--pool", "p-big", check=False)
    if r.returncode == 0:
        raise Failure("a write was acknowledged without an etcd quorum")
    msg = r.stderr.strip()
    if "controller unavailable: store unavailable: etcd has no quorum or cannot be reached" not in msg:
        raise Failure(f"the refused write is not UNAVAILABLE naming etcd's quorum: {msg}")
    status, body = c.http_create("c2", {"metadata": {"name": name}, "spec": {
        "tenant": "lab", "size": "4MiB", "pool": "p-big"}})
    err = body.get("error", {})
    if status != 503 or err.get("code") != "UNAVAILABLE" or "etcd has no quorum" not in err.get("message", ""):
        raise Failure(f"the HTTP API refused the write with {status} {body}, not 503 UNAVAILABLE naming etcd")
    return msg


def test_quorum_loss(c: Cluster, led: Ledger) -> None:
    """One etcd member cut off: writes go on with the other two. Then the
    majority (a second member) cut off: writes refused with UNAVAILABLE
    naming the lost quorum, reads from the replicas' caches go on, the
    data path is untouched; after the heal writes go through again."""
    vol, ws = next(iter(led.attached.values()))
    exposure = c.work / ws / "volumes" / vol
    before = exposure.read_bytes()[:4096]
    say("test 4: etcd member e3 cut off (two of three keep the quorum)")
    c.link("e3", False)
    try:
        t0 = time.monotonic()
        # A fresh name per attempt: a create that timed out may still have
        # committed, and its retry would meet "already exists".
        tries = iter(range(1000))
        wait_for("a write with one etcd member cut off", 30,
                 lambda: create(c, led, f"q0-{next(tries)}", first=1, pool="p-big", size=4), period=0.5)
        one_cut = time.monotonic() - t0
        n = next(tries)
        say(f"test 4: e2 cut off too (no quorum); a write with e3 alone cut was acknowledged in {one_cut:.1f}s "
            f"(attempt {n}; refused before: {[f[:150] for f in led.failed[-(n - 1):]] if n > 1 else []})")
        c.link("e2", False)
        time.sleep(2)
        msg = refused_unavailable(c, "q1")
        # Every replica lists from its cache. The one that acknowledged
        # the write with e3 cut (c2) lists it; another may not have seen
        # it yet (its watch was on e3) and cannot until the quorum is back.
        for first in range(3):
            listed = {v["metadata"]["name"] for v in items(c, "volume", first)}
            if vol not in listed:
                raise Failure(f"reads from {CTL[first]}'s cache stopped without a quorum")
            if first == 1 and not any(n.startswith("q0-") for n in listed):
                raise Failure("c2 does not list the write it acknowledged before the quorum was lost")
        now = exposure.read_bytes()[:4096]
        if now != before or c.exposure_size(vol, ws) != VOL_MIB * MIB:
            raise Failure("the data path changed while etcd had no quorum")
        say(f"test 4: write refused ({msg[:160]}), HTTP 503 UNAVAILABLE; reads and the data path go on")
    finally:
        for e in ("e2", "e3"):
            c.link(e, True)
    t0 = time.monotonic()
    wait_for("a write after the heal", 60,
             lambda: create(c, led, "q2", first=0, pool="p-big", size=4), period=0.5)
    say(f"test 4 passed: writes accepted again {time.monotonic() - t0:.1f}s after the heal")


def test_backup_restore(c: Cluster, led: Ledger) -> None:
    """The etcd cluster is lost (every member's data deleted) and restored
    from a backup into a new one: the objects come back with their
    identities, the agents reconverge without a data-path change. A new
    recorder (`watch5`) follows the new cluster, whose revisions start
    anew; LED holds this test's acknowledged changes."""
    say("test 5: backup, loss of the whole etcd cluster, restore into a new one")
    key = c.work / "backup.key"
    key.write_text("ab" * 32 + "\n")
    backup = c.work / "state.ffbackup"
    ctl = [str(c.bin / "ferrofab-controller"), "--config", str(c.controller_toml("c1"))]
    run(c.ns("c1") + ctl + ["backup", "--out", str(backup), "--key-file", str(key)])
    before = {v["metadata"]["name"]: v["metadata"]["uid"] for v in volumes(c)}
    exposed = {(a["spec"]["volume"], a["spec"]["node"]): b""
               for a in items(c, "attachment")}
    for v, ws in exposed:
        exposed[(v, ws)] = (c.work / ws / "volumes" / v).read_bytes()[:4096]
    c.stop("watch")  # the new etcd cluster starts its revisions anew
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
    c.start_watch("watch5")
    after = {v["metadata"]["name"]: v["metadata"]["uid"] for v in volumes(c)}
    if after != before:
        raise Failure(f"restored volumes differ: {len(after)} vs {len(before)} before")
    time.sleep(12)  # one agent resync interval and more
    for (v, ws), head in exposed.items():
        if (c.work / ws / "volumes" / v).read_bytes()[:4096] != head:
            raise Failure(f"exposure {v} on {ws} changed across the restore")
    if not create(c, led, "after-restore", first=1, pool="p-big", size=8):
        raise Failure(f"a create after the restore failed: {led.failed[-1:]}")
    if not attach(c, led, "after-restore", "ws2", first=2):
        raise Failure(f"an attachment after the restore failed: {led.failed[-1:]}")
    wait_for("a volume attached after the restore to be exposed", 90,
             lambda: c.exposure_size("after-restore", "ws2") == 8 * MIB)
    say(f"test 5 passed: {len(after)} volumes restored with their identities "
        f"{time.monotonic() - t0:.0f}s after the new etcd started; {len(exposed)} exposures unchanged; "
        f"new attachments converge")


def set_up(c: Cluster) -> None:
    """etcd, the controllers, the recorder, both tenants, the agents and
    the pools."""
    c.start_etcd()
    c.start_controllers()
    c.start_watch()
    allowed = sum((["--allowed-node", ws] for ws in WORKSTATIONS), [])
    c.cli("tenant", "create", "lab", *allowed)
    c.cli("tenant", "create", "quota", "--volume-quota", str(QUOTA_VOLS), *allowed)
    for s in STORAGE:
        c.start_agent(s, "storage")
    for ws in WORKSTATIONS:
        c.start_agent(ws, "workstation")
    for s in STORAGE:
        c.cli("pool", "create", f"p-{s}", "--node", s, "--backing", "directory",
              "--path", str(c.work / s / "pool"), "--capacity", f"{POOL_MIB}MiB")
        c.cli("pool", "create", SECOND_POOL[s], "--node", s, "--backing", "directory",
              "--path", str(c.work / s / "pool2"), "--capacity", "100GiB")


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
        set_up(c)
        say(f"set up in {time.monotonic() - started:.0f}s: 3 etcd members, 3 controllers, "
            f"{len(STORAGE)} storage and {len(WORKSTATIONS)} workstation agents")
        def terraform_failover(c, led):
            test_terraform_failover(c, CTL, ADDR, GRPC_PORT)

        for label, test in [("test 1", test_kill_leader), ("test 1b", terraform_failover),
                            ("test 2", test_partition_leader),
                            ("test 3", test_rolling_restart), ("test 4", test_quorum_loss)]:
            test(c, led)
            check_history(c, led, label)
        restored = Ledger()
        test_backup_restore(c, restored)
        check_history(c, restored, "test 5", c.work / "watch5.out")
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
