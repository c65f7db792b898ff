#!/usr/bin/env python3
"""The `web` suite: the HTTP/JSON API and the dashboard against `ferrofab dev`.

1. OpenAPI: /v1/openapi.json passes openapi-spec-validator; a client
   generated from it by openapi-python-client lists, creates, gets and
   deletes a volume.
2. Dashboard in headless Chromium: sign in, the demo layout, create and
   attach a volume and watch it become ready without a reload, move it,
   resize it, an over-quota create refused with the controller's reason, a
   tenant token that sees only its tenant, phone width, keyboard focus, and
   no script errors on the console.

Environment: FF_WEB_BIN (directory of the ferrofab binary), FF_WEB_WORK
(scratch and screenshots), FF_REPO.
"""

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BIN = os.environ["FF_WEB_BIN"]
WORK = os.environ["FF_WEB_WORK"]
DEV_DIR = os.path.join(WORK, "dev")
SHOTS = WORK
READY_TIMEOUT = 300
LIVE_TIMEOUT = 90

passed = 0
failed = 0


def say(msg):
    print(f"web: {msg}", file=sys.stderr, flush=True)


def check(name, fn):
    """Runs one check; a failure is counted and reported, the rest go on."""
    global passed, failed
    t0 = time.monotonic()
    try:
        fn()
        passed += 1
        say(f"ok   {name} ({time.monotonic() - t0:.1f}s)")
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        failed += 1
        say(f"FAIL {name}: {type(e).__name__}: {e}")


# ------------------------------------------------------------ ferrofab dev
class Dev:
    def __init__(self):
        os.makedirs(DEV_DIR, exist_ok=True)
        self.out_path = os.path.join(WORK, "dev.out")
        self.log_path = os.path.join(WORK, "dev.log")
        # A first start enrolls the nodes; the suite then stops and resumes
        # the directory, as a user's second `ferrofab dev` does, so the
        # dashboard is checked against a resumed cluster (its agents
        # adopting what the first run left serving).
        self.start()
        deadline = time.monotonic() + READY_TIMEOUT
        while "controller and agents up" not in open(self.log_path).read():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"ferrofab dev did not start; see {self.log_path}")
            time.sleep(0.5)
        time.sleep(8)
        self.stop()
        self.start()
        deadline = time.monotonic() + READY_TIMEOUT
        text = ""
        while time.monotonic() < deadline:
            text = open(self.out_path).read()
            if "ferrofab dev: ready" in text:
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"ferrofab dev exited {self.proc.returncode}; see {self.log_path}")
            time.sleep(0.5)
        else:
            raise SystemExit(f"ferrofab dev not ready after {READY_TIMEOUT}s; see {WORK}/dev.log")
        m = re.search(r"dashboard: (https://localhost:(\d+))/ui", text)
        t = re.search(r"admin API token \(12h\): (\S+)", text)
        if not m or not t:
            raise SystemExit(f"ferrofab dev printed no dashboard URL or token:\n{text}")
        self.base = m.group(1)
        self.admin_token = t.group(1)
        self.ca = os.path.join(DEV_DIR, "pki", "ca.crt")
        self.ssl = ssl.create_default_context(cafile=self.ca)

    def start(self):
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "ferrofab"), "dev", "--dir", DEV_DIR],
            stdout=self.out,
            stderr=open(self.log_path, "a"),
        )

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def cli(self, *args):
        return subprocess.run(
            [os.path.join(BIN, "ferrofab"), "--config", os.path.join(DEV_DIR, "client.toml"), *args],
            check=True, capture_output=True, text=True,
        ).stdout.strip()

    def api(self, method, path, body=None, token=None):
        req = urllib.request.Request(self.base + path, method=method)
        req.add_header("Authorization", "Bearer " + (token or self.admin_token))
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, data=data, context=self.ssl, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def expect(status_body, status):
    got, body = status_body
    assert got == status, f"HTTP {got} (wanted {status}): {body}"
    return body


