#!/usr/bin/env python3
"""write-stream.py FILE STOPFILE REPORT

An fsync'd write stream for the puppet suite: writes 256 KiB blocks to FILE
(wrapping at 32 MiB), fsyncs each, until STOPFILE exists; then reads every
block back and writes a JSON report (blocks, errors, max fsync'd write
latency in ms) to REPORT. Exits 1 on any I/O error or a block that does not
read back, so a restart of the agent under a mounted filesystem shows up.
"""
import json
import os
import sys
import time

BLOCK = 256 << 10
SPAN = 32 << 20


def block(seq):
    head = f"ferrofab-stream {seq:012d}\n".encode()
    return (head * (BLOCK // len(head) + 1))[:BLOCK]


def main():
    path, stop, report = sys.argv[1:4]
    errors, seq, max_ms, last = [], 0, 0.0, {}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    while not os.path.exists(stop):
        off = (seq * BLOCK) % SPAN
        t0 = time.monotonic()
        try:
            os.pwrite(fd, block(seq), off)
            os.fsync(fd)
        except OSError as e:
            errors.append(f"write {seq}: {e}")
            break
        max_ms = max(max_ms, (time.monotonic() - t0) * 1000)
        last[off] = seq
        seq += 1
        time.sleep(0.01)
    os.close(fd)
    try:
        with open(path, "rb") as f:
            for off, s in sorted(last.items()):
                f.seek(off)
                if f.read(BLOCK) != block(s):
                    errors.append(f"block at {off} (write {s}) does not read back")
    except OSError as e:
        errors.append(f"read back: {e}")
    with open(report, "w") as f:
        json.dump({"blocks": seq, "errors": errors, "max_latency_ms": round(max_ms, 1)}, f)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
