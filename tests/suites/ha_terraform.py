"""Test 1b of the `ha` suite (see ha.sh): a Terraform apply rides through
kill -9 of the controller replica its provider uses.

The real Terraform 1.0.3 (FF_HA_TERRAFORM, installed by ha.sh) runs in the
admin's namespace with terraform-provider-ferrofab from the suite's binary
directory (dev_overrides, no `terraform init`). The provider's endpoints
list the leader first, so the replica it uses is the leader; it is killed
once a few volumes are complete and most are still being created.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

from netns_faults import Failure, wait_for

N_VOLUMES = 30
PARALLELISM = 10
KILL_AFTER = 5          # volumes complete before the kill
# Bounds each create's retries: a provider that does not fail over keeps
# calling the dead replica and fails the apply within this.
CREATE_TIMEOUT = "90s"
POOL = "p-big"          # 100 GiB: room for everything here
PROBE = "tf-cli-probe"  # the volume a `ferrofab wait` started before the kill waits for


def say(msg: str) -> None:
    print(f"\033[1m==> ha: {msg}\033[0m", file=sys.stderr, flush=True)


def write_config(c, d, endpoints: list[str]) -> dict:
    """main.tf and the CLI configuration; returns Terraform's environment."""
    d.mkdir(parents=True, exist_ok=True)
    eps = ", ".join(f'"{e}"' for e in endpoints)
    (d / "main.tf").write_text(f'''
terraform {{
  required_providers {{
    ferrofab = {{ source = "ferrofab/ferrofab" }}
  }}
}}

provider "ferrofab" {{
  endpoints = [{eps}]
  ca_file   = "{c.pki}/ca.crt"
  cert_file = "{c.pki}/admin.crt"
  key_file  = "{c.pki}/admin.key"
}}

resource "ferrofab_volume" "v" {{
  for_each = toset([for i in range({N_VOLUMES}) : format("tf-%02d", i)])
  name     = each.key
  tenant   = "lab"
  pool     = "{POOL}"
  size     = "8MiB"
  timeouts {{
    create = "{CREATE_TIMEOUT}"
  }}
}}
''')
    rc = d / "dev.tfrc"
    rc.write_text('provider_installation {\n  dev_overrides {\n'
                  f'    "ferrofab/ferrofab" = "{c.bin}"\n  }}\n  direct {{}}\n}}\n')
    return dict(os.environ, TF_CLI_CONFIG_FILE=str(rc), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1",
                TF_LOG_PROVIDER="DEBUG", TF_LOG_PATH=str(d / "terraform.log"))


