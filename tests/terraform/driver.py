#!/usr/bin/env python3
"""Suite `terraform`: real Terraform 1.0.3 against a real controller and real
agents on loopback, through terraform-provider-ferrofab (dev_overrides).

Cluster: `ferrofab dev` (controller, storage-1, ws-1) plus separately
enrolled `ferrofab-agent run` processes (storage-2, ws-2..ws-N).

Usage: driver.py suite | driver.py bench
Environment: FF_TF_BIN (directory with ferrofab, ferrofab-agent and
terraform-provider-ferrofab), FF_TF_WORK (scratch directory), FF_REPO.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib

BIN = pathlib.Path(os.environ["FF_TF_BIN"])
WORK = pathlib.Path(os.environ["FF_TF_WORK"])
REPO = pathlib.Path(os.environ["FF_REPO"])
EXAMPLE = REPO / "terraform-provider/examples/campus"
PROCS = []


def say(msg):
    print(f"terraform: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    raise SystemExit(f"terraform suite FAILED: {msg}")


def run(cmd, check=True, env=None, cwd=None, timeout=600):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if check and p.returncode != 0:
        fail(f"{' '.join(map(str, cmd))} exited {p.returncode}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p


def wait_for(what, pred, timeout=60, every=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    fail(f"timed out after {timeout}s waiting for {what}")


# ------------------------------------------------------------------ cluster

def toml_value(v):
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(v)


def toml_dump(d, prefix=""):
    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {toml_value(v)}")
    out = "\n".join(lines) + "\n"
    for k, v in tables:
        name = f"{prefix}{k}"
        out += f"\n[{name}]\n" + toml_dump(v, name + ".")
    return out


class Cluster:
    def __init__(self, workstations, storage):
        self.dir = WORK / "cluster"
        self.dev = self.dir / "dev"
        self.workstations = workstations
        self.storage = storage
        self.sockets = {}
        self.pools = {}

    def restart_dev(self, down_s=5):
        """Stops `ferrofab dev` (controller, storage-1, ws-1), keeps it down
        for `down_s` seconds and starts it again on the same directory
        (same ports, PKI and store)."""
        old = self.dev_proc
        os.killpg(old.pid, signal.SIGTERM)
        old.wait(timeout=30)
        time.sleep(down_s)
        log = open(self.dir / "dev.log", "a")
        p = subprocess.Popen([BIN / "ferrofab", "dev", "--dir", self.dev], stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        PROCS.append(p)
        self.dev_proc = p

    def cli(self, *args, check=True):
        return run([BIN / "ferrofab", "--config", self.dev / "client.toml", *args], check=check)

    def start(self):
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        log = open(self.dir / "dev.log", "w")
        p = subprocess.Popen([BIN / "ferrofab", "dev", "--dir", self.dev], stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        PROCS.append(p)
        self.dev_proc = p
        wait_for("ferrofab dev: ready", lambda: "ferrofab dev: ready" in (self.dir / "dev.log").read_text(), 180)
        cfg = tomllib.loads((self.dev / "client.toml").read_text())
        self.endpoint = cfg["endpoints"][0] if "endpoints" in cfg else cfg["endpoint"]
        self.sockets["ws-1"] = self.dev / "nodes/ws-1/agent.sock"
        self.pools["storage-1"] = str(self.dev / "pools/pool-1")
        for name in self.storage[1:]:
            self.add_agent(name, "storage")
        for name in self.workstations[1:]:
            self.add_agent(name, "workstation")
        wait_for("all nodes Ready", self.nodes_ready, 120, 0.5)

    def nodes_ready(self):
        nodes = json.loads(self.cli("node", "list", "-o", "json").stdout)
        items = nodes if isinstance(nodes, list) else nodes.get("items", [])
        ready = set()
        for n in items:
            for c in (n.get("status") or {}).get("conditions", []):
                if c.get("type") == "Ready" and c.get("status") in ("CONDITION_STATUS_TRUE", "True", 1, "TRUE"):
                    ready.add(n["metadata"]["name"])
        return set(self.storage + self.workstations) <= ready

    def add_agent(self, name, role):
        d = self.dir / name
        d.mkdir()
        token = self.cli("node", "token", "create", "--node", name).stdout.strip()
        host, port = re.match(r"https?://([^:/]+):(\d+)", self.endpoint).groups()
        cmd = [BIN / "ferrofab-agent", "enroll", "--token", token, "--controller", f"{host}:{port}",
               "--ca", self.dev / "pki/ca.crt", "--node", name, "--roles", role,
               "--config", d / "agent.toml", "--state-dir", d / "state"]
        if role == "storage":
            data_port = free_port()
            cmd += ["--data-address", f"127.0.0.1:{data_port}"]
        run(cmd)
        cfg = tomllib.loads((d / "agent.toml").read_text())
        cfg["state_dir"] = str(d / "state")
        cfg["api_socket"] = str(d / "agent.sock")
        cfg.pop("metrics_listen", None)
        if role == "storage":
            (d / "pool").mkdir()
            cfg["pools"] = {"campus": {"path": str(d / "pool"), "provisioning": "thin"}}
            self.pools[name] = str(d / "pool")
        else:
            (d / "volumes").mkdir()
            cfg["expose_dir"] = str(d / "volumes")
        (d / "agent.toml").write_text(toml_dump(cfg))
        log = open(d / "agent.log", "w")
        p = subprocess.Popen([BIN / "ferrofab-agent", "run", "--config", d / "agent.toml"], stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        PROCS.append(p)
        self.sockets[name] = d / "agent.sock"

    def agent(self, node, *args):
        out = run([BIN / "ferrofab-agent", *args, "--json", "--socket", self.sockets[node]]).stdout
        return json.loads(out)

    def exposed(self):
        """volume name -> (node, path, size_bytes) over every workstation."""
        out = {}
        for ws in self.workstations:
            if not pathlib.Path(self.sockets[ws]).exists():
                continue
            for a in self.agent(ws, "attachments").get("attachments", []):
                if a.get("state") == "live" and a.get("path"):
                    out[a["volume"]] = (ws, a["path"], a.get("size_bytes"))
        return out

    def exports(self):
        out = set()
        for name in self.storage:
            sock = self.dev / "nodes/storage-1/agent.sock" if name == "storage-1" else self.sockets[name]
            st = json.loads(run([BIN / "ferrofab-agent", "status", "--json", "--socket", sock]).stdout)
            out |= {e["volume"] for e in st.get("exports", [])}
        return out


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stop_all():
    # The workstations' data-path holders outlive their agents by design
    # (issue 15); stop them (detach, unmount) so no process or FUSE mount
    # is left behind. `ferrofab dev` stops its own.
    for state in sorted((WORK / "cluster").glob("ws-*/state")):
        if (state / "holder.sock").exists():
            subprocess.run([BIN / "ferrofab-agent", "holder", "stop", "--state-dir", state, "--timeout", "20s"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    for p in reversed(PROCS):
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in PROCS:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


# ------------------------------------------------------------------ terraform

class Tf:
    def __init__(self, cluster, name, source=EXAMPLE):
        self.dir = WORK / name
        if self.dir.exists():
            shutil.rmtree(self.dir)
        shutil.copytree(source, self.dir)
        rc = WORK / "dev.tfrc"
        rc.write_text('provider_installation {\n  dev_overrides {\n    "ferrofab/ferrofab" = "%s"\n  }\n  direct {}\n}\n'
                      % BIN)
        pki = cluster.dev / "pki"
        self.env = dict(os.environ, TF_CLI_CONFIG_FILE=str(rc), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1",
                        FERROFAB_ENDPOINTS=cluster.endpoint, FERROFAB_CA_FILE=str(pki / "ca.crt"),
                        FERROFAB_CERT_FILE=str(pki / "admin.crt"), FERROFAB_KEY_FILE=str(pki / "admin.key"))

    def __call__(self, *args, check=True):
        return run([os.environ.get("TERRAFORM", "terraform"), *args, "-no-color"], check=check, env=self.env, cwd=self.dir, timeout=900)

    def vars(self, **kw):
        (self.dir / "terraform.tfvars.json").write_text(json.dumps(kw))

    def plan_code(self):
        p = self("plan", "-detailed-exitcode", "-input=false", check=False)
        return p.returncode, p.stdout + p.stderr


def expect(cond, msg, out=""):
    if not cond:
        fail(f"{msg}\n{out[-6000:]}")


# ------------------------------------------------------------------ cases

MiB = 1 << 20


def case_apply(c, tf):
    """The first apply, with the controller stopped for 5 s while it runs:
    the provider retries, and the apply succeeds without being re-run."""
    cmd = [os.environ.get("TERRAFORM", "terraform"), "apply", "-auto-approve", "-input=false", "-no-color"]
    ap = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tf.env, cwd=tf.dir)
    # Stop the controller once some volumes exist and others are still to come.
    wait_for("the apply to create its first volumes",
             lambda: ap.poll() is not None or c.cli("volume", "list", "-o", "json").stdout.count('"home-') >= 3, 300, 0.2)
    restarted = ap.poll() is None
    if restarted:
        c.restart_dev(5)
    out, _ = ap.communicate(timeout=900)
    expect(ap.returncode == 0 and "Apply complete!" in out, "apply across a controller restart failed", out)
    expect(restarted, "the apply ended before the controller could be restarted", out)
    say("apply: rode through a 5 s controller restart")
    wait_for("all nodes Ready again", c.nodes_ready, 120, 0.5)
    exp = c.exposed()
    homes = {k: v for k, v in exp.items() if k.startswith("home-")}
    expect(len(homes) == 20, f"expected 20 exposed volumes, got {sorted(homes)}")
    ws, path, size = homes["home-001"]
    data = os.urandom(MiB)
    with open(path, "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    with open(path, "rb") as f:
        expect(f.read(MiB) == data, "read back differs from what was written")
    say(f"apply: 20 volumes exposed; wrote and read 1 MiB through {path} on {ws}")


def case_noop(tf):
    log = WORK / "noop-plan.log"
    env = dict(tf.env, TF_LOG="debug", TF_LOG_PATH=str(log))
    p = run([os.environ.get("TERRAFORM", "terraform"), "plan", "-detailed-exitcode", "-input=false", "-no-color"],
            check=False, env=env, cwd=tf.dir)
    expect(p.returncode == 0, f"second plan is not empty (exit {p.returncode})", p.stdout + p.stderr)
    text = log.read_text()
    # Every provider process must end through GRPCController.Shutdown, not
    # go-plugin's kill after its grace period.
    expect("plugin exited" in text and "failed to exit gracefully" not in text,
           "provider processes did not shut down gracefully", text[-4000:])
    say("no-op plan: exit 0, provider processes shut down gracefully")


def case_reattach(tf):
    """Debug mode: one long-lived provider, Terraform attached through the
    TF_REATTACH_PROVIDERS value it prints."""
    p = subprocess.Popen([BIN / "terraform-provider-ferrofab", "--debug"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, start_new_session=True, env=tf.env)
    PROCS.append(p)
    value = None
    for _ in range(10):
        line = p.stdout.readline()
        m = re.search(r"TF_REATTACH_PROVIDERS='(.*)'", line)
        if m:
            value = m.group(1)
            break
    expect(value is not None, "debug mode printed no TF_REATTACH_PROVIDERS")
    env = dict(tf.env, TF_REATTACH_PROVIDERS=value)
    r = run([os.environ.get("TERRAFORM", "terraform"), "plan", "-detailed-exitcode", "-input=false", "-no-color"],
            check=False, env=env, cwd=tf.dir)
    expect(r.returncode == 0, f"plan through the reattached provider failed (exit {r.returncode})",
           r.stdout + r.stderr)
    expect(p.poll() is None, "the debug-mode provider exited during the plan")
    p.terminate()
    p.wait(timeout=10)
    say("debug mode: plan through TF_REATTACH_PROVIDERS is empty")


def case_grow(c, tf, base):
    tf.vars(**dict(base, volume_size="128MiB"))
    code, out = tf.plan_code()
    expect(code == 2 and "20 to change, 0 to destroy" in out, "grow is not an in-place update", out)
    # The layout's volumes (home-NNN); `ferrofab dev`'s demo volume is not
    # Terraform's.
    exposed = {v: a for v, a in c.exposed().items() if v.startswith("home-")}
    expect(exposed, "no volume is exposed before the grow")
    tf("apply", "-auto-approve", "-input=false")
    # The apply waits until each volume's observed_generation reaches the
    # grow (the storage node serves the new size), so the exposed files on
    # the workstations have it when apply returns: checked at once, no
    # polling.
    sizes = {v: os.stat(path).st_size for v, (_, path, _) in exposed.items()}
    small = {v: s for v, s in sizes.items() if s != 128 * MiB}
    expect(not small, f"right after apply returned, exposed sizes lag the grow: {small}")
    reported = {v: a[2] for v, a in c.exposed().items() if v in exposed}
    expect(all(s == 128 * MiB for s in reported.values()), f"agents report {reported}")
    say(f"grow: 20 updated in place; {len(sizes)} exposed files at 128 MiB as apply returned")
    base["volume_size"] = "128MiB"
    tf.vars(**base)


def case_shrink(tf, base):
    tf.vars(**dict(base, volume_size="64MiB"))
    code, out = tf.plan_code()
    expect(code == 1 and "volumes cannot shrink" in out and 'size' in out, "shrink not refused at plan", out)
    tf.vars(**base)
    say("shrink: refused at plan with the diagnostic on size")


def case_replace(c, tf, base):
    base["volume_pools"] = {"home-001": "storage-2"}
    tf.vars(**base)
    code, out = tf.plan_code()
    expect(code == 2 and "forces replacement" in out and "2 to add, 0 to change, 2 to destroy" in out,
           "pool change does not replace the volume (and its attachment)", out)
    tf("apply", "-auto-approve", "-input=false")
    vol = json.loads(c.cli("volume", "get", "home-001", "-o", "json").stdout)
    expect(vol["status"]["pool"] == "campus-storage-2", f"volume not on the new pool: {vol['status']}")
    wait_for("replaced volume exposed", lambda: "home-001" in c.exposed(), 60, 0.5)
    say("replace: pool change replaced home-001 (and its attachment)")


def case_drift(c, tf):
    c.cli("attachment", "delete", "home-002-ws-2")
    wait_for("attachment gone", lambda: c.cli("attachment", "get", "home-002-ws-2", check=False).returncode != 0, 60)
    c.cli("volume", "delete", "home-002")
    wait_for("volume gone", lambda: c.cli("volume", "get", "home-002", check=False).returncode != 0, 60)
    code, out = tf.plan_code()
    expect(code == 2 and re.search(r"ferrofab_volume.home\[\"home-002\"\] will be created", out) is not None,
           "out-of-band delete does not plan a create", out)
    tf("apply", "-auto-approve", "-input=false")
    code, out = tf.plan_code()
    expect(code == 0, "plan after restoring is not empty", out)
    say("drift: deleted volume planned as create and restored")


def case_import(tf):
    addrs = [("ferrofab_tenant.lab", "campus-lab"),
             ('ferrofab_pool.campus["storage-1"]', "campus-storage-1"),
             ('ferrofab_volume.home["home-003"]', "home-003"),
             ('ferrofab_attachment.home["home-003"]', "home-003-ws-3")]
    for addr, _ in addrs:
        tf("state", "rm", addr)
    for addr, ident in addrs:
        tf("import", "-input=false", addr, ident)
    code, out = tf.plan_code()
    expect(code == 0, "plan after import is not empty", out)
    say("import: tenant, pool, volume, attachment imported; plan empty")


def case_second_writer(c):
    """A second read-write attachment of home-004 (attached read-write to
    ws-4 by the campus state) on another node fails at apply, naming the
    holder; so does a reader beside that writer."""
    for mode in ("read-write", "read-only"):
        body = ('resource "ferrofab_attachment" "w" {\n  name = "home-004-second"\n  volume = "home-004"\n'
                f'  node = "ws-1"\n  access_mode = "{mode}"\n}}\n')
        tf = tf_dir(c, f"second-{mode}", body)
        p = tf("apply", "-auto-approve", "-input=false", check=False)
        out = p.stdout + p.stderr
        want = 'volume "home-004" is attached read-write to node "ws-4" (attachment "home-004-ws-4")'
        expect(p.returncode == 1 and want in " ".join(out.split()),
               f"a second attachment ({mode}) beside a writer was not refused with the holder named", out)
        expect(c.cli("attachment", "get", "home-004-second", check=False).returncode != 0,
               "the refused attachment exists")
    say("second writer: refused at apply, naming ws-4 and home-004-ws-4")


def case_move(c, tf, base):
    """Changing an attachment's node is an in-place move: data written on
    ws-5 is read back on ws-1, and the next plan is empty."""
    ws, path, _ = c.exposed()["home-005"]
    expect(ws == "ws-5", f"home-005 is exposed on {ws}, not ws-5")
    data = os.urandom(MiB)
    with open(path, "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    base["volume_workstations"] = {"home-005": "ws-1"}
    tf.vars(**base)
    code, out = tf.plan_code()
    expect(code == 2 and "1 to change, 0 to destroy" in out and "forces replacement" not in out,
           "a node change is not an in-place update", out)
    tf("apply", "-auto-approve", "-input=false")
    ws, path, _ = wait_for("home-005 exposed on ws-1",
                           lambda: c.exposed().get("home-005") if c.exposed().get("home-005", ("",))[0] == "ws-1"
                           else None, 60, 0.5)
    with open(path, "rb") as f:
        expect(f.read(MiB) == data, "data differs after the move")
    code, out = tf.plan_code()
    expect(code == 0, "plan after the move is not empty", out)
    say("move: node change applied in place; 1 MiB written on ws-5 read back on ws-1")


REFUSALS = {
    "bad-access-mode": ('resource "ferrofab_attachment" "a" {\n  volume = "home-004"\n  node = "ws-1"\n'
                        '  access_mode = "write-only"\n}\n', "invalid access mode"),
    "bad-size": ('resource "ferrofab_volume" "v" {\n  name = "bad-1"\n  tenant = "campus-lab"\n'
                 '  size = "12 parsecs"\n}\n', "invalid size"),
    "unknown-node": ('resource "ferrofab_attachment" "a" {\n  volume = "home-004"\n  node = "no-such-ws"\n}\n',
                     "unknown node"),
    "bad-nqn": ('data "ferrofab_nodes" "n" {\n  host_nqn = "nqn.2014-08.org example"\n}\n', "invalid host_nqn"),
    "over-quota": ('resource "ferrofab_volume" "v" {\n  name = "huge-1"\n  tenant = "campus-lab"\n'
                   '  size = "900TiB"\n}\n', "over quota or capacity"),
}


def case_refusals(c):
    head = 'terraform {\n  required_providers {\n    ferrofab = { source = "ferrofab/ferrofab" }\n  }\n}\nprovider "ferrofab" {}\n'
    for name, (body, want) in REFUSALS.items():
        src = WORK / f"src-{name}"
        src.mkdir(exist_ok=True)
        (src / "main.tf").write_text(head + body)
        tf = Tf(c, f"refuse-{name}", src)
        p = tf("plan", "-input=false", check=False)
        out = p.stdout + p.stderr
        expect(p.returncode == 1 and want in out and "on main.tf line" in out,
               f"{name}: no clear plan-time diagnostic ({want!r})", out)
        say(f"refusal {name}: {want!r} at its config line")


HEAD = 'terraform {\n  required_providers {\n    ferrofab = { source = "ferrofab/ferrofab" }\n  }\n}\nprovider "ferrofab" {}\n'


def tf_dir(c, name, body):
    src = WORK / f"src-{name}"
    src.mkdir(exist_ok=True)
    (src / "main.tf").write_text(HEAD + body)
    return Tf(c, name, src)


def case_whole_plan_quota(c):
    """20 volumes of 6 GiB: each fits the 100 GiB quota of campus-lab on
    its own, together they do not; the plan fails and names them."""
    body = ('resource "ferrofab_volume" "q" {\n  count = 20\n  name = format("q-%02d", count.index + 1)\n'
            '  tenant = "campus-lab"\n  size = "6GiB"\n}\n')
    tf = tf_dir(c, "whole-plan", body)
    p = tf("plan", "-input=false", check=False)
    out = p.stdout + p.stderr
    named = set(re.findall(r"q-\d\d", out))
    expect(p.returncode == 1 and "does not fit with the rest of the plan" in out and "tenant \"campus-lab\" quota" in out
           and len(named) >= 15, "whole-plan quota overrun not refused at plan with the resources named", out)
    expect("q-" not in c.cli("volume", "list", "-o", "json").stdout, "the refused plan created volumes")
    say(f"whole-plan quota: refused at plan, {len(named)} volumes named")


def case_already_exists(c):
    """A volume that exists but is not in this state (home-004 belongs to
    the campus state): the diagnostic gives the import command."""
    body = 'resource "ferrofab_volume" "o" {\n  name = "home-004"\n  tenant = "campus-lab"\n  size = "128MiB"\n}\n'
    tf = tf_dir(c, "already-exists", body)
    p = tf("apply", "-auto-approve", "-input=false", check=False)
    out = p.stdout + p.stderr
    expect(p.returncode == 1 and "terraform import ferrofab_volume.<name> home-004" in out,
           "'already exists' gives no import command", out)
    say("already exists: the diagnostic gives `terraform import ferrofab_volume.<name> home-004`")


def case_exact_fit(c, rounds=10):
    """10 parallel creates into a quota that holds exactly 10, 10 times."""
    body = ('resource "ferrofab_tenant" "fit" {\n  name = "fit-lab"\n  capacity_quota = "640MiB"\n  volume_quota = 10\n}\n'
            'resource "ferrofab_volume" "f" {\n  count = 10\n  name = format("fit-%02d", count.index + 1)\n'
            '  tenant = ferrofab_tenant.fit.name\n  pool = "campus-storage-1"\n  size = "64MiB"\n}\n')
    tf = tf_dir(c, "exact-fit", body)
    for i in range(rounds):
        p = tf("apply", "-auto-approve", "-input=false", "-parallelism=10", check=False)
        expect(p.returncode == 0, f"exact-fit round {i + 1}: apply failed", p.stdout + p.stderr)
        tf("destroy", "-auto-approve", "-input=false", "-parallelism=10")
    say(f"exact fit: 10 parallel creates into a quota of exactly 10 succeeded {rounds} times")


def case_destroy(c, tf):
    p = tf("destroy", "-auto-approve", "-input=false")
    lines = [l for l in p.stdout.splitlines() if "Destruction complete" in l]
    kinds = [("attachment" if "ferrofab_attachment" in l else "volume" if "ferrofab_volume" in l else "other")
             for l in lines]
    last_att = max(i for i, k in enumerate(kinds) if k == "attachment")
    first_vol = min(i for i, k in enumerate(kinds) if k == "volume")
    expect(last_att < first_vol, "a volume was destroyed before all attachments", p.stdout)
    left = [v for v in c.exports() if v.startswith("home-")]
    expect(not left, f"exports left behind: {left}")
    vols = c.cli("volume", "list", "-o", "json").stdout
    expect("home-" not in vols and "campus-lab" not in c.cli("tenant", "list", "-o", "json").stdout,
           "objects left behind", vols)
    expect(not [k for k in c.exposed() if k.startswith("home-")], "volumes still exposed")
    say("destroy: attachments first, nothing left, no exports")


def suite():
    c = Cluster(["ws-1", "ws-2", "ws-3", "ws-4", "ws-5"], ["storage-1", "storage-2"])
    c.start()
    tf = Tf(c, "campus")
    base = dict(pools=c.pools, workstations=c.workstations, volume_count=20, volume_size="64MiB",
                pool_capacity="64GiB", tenant_quota="100GiB")
    tf.vars(**base)
    steps = [("apply", lambda: case_apply(c, tf)), ("noop", lambda: case_noop(tf)),
             ("grow", lambda: case_grow(c, tf, base)), ("shrink", lambda: case_shrink(tf, base)),
             ("replace", lambda: case_replace(c, tf, base)), ("drift", lambda: case_drift(c, tf)),
             ("import", lambda: case_import(tf)),
             ("second-writer", lambda: case_second_writer(c)), ("move", lambda: case_move(c, tf, base)), ("reattach", lambda: case_reattach(tf)), ("refusals", lambda: case_refusals(c)),
             ("whole-plan-quota", lambda: case_whole_plan_quota(c)), ("already-exists", lambda: case_already_exists(c)),
             ("exact-fit", lambda: case_exact_fit(c)),
             ("destroy", lambda: case_destroy(c, tf))]
    for name, step in steps:
        t = time.time()
        step()
        say(f"case {name} passed in {time.time() - t:.1f}s")


def baseline_apply(c, ws, n_vol):
    """The same layout through `ferrofab apply --wait` (one declarative
    Apply RPC, then polling until Ready): what Terraform is compared with."""
    pools = sorted(c.pools)
    out = [f'[[tenant]]\nname = "base-lab"\ncapacity_quota = "10TiB"\nallowed_nodes = {json.dumps(ws)}\n']
    for n in pools:
        out.append(f'[[pool]]\nname = "base-{n}"\nnode = "{n}"\nbacking = "directory"\n'
                   f'path = "{c.pools[n]}"\ncapacity = "1TiB"\novercommit_ratio = 4.0\n')
    for i in range(n_vol):
        v = f"base-{i + 1:03d}"
        out.append(f'[[volume]]\nname = "{v}"\ntenant = "base-lab"\nsize = "64MiB"\npool = "base-{pools[i % len(pools)]}"\n')
    for i in range(n_vol):
        v = f"base-{i + 1:03d}"
        out.append(f'[[attachment]]\nname = "{v}-a"\nvolume = "{v}"\nnode = "{ws[i % len(ws)]}"\nmode = "read-write"\n')
    layout = WORK / "baseline-layout.toml"
    layout.write_text("\n".join(out))
    t = time.time()
    c.cli("apply", "-f", layout, "--yes", "--wait", "--timeout", "10m")
    return time.time() - t


def bench():
    n_ws = int(os.environ.get("FF_TF_BENCH_WS", "10"))
    n_vol = int(os.environ.get("FF_TF_BENCH_VOLUMES", "200"))
    ws = [f"ws-{i}" for i in range(1, n_ws + 1)]
    c = Cluster(ws, ["storage-1", "storage-2"])
    c.start()
    tf = Tf(c, "bench")
    tf.vars(pools=c.pools, workstations=ws, volume_count=n_vol, volume_size="64MiB",
            pool_capacity="1TiB", tenant_quota="10TiB")
    waits = WORK / "waits.log"
    if waits.exists():
        waits.unlink()
    tf.env["FERROFAB_TF_WAIT_LOG"] = str(waits)
    par = os.environ.get("FF_TF_BENCH_PARALLELISM", "20")
    # The plan on its own first (the apply below plans again, as always).
    tp = time.time()
    tf("plan", "-input=false", f"-parallelism={par}")
    plan = time.time() - tp
    t0 = time.time()
    tf("apply", "-auto-approve", "-input=false", f"-parallelism={par}")
    wall = time.time() - t0
    # Share of the wall time during which at least one resource was waiting
    # for convergence (union of the wait intervals).
    spans = []
    for line in waits.read_text().split("\n"):
        if line.strip():
            end_ms, dur = map(int, line.split())
            if not t0 * 1000 <= end_ms <= (t0 + wall) * 1000 + 1000:
                fail(f"malformed wait record {line!r}")
            spans.append((end_ms - dur, end_ms))
    spans.sort()
    covered, cur = 0, None
    for s, e in spans:
        if cur is None or s > cur[1]:
            if cur:
                covered += cur[1] - cur[0]
            cur = [s, e]
        else:
            cur[1] = max(cur[1], e)
    if cur:
        covered += cur[1] - cur[0]
    summed = sum(e - s for s, e in spans) / 1000
    t1 = time.time()
    tf("destroy", "-auto-approve", "-input=false", f"-parallelism={par}")
    destroy = time.time() - t1
    base = baseline_apply(c, ws, n_vol)
    res = {"volumes": n_vol, "attachments": n_vol, "workstations": n_ws, "apply_wall_s": round(wall, 1), "plan_only_wall_s": round(plan, 1),
           "waiting_share": round(covered / 1000 / wall, 3), "wait_sum_s": round(summed, 1),
           "destroy_wall_s": round(destroy, 1), "baseline_cli_apply_wait_s": round(base, 1),
           "ratio_to_baseline": round(wall / base, 2), "parallelism": int(par), "goal_s": 60}
    print(json.dumps(res))
    (WORK / "bench.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    try:
        {"suite": suite, "bench": bench}[sys.argv[1]]()
    finally:
        stop_all()