# ------------------------------------------------------------ OpenAPI
def openapi_checks(dev):
    spec_path = os.path.join(WORK, "openapi.json")
    spec = expect(dev.api("GET", "/v1/openapi.json"), 200)
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=1)

    def validate():
        from openapi_spec_validator import validate as v
        v(spec)

    check("openapi.json passes openapi-spec-validator", validate)

    def generated_client():
        out = os.path.join(WORK, "client")
        cfg = os.path.join(WORK, "client-config.json")
        with open(cfg, "w") as f:
            json.dump({"project_name_override": "ferrofab-client", "package_name_override": "ferrofab_client"}, f)
        gen = os.path.join(os.path.dirname(sys.executable), "openapi-python-client")
        r = subprocess.run(
            [gen, "generate", "--path", spec_path, "--output-path", out, "--config", cfg, "--overwrite"],
            capture_output=True, text=True,
        )
        assert r.returncode == 0, f"openapi-python-client failed:\n{r.stdout}\n{r.stderr}"
        sys.path.insert(0, out)
        from ferrofab_client import AuthenticatedClient
        from ferrofab_client.api.volume import create_volume, delete_volume, get_volume, list_volumes
        from ferrofab_client.models import Volume

        c = AuthenticatedClient(base_url=dev.base, token=dev.admin_token, verify_ssl=dev.ssl)
        r = list_volumes.sync_detailed(client=c)
        assert r.status_code == 200, r
        names = [v.metadata.name for v in r.parsed.items]
        assert "demo-1" in names, names
        body = Volume.from_dict({"metadata": {"name": "gen-1"}, "spec": {"tenant": "demo", "size": "64MiB", "pool": "pool-1"}})
        r = create_volume.sync_detailed(client=c, body=body)
        assert r.status_code == 201, (r.status_code, r.content)
        r = get_volume.sync_detailed(client=c, name="gen-1")
        assert r.status_code == 200 and r.parsed.spec.size == "64MiB", r
        r = delete_volume.sync_detailed(client=c, name="gen-1")
        assert r.status_code == 200, r
        r = get_volume.sync_detailed(client=c, name="gen-1")
        assert r.status_code == 404, r

    check("a client generated by openapi-python-client: list, create, get, delete", generated_client)