def terraform(c, d, env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    argv = c.ns("adm") + [os.environ["FF_HA_TERRAFORM"], *args, "-no-color"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=d, timeout=timeout)


def volume_list(c) -> list[dict]:
    doc = c.cli_json("volume", "list")
    return doc["items"] if isinstance(doc, dict) else doc


def apply_with_kill(c, d, env: dict, victim: str) -> tuple[int, str, float, list[float]]:
    """Runs the apply, kills `victim` after KILL_AFTER completions; returns
    the exit status, the output, the kill time and the completion times."""
    argv = c.ns("adm") + [os.environ["FF_HA_TERRAFORM"], "apply", "-auto-approve", "-no-color", "-input=false",
                          f"-parallelism={PARALLELISM}"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=d)
    lines: list[str] = []
    done: list[float] = []

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            lines.append(line)
            if "Creation complete" in line:
                done.append(time.monotonic())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_for(f"{KILL_AFTER} volumes created by terraform", 180,
                 lambda: len(done) >= KILL_AFTER or p.poll() is not None, period=0.05)
        if p.poll() is not None:
            raise Failure(f"terraform apply ended before the kill:\n{''.join(lines)[-3000:]}")
        killed_at = time.monotonic()
        c.stop(victim, signal.SIGKILL)
        rc = p.wait(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        reader.join(timeout=10)
    return rc, "".join(lines), killed_at, done


def check_state(c, d, env: dict) -> dict[str, str]:
    """State and controller agree: every configured volume once, same UUIDs."""
    show = terraform(c, d, env, "show", "-json")
    if show.returncode != 0:
        raise Failure(f"terraform show failed: {show.stderr.strip()}")
    res = json.loads(show.stdout).get("values", {}).get("root_module", {}).get("resources", [])
    state = {r["values"]["name"]: r["values"]["uuid"] for r in res if r["type"] == "ferrofab_volume"}
    want = {f"tf-{i:02d}" for i in range(N_VOLUMES)}
    if set(state) != want:
        raise Failure(f"terraform state lists {sorted(state)}, expected tf-00..tf-{N_VOLUMES - 1:02d}")
    ours = [v for v in volume_list(c) if v["metadata"]["name"].startswith("tf-") and v["metadata"]["name"] != PROBE]
    names = [v["metadata"]["name"] for v in ours]
    if len(names) != len(set(names)) or set(names) != want:
        raise Failure(f"controller lists {len(names)} tf- volumes ({len(set(names))} names), expected {N_VOLUMES}")
    uids = {v["metadata"]["uid"] for v in ours}
    if len(uids) != N_VOLUMES:
        raise Failure(f"{N_VOLUMES} volumes but {len(uids)} uids")
    wrong = [v["metadata"]["name"] for v in ours if v.get("status", {}).get("uuid") != state[v["metadata"]["name"]]]
    if wrong:
        raise Failure(f"state and controller disagree on the UUID of {wrong[:5]}")
    return state


def test_terraform_failover(c, ctl: list[str], addr: dict, port: int) -> None:
    if not os.environ.get("FF_HA_TERRAFORM"):
        raise Failure("FF_HA_TERRAFORM is not set (ha.sh installs Terraform 1.0.3 and sets it)")
    leader = wait_for("a leader", 30, c.leader)
    order = [leader] + [x for x in ctl if x != leader]
    d = c.work / "tf"
    env = write_config(c, d, [f"https://{addr[x]}:{port}" for x in order])
    say(f"test 1b: terraform apply of {N_VOLUMES} volumes (parallelism {PARALLELISM}), provider endpoints "
        f"{','.join(order)}; kill -9 of {leader} (leader, in use) after {KILL_AFTER} are complete")
    # One CLI command that spans the kill: it polls through the replica
    # listed first (the victim) until PROBE is Ready.
    waiter = subprocess.Popen(
        c.ns("adm") + [str(c.bin / "ferrofab"), "--config", str(c.client_cfg(ctl.index(leader))),
                       "wait", f"volume/{PROBE}", "--timeout", "5m"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        rc, out, killed_at, done = apply_with_kill(c, d, env, leader)
        total = time.monotonic() - t0
        (d / "apply.out").write_text(out)
        if rc != 0:
            raise Failure(f"terraform apply failed (exit {rc}) after the kill of {leader}:\n{out[-3000:]}")
        after = [t - killed_at for t in done if t > killed_at]
        if not after:
            raise Failure(f"no volume completed after the kill:\n{out[-3000:]}")
        gaps = [after[0]] + [b - a for a, b in zip(after, after[1:])]
        state = check_state(c, d, env)
        plan = terraform(c, d, env, "plan", "-detailed-exitcode", "-input=false")
        if plan.returncode != 0:
            raise Failure(f"second plan not empty (exit {plan.returncode}):\n{plan.stdout[-2000:]}{plan.stderr[-1000:]}")
        # The CLI command started before the kill is still polling.
        if waiter.poll() is not None:
            raise Failure(f"ferrofab wait ended during the failover: {waiter.communicate()[1].strip()}")
        c.cli("volume", "create", PROBE, "--tenant", "lab", "--size", "8MiB", "--pool", POOL,
              first=(ctl.index(leader) + 1) % len(ctl))
        try:
            _, err = waiter.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            raise Failure(f"ferrofab wait volume/{PROBE} did not return after the volume was created")
        if waiter.returncode != 0:
            raise Failure(f"ferrofab wait (endpoints {leader} first) failed across the kill: {err.strip()}")
        log = (d / "terraform.log").read_text(errors="replace") if (d / "terraform.log").exists() else ""
        failovers = log.count("failing over")
        if failovers == 0:
            raise Failure(f"the provider's log ({d / 'terraform.log'}) shows no failover: was {leader} not in use?")
        c.start_controller(leader)
        destroy = terraform(c, d, env, "destroy", "-auto-approve", "-input=false", timeout=600)
        if destroy.returncode != 0:
            raise Failure(f"terraform destroy failed: {destroy.stderr.strip()[-2000:]}")
        c.cli("volume", "delete", PROBE)
        left = [v["metadata"]["name"] for v in volume_list(c) if v["metadata"]["name"].startswith("tf-")
                and v["metadata"]["name"] != PROBE]
        if left:
            raise Failure(f"volumes left after terraform destroy: {left}")
        say(f"test 1b passed: apply of {len(state)} volumes succeeded in {total:.1f}s across the kill of "
            f"{leader}; the apply paused {gaps[0]:.2f}s (kill -> next volume complete), longest gap after the "
            f"kill {max(gaps):.2f}s; {len(done) - len(after)} were complete before it; state matches the "
            f"controller (UUIDs), second plan empty, no duplicates; provider failovers logged: {failovers}; "
            f"ferrofab wait spanning the kill returned 0")
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
