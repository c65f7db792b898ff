#!/usr/bin/env python3
"""Known answers for DH-HMAC-CHAP responses, from Python's hmac/hashlib.

The formula (NVMe Base 2.0 section 8.13.5): response =
HMAC-H(key, Ca || seqnum(le32) || tid(le16) || sc_c(1) || role || nqn1 || 0 || nqn2),
Ca = challenge, or HMAC-H(H(dh_shared), challenge) with a DH group.
Run: python3 responses.py > responses.txt
"""
import hashlib
import hmac

H = {1: hashlib.sha256, 2: hashlib.sha384, 3: hashlib.sha512}
HOST = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001"
SUB = "nqn.2026-12.io.ferrofab:vol1"
# The ffdhe2048 shared secret from ffdhe.txt (OpenSSL).
shared = [l.split("=", 1)[1].strip() for l in open("ffdhe.txt") if l.startswith("shared=")][0]

for h in (1, 2, 3):
    n = H[h]().digest_size
    for role in ("host", "ctrl"):
        for dh in (None, shared):
            key = bytes((i * 13 + h) % 256 for i in range(n))
            chal = bytes((i * 31 + 7 * h + len(role)) % 256 for i in range(n))
            seq, tid = 0x01020304 * h, 0x100 + h
            ca = chal
            if dh:
                ca = hmac.new(H[h](bytes.fromhex(dh)).digest(), chal, H[h]).digest()
            tag, n1, n2 = (b"HostHost", HOST, SUB) if role == "host" else (b"Controller", SUB, HOST)
            msg = ca + seq.to_bytes(4, "little") + tid.to_bytes(2, "little") + b"\0" + tag + n1.encode() + b"\0" + n2.encode()
            r = hmac.new(key, msg, H[h]).hexdigest()
            print(h, role, seq, tid, key.hex(), chal.hex(), dh or "-", HOST, SUB, r)
