#!/usr/bin/env python3
"""Host side of the target interop test.

Starts `ferrofab-nvmeof serve` on loopback, boots Linux 6.1 under qemu with
tests/kernel/target/guest.sh, and answers the guest's control requests
(grow the namespace, restart the target, add a namespace) by editing the
config file or restarting the process, exactly as an operator would. After
the guest passes, the backing files are checked byte for byte.

Usage: run.py FERROFAB_NVMEOF_BINARY
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
WORK = os.path.join(REPO, "tests", ".work", "kernel-target")
NQN = "nqn.2026-11.io.ferrofab:kernel-interop"
HOSTID = "5f7b3c1e-2d4a-4b8e-9c6f-0a1b2c3d4e5f"
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:" + HOSTID
BAD_HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:00000000-dead-4bad-8bad-000000000000"
MIB = 1 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pattern(path, size, seed):
    data = bytearray(size)
    x = seed
    for i in range(0, size, 8):
        x = (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        data[i:i + 8] = x.to_bytes(8, "little")
    with open(path, "wb") as f:
        f.write(data)
    return bytes(data)


class Target:
    def __init__(self, binary, io_port, disc_port):
        self.binary = binary
        self.io_port = io_port
        self.disc_port = disc_port
        self.cfg = os.path.join(WORK, "target.toml")
        self.size_mib = 64
        self.second_ns = False
        self.proc = None
        self.log = open(os.path.join(WORK, "target.log"), "ab")

    def write_config(self):
        ns2 = ""
        if self.second_ns:
            ns2 = f"""
[[subsystem.namespace]]
nsid = 2
path = "{WORK}/ns2.img"
size = "64MiB"
"""
        text = f"""# written by tests/kernel/target/run.py
[[listener]]
address = "127.0.0.1:{self.io_port}"
advertise = "10.0.2.2"

[[listener]]
address = "127.0.0.1:{self.disc_port}"
kind = "discovery"

[[subsystem]]
nqn = "{NQN}"
allowed_hosts = ["{HOSTNQN}"]

[[subsystem.namespace]]
nsid = 1
path = "{WORK}/ns1.img"
size = "{self.size_mib}MiB"
{ns2}"""
        tmp = self.cfg + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.cfg)

    def start(self):
        self.write_config()
        self.proc = subprocess.Popen([self.binary, "serve", "--config", self.cfg],
                                     stdout=subprocess.PIPE, stderr=self.log)
        line = self.proc.stdout.readline().decode()
        if "ready" not in line:
            raise SystemExit(f"target did not start: {line!r}; see {self.log.name}")
        print("host: " + line.strip(), flush=True)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def grow(self):
        self.size_mib = 96
        self.write_config()
        # The serve process re-reads the file on change; SIGHUP makes it sure.
        self.proc.send_signal(signal.SIGHUP)

    def add_namespace(self):
        self.second_ns = True
        self.write_config()
        self.proc.send_signal(signal.SIGHUP)

    def restart(self):
        self.kill()
        time.sleep(0.5)
        self.start()


def control_server(port, target, stop):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4)
    srv.settimeout(0.5)
    actions = {"grow": target.grow, "restart": target.restart, "add-namespace": target.add_namespace}
    while not stop.is_set():
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        with conn:
            cmd = conn.recv(100).decode().strip()
            print(f"host: guest asks '{cmd}'", flush=True)
            try:
                actions[cmd]()
                conn.sendall(b"ok\n")
            except Exception as e:  # report to the guest, which fails the test
                conn.sendall(f"error: {e}\n".encode())
    srv.close()


def main():
    binary = os.path.abspath(sys.argv[1])
    os.makedirs(WORK, exist_ok=True)
    for f in ("ns1.img", "ns2.img"):
        if os.path.exists(os.path.join(WORK, f)):
            os.remove(os.path.join(WORK, f))
    pat1 = pattern(os.path.join(WORK, "pat1"), 16 * MIB, 1)
    pat2 = pattern(os.path.join(WORK, "pat2"), 64 * 1024, 2)
    io_port, disc_port, ctl_port = free_port(), free_port(), free_port()
    target = Target(binary, io_port, disc_port)
    target.start()
    stop = threading.Event()
    ctl = threading.Thread(target=control_server, args=(ctl_port, target, stop), daemon=True)
    ctl.start()
    env = {"IO_PORT": io_port, "DISC_PORT": disc_port, "CTL_PORT": ctl_port, "NQN": NQN,
           "HOSTNQN": HOSTNQN, "HOSTID": HOSTID, "BAD_HOSTNQN": BAD_HOSTNQN}
    cmd = [os.path.join(REPO, "tests", "kernel", "run-guest.sh"),
           "--script", os.path.join(HERE, "guest.sh"),
           "--file", os.path.join(WORK, "pat1") + ":/pat1",
           "--file", os.path.join(WORK, "pat2") + ":/pat2",
           "--mem", "1024", "--timeout", "420"]
    for k, v in env.items():
        cmd += ["--env", f"{k}={v}"]
    try:
        rc = subprocess.call(cmd)
    finally:
        stop.set()
        target.kill()
    if rc != 0:
        raise SystemExit(f"guest failed with exit {rc}; target log: {target.log.name}")
    check_backing_file(pat1, pat2)
    print("host: backing files verified", flush=True)


def check_backing_file(pat1, pat2):
    with open(os.path.join(WORK, "ns1.img"), "rb") as f:
        img = f.read()
    if len(img) != 96 * MIB:
        raise SystemExit(f"backing file is {len(img)} bytes, expected 96 MiB after the grow")
    if img[:16 * MIB] != pat1:
        raise SystemExit("backing file: 16 MiB pattern missing")
    for i in range(16):
        at = (8192 + i * 2) * 4096
        if img[at:at + 4096] != pat2[i * 4096:(i + 1) * 4096]:
            raise SystemExit(f"backing file: 4 KiB piece {i} missing at {at}")
    at = 48 * 16 * 65536
    if img[at:at + 65536] != pat2:
        raise SystemExit("backing file: write made after the restart is missing")
    if img[64 * MIB:68 * MIB] != pat1[:4 * MIB]:
        raise SystemExit("backing file: write made with digests is missing")


if __name__ == "__main__":
    main()
