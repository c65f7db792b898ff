#!/usr/bin/env python3
"""Verify-mode I/O through an exposed volume file, for the `netns` suite.

Runs as its own process on purpose: the orchestrator must never hold an
exposed file open itself (a forked child closing its copy of the descriptor
makes FUSE send a FLUSH that waits for a storage node that may be cut off).

  stream PATH --blocks N --bs B --seed S
      writes block i (stamped with i and S) at offset i*B, fsync after each,
      and prints "ack i T" once it is durable (T: CLOCK_MONOTONIC); any I/O error is printed and
      exits 1, so "no I/O errors" is the exit status.
  verify PATH --blocks N --bs B --seed S [--offset O]
      reads the N blocks back from PATH (an exposure or the backing file at
      byte offset O) and exits 1 naming the first block that differs.
  timed PATH --stop STOPFILE --blocks N --bs B --seed S
      until STOPFILE exists, writes block (i mod N) stamped with i, fsync
      after each, and prints "ack i MS" with MS the milliseconds that
      write+fsync took (the I/O pause a restart causes); exits 1 on an
      I/O error.
  probe PATH --bs B --seed S --index I
      one verified round trip: write block I, fsync, drop it from the page
      cache, read it back and compare (data path alive check).
"""
import argparse
import hashlib
import os
import sys
import time


def block(seed: int, i: int, bs: int) -> bytes:
    """Deterministic, distinct content for block i of stream `seed`."""
    head = f"ferrofab-netns seed={seed} block={i};".encode()
    body = hashlib.sha256(head).digest() * (bs // 32 + 1)
    return (head + body)[:bs]


def stream(a) -> int:
    fd = os.open(a.path, os.O_WRONLY)
    try:
        for i in range(a.blocks):
            data = block(a.seed, i, a.bs)
            try:
                os.pwrite(fd, data, a.offset + i * a.bs)
                os.fdatasync(fd)
            except OSError as e:
                print(f"error block {i}: {e}", flush=True)
                return 1
            # CLOCK_MONOTONIC is system-wide: the reader compares it with
            # its own clock to tell which acks came while a link was down.
            print(f"ack {i} {time.monotonic():.6f}", flush=True)
    finally:
        os.close(fd)
    return 0


def timed(a) -> int:
    fd = os.open(a.path, os.O_WRONLY | os.O_CREAT, 0o644)
    i = 0
    try:
        while not os.path.exists(a.stop):
            data = block(a.seed, i, a.bs)
            t0 = time.monotonic()
            try:
                os.pwrite(fd, data, (i % a.blocks) * a.bs)
                os.fdatasync(fd)
            except OSError as e:
                print(f"error block {i}: {e}", flush=True)
                return 1
            print(f"ack {i} {(time.monotonic() - t0) * 1000:.1f}", flush=True)
            i += 1
            time.sleep(0.005)
    finally:
        os.close(fd)
    return 0


def read_back(fd: int, off: int, bs: int) -> bytes:
    # Drop cached pages so the read goes to the data path, not the cache.
    os.posix_fadvise(fd, off, bs, os.POSIX_FADV_DONTNEED)
    return os.pread(fd, bs, off)


def verify(a) -> int:
    fd = os.open(a.path, os.O_RDONLY)
    try:
        for i in range(a.blocks):
            got = read_back(fd, a.offset + i * a.bs, a.bs)
            if got != block(a.seed, i, a.bs):
                print(f"block {i} of {a.blocks} differs in {a.path}", file=sys.stderr)
                return 1
    finally:
        os.close(fd)
    print(f"verified {a.blocks} blocks of {a.bs} bytes in {a.path}")
    return 0


def probe(a) -> int:
    fd = os.open(a.path, os.O_RDWR)
    try:
        off = a.offset + a.index * a.bs
        want = block(a.seed, a.index, a.bs)
        os.pwrite(fd, want, off)
        os.fdatasync(fd)
        if read_back(fd, off, a.bs) != want:
            print(f"probe block {a.index} read back differently from {a.path}", file=sys.stderr)
            return 1
    except OSError as e:
        print(f"probe of {a.path} failed: {e}", file=sys.stderr)
        return 1
    finally:
        os.close(fd)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["stream", "verify", "probe", "timed"])
    p.add_argument("path")
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--bs", type=int, default=65536)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--stop", default="")
    a = p.parse_args()
    return {"stream": stream, "verify": verify, "probe": probe, "timed": timed}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