# ------------------------------------------------------------ browser
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--ignore-certificate-errors", "--window-size=1280,900",
              "--user-data-dir=" + tempfile.mkdtemp(prefix="ff-web-chromium-")]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def ui_checks(dev):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait

    # What the tests need besides the demo layout: a second workstation
    # (no agent) to move to, a quota to exceed, another tenant to hide.
    expect(dev.api("POST", "/v1/nodes", {"metadata": {"name": "ws-2"},
           "spec": {"roles": ["NODE_ROLE_WORKSTATION"], "host_nqn": "nqn.2014-08.org.nvmexpress:uuid:ws-2"}}), 201)
    expect(dev.api("PATCH", "/v1/tenants/demo", {"spec": {"allowed_nodes": ["ws-1", "ws-2"], "capacity_quota": "6GiB"}}), 200)
    expect(dev.api("POST", "/v1/tenants", {"metadata": {"name": "other"}, "spec": {}}), 201)
    expect(dev.api("POST", "/v1/volumes", {"metadata": {"name": "other-1"},
           "spec": {"tenant": "other", "size": "1GiB", "pool": "pool-1"}}), 201)
    tenant_token = dev.cli("token", "create", "--identity", "tenant:demo", "--ttl", "1h", "--description", "web suite")

    from selenium.common.exceptions import StaleElementReferenceException

    d = browser()
    # The page re-renders on every watch event, so an element found a
    # moment ago may be gone: waits ignore that, clicks retry.
    wait = WebDriverWait(d, LIVE_TIMEOUT, ignored_exceptions=[StaleElementReferenceException])
    allowed_network_errors = []

    def shot(name):
        d.save_screenshot(os.path.join(SHOTS, name + ".png"))

    def cell(vol, i):
        # One script call: the row cannot be replaced between two lookups.
        return d.execute_script(
            "const r = document.querySelector(`tr[data-volume=\"${arguments[0]}\"]`);"
            "return r ? r.cells[arguments[1]].textContent : '';", vol, i)

    def click(css):
        for _ in range(10):
            try:
                d.find_element(By.CSS_SELECTOR, css).click()
                return
            except StaleElementReferenceException:
                time.sleep(0.1)
        raise AssertionError(f"{css} kept being re-rendered")

    def dialog_ok():
        """Confirms the dialog; it must close (a refusal stays in it)."""
        d.find_element(By.ID, "dialog-ok").click()
        until("the dialog to close", lambda: not d.find_element(By.ID, "dialog").is_displayed()
              or d.find_element(By.ID, "dialog-error").text)
        err = d.find_element(By.ID, "dialog-error").text
        assert not d.find_element(By.ID, "dialog").is_displayed(), f"refused: {err}"

    def act(vol, action):
        click(f'button[data-act="{action}"][data-name="{vol}"]')
        wait.until(EC.visibility_of_element_located((By.ID, "dialog")))

    def until(what, fn):
        try:
            wait.until(lambda _: fn())
        except Exception as e:
            raise AssertionError(f"timed out waiting for {what}") from e

    def nav(page):
        click(f'#nav button[data-page="{page}"]')

    def sign_in(token):
        d.get(dev.base + "/ui")
        f = wait.until(EC.visibility_of_element_located((By.ID, "token")))
        f.send_keys(token)
        f.send_keys(Keys.ENTER)
        wait.until(EC.visibility_of_element_located((By.ID, "nav")))

    try:
        def signs_in_and_shows_the_demo_layout():
            sign_in(dev.admin_token)
            until("the overview", lambda: "Volumes ready" in d.find_element(By.ID, "page-overview").text)
            assert "admin" in d.find_element(By.ID, "who").text
            shot("overview")
            nav("volumes")
            until("demo-1 and demo-2", lambda: len(d.find_elements(By.CSS_SELECTOR, 'tr[data-volume^="demo-"]')) == 2)
            until("demo-1 attached", lambda: "ws-1 (attached)" in cell("demo-1", 5))

        check("sign in with an API token; the demo layout", signs_in_and_shows_the_demo_layout)

        def fill_create(vol, size):
            d.find_element(By.ID, "vol-create").click()
            wait.until(EC.visibility_of_element_located((By.ID, "dialog")))
            d.find_element(By.ID, "name").send_keys(vol)
            Select(d.find_element(By.ID, "tenant")).select_by_value("demo")
            f = d.find_element(By.ID, "size")
            f.clear()
            f.send_keys(size)
            Select(d.find_element(By.ID, "pool")).select_by_value("pool-1")

        def create_attach_ready_live():
            fill_create("web-1", "1GiB")
            dialog_ok()
            until("web-1 listed", lambda: d.find_elements(By.CSS_SELECTOR, 'tr[data-volume="web-1"]'))
            until("web-1 READY", lambda: cell("web-1", 4) == "READY")
            act("web-1", "attach")
            Select(d.find_element(By.ID, "node")).select_by_value("ws-1")
            dialog_ok()
            until("web-1 attached on ws-1 (live, no reload)", lambda: "ws-1 (attached)" in cell("web-1", 5))
            shot("volumes")

        check("create and attach a volume; it becomes ready live", create_attach_ready_live)

        def resize():
            act("web-1", "resize")
            f = d.find_element(By.ID, "size")
            f.clear()
            f.send_keys("2GiB")
            dialog_ok()
            until("web-1 at 2GiB", lambda: cell("web-1", 2) == "2GiB")

        check("resize a volume", resize)

        def move():
            act("web-1", "move")
            Select(d.find_element(By.ID, "to")).select_by_value("ws-2")
            dialog_ok()
            until("web-1's attachment on ws-2", lambda: "ws-2" in cell("web-1", 5))

        check("move a volume to another workstation", move)

        def over_quota_shows_the_reason():
            fill_create("too-big", "4GiB")
            allowed_network_errors.append("/v1/volumes")
            d.find_element(By.ID, "dialog-ok").click()
            until("the refusal in the dialog", lambda: d.find_element(By.ID, "dialog-error").text)
            msg = d.find_element(By.ID, "dialog-error").text
            assert "quota" in msg and "demo" in msg, msg
            shot("refused")
            d.find_element(By.ID, "dialog-cancel").click()
            assert not d.find_elements(By.CSS_SELECTOR, 'tr[data-volume="too-big"]')

        check("an over-quota create is refused with the controller's reason", over_quota_shows_the_reason)

        def pages():
            nav("pools")
            until("pool-1 with a usage bar", lambda: d.find_elements(By.CSS_SELECTOR, "#page-pools .bar"))
            shot("pools")
            nav("tenants")
            until("demo's quota bar", lambda: d.find_elements(By.CSS_SELECTOR, "#page-tenants .bar"))
            shot("tenants")
            nav("nodes")
            until("storage-1 Ready", lambda: "storage-1" in d.find_element(By.ID, "page-nodes").text)

        check("nodes, pools with usage bars, tenants with quota usage", pages)

        def keyboard():
            nav("volumes")
            d.find_element(By.ID, "vol-filter").click()
            d.switch_to.active_element.send_keys("web")
            until("the filter", lambda: len(d.find_elements(By.CSS_SELECTOR, "tr[data-volume]")) == 1)
            seen = set()
            for _ in range(14):
                d.switch_to.active_element.send_keys(Keys.TAB)
                el = d.switch_to.active_element
                seen.add((el.tag_name, el.get_attribute("data-act") or el.get_attribute("data-sort") or ""))
            assert ("button", "resize") in seen, seen
            f = d.find_element(By.ID, "vol-filter")
            f.send_keys(Keys.CONTROL, "a")
            f.send_keys(Keys.BACKSPACE)
            until("the filter cleared", lambda: len(d.find_elements(By.CSS_SELECTOR, "tr[data-volume]")) > 1)

        check("keyboard: filter and reach row actions with Tab", keyboard)

        def phone_width():
            d.set_window_size(390, 844)
            time.sleep(0.5)
            overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"page is {overflow}px wider than a phone"
            shot("volumes-phone")
            d.set_window_size(1280, 900)

        check("usable at phone width (no page-wide horizontal scroll)", phone_width)

        def tenant_sees_only_its_own():
            d.find_element(By.ID, "signout").click()
            sign_in(tenant_token)
            assert "tenant:demo" in d.find_element(By.ID, "who").text
            assert not d.find_element(By.CSS_SELECTOR, '#nav button[data-page="pools"]').is_displayed()
            nav("volumes")
            until("demo's volumes", lambda: d.find_elements(By.CSS_SELECTOR, 'tr[data-volume="web-1"]'))
            names = {r.get_attribute("data-volume") for r in d.find_elements(By.CSS_SELECTOR, "tr[data-volume]")}
            assert "other-1" not in names and {"demo-1", "demo-2", "web-1"} <= names, names
            shot("tenant")

        check("a tenant token sees only its tenant", tenant_sees_only_its_own)

        def no_console_errors():
            logs = d.get_log("browser")
            bad = []
            for e in logs:
                if e["level"] != "SEVERE":
                    continue
                # A refused request the test provoked is logged by the
                # browser as a failed load; any script error is a failure.
                if e.get("source") == "network" and any(p in e["message"] for p in allowed_network_errors):
                    continue
                bad.append(e["message"])
            assert not bad, bad

        check("no console errors", no_console_errors)
    finally:
        d.quit()


def main():
    say(f"starting ferrofab dev in {DEV_DIR}")
    dev = Dev()
    try:
        say(f"dashboard {dev.base}/ui")
        check("ferrofab dev's admin token signs in to the API",
              lambda: expect(dev.api("GET", "/v1/whoami"), 200)["identity"] == "admin" or (_ for _ in ()).throw(AssertionError("not admin")))
        openapi_checks(dev)
        ui_checks(dev)
    finally:
        dev.stop()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
