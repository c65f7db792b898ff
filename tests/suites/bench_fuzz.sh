#!/usr/bin/env bash
# Fuzzing at scale, run by `./tests/run bench` (bench.sh calls it); the
# bounded fuzz stays in the default suite.
#
# 1. The PDU decoder: FF_FUZZ_DECODER_INPUTS (default 10,000,000) mutated
#    inputs, and the queue state machine: FF_FUZZ_QUEUE_INPUTS (default
#    1,000,000) PDUs through fuzzed connections (cargo test --release,
#    ignored tests fuzz::fuzz_long_* of ferrofab-nvmeof-target).
# 2. A live `ferrofab-nvmeof serve` (release build) fuzzed for
#    FF_FUZZ_LIVE_SECS (default 180) by FF_FUZZ_CONNS (default 8) parallel
#    connections with random and mutated PDUs, plus bursts of idle
#    connections. Its namespace file holds a known pattern; the fuzzer
#    writes only LBAs FF_FUZZ_WRITE_LBAS (default 2048..6144 of 8192).
#    Checked: the process is alive and never panicked, its thread count
#    and RSS stayed under bounds, every block outside the write range is
#    unchanged, and a real host still connects and reads the namespace.
#
# FF_FUZZ_PARTS (default "long live") picks the parts; with only `live`,
# the table quotes the previous long run's figures (long.log is kept).
#
# Output: tests/.work/bench/fuzz/ (logs, samples) and fuzz.md (table).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib/common.sh"

ff_need_cmd python3
decoder_inputs=${FF_FUZZ_DECODER_INPUTS:-10000000}
queue_inputs=${FF_FUZZ_QUEUE_INPUTS:-1000000}
live_secs=${FF_FUZZ_LIVE_SECS:-180}
conns=${FF_FUZZ_CONNS:-8}
blocks=8192
write_lbas=${FF_FUZZ_WRITE_LBAS:-2048..6144}
max_conns=1024
per_peer=256
# Bounds: one thread per admitted connection plus the target's own (16 I/O
# threads, listener, keep-alive) and some slack; RSS well under what
# per_peer connections with full buffers would take.
max_threads=$((per_peer + 48))
max_rss_kib=$((512 * 1024))
parts=${FF_FUZZ_PARTS:-long live}
out=$FF_WORK/bench/fuzz
mkdir -p "$out"
case " $parts " in *" long "*) rm -f "$out/long.log" ;; esac
rm -f "$out"/{live.log,serve.log,samples.txt,fuzz.md,ns1.img,ns1.orig}

ff_say "fuzz: building the release test binary"
ff_cargo test --release -p ferrofab-nvmeof-target --lib --no-run --quiet >&2 || ff_die "building the fuzz tests failed"

long_wall=-
if [[ " $parts " == *" long "* ]]; then
    ff_say "fuzz: $decoder_inputs decoder inputs, $queue_inputs queue PDUs"
    start=$SECONDS
    FERROFAB_FUZZ_DECODER_INPUTS=$decoder_inputs FERROFAB_FUZZ_QUEUE_INPUTS=$queue_inputs \
        ff_cargo test --release -p ferrofab-nvmeof-target --lib fuzz::fuzz_long -- --ignored --nocapture \
        >"$out/long.log" 2>&1 || { tail -30 "$out/long.log" >&2; ff_die "long fuzz run failed (see $out/long.log)"; }
    long_wall=$((SECONDS - start))
fi
[[ " $parts " == *" live "* ]] || exit 0

bin=$(ff_release_bin ferrofab-nvmeof)
img=$out/ns1.img
python3 - "$img" "$blocks" <<'PY'
import sys
path, blocks = sys.argv[1], int(sys.argv[2])
row = bytes(range(256)) * 2
with open(path, "wb") as f:
    for b in range(blocks):
        k = (b * 131) & 0xFF
        f.write(row[k:k + 256] + row[(k + 7) & 0xFF:((k + 7) & 0xFF) + 256])
PY
cp "$img" "$out/ns1.orig"
port=$(ff_free_port)
cat >"$out/serve.toml" <<CFG
[target]
max_connections = $max_conns
max_connections_per_peer = $per_peer
icreq_timeout_ms = 2000
connect_timeout_ms = 3000

[[listener]]
address = "127.0.0.1:$port"

[[subsystem]]
nqn = "nqn.2026-11.io.ferrofab:fuzz-a"
allowed_hosts = ["nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000f022"]

[[subsystem.namespace]]
nsid = 1
path = "$img"
block_size = 512
direct_io = "off"
CFG

ff_say "fuzz: live target on 127.0.0.1:$port for ${live_secs}s with $conns connections"
# Per-connection warnings (every fuzzed connection ends in one) would
# only cost CPU; a caught panic is logged at error level, and an
# uncaught one prints "panicked" whatever the level.
RUST_LOG=error "$bin" serve -c "$out/serve.toml" --no-watch >"$out/serve.log" 2>&1 &
serve_pid=$!
sampler_pid=
trap 'kill $serve_pid ${sampler_pid:-} 2>/dev/null || true' EXIT
ff_wait_line "$out/serve.log" "ready, serving" 30 || ff_die "target did not start (see $out/serve.log)"
(
    while kill -0 "$serve_pid" 2>/dev/null; do
        awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } /^Threads:/ { t = $2 } END { print r, h, t }' \
            "/proc/$serve_pid/status" 2>/dev/null || true
        sleep 0.5
    done
) >"$out/samples.txt" &
sampler_pid=$!

FERROFAB_FUZZ_REMOTE=127.0.0.1:$port FERROFAB_FUZZ_SECS=$live_secs FERROFAB_FUZZ_CONNS=$conns \
    FERROFAB_FUZZ_NS_BLOCKS=$blocks FERROFAB_FUZZ_WRITE_LBAS=$write_lbas \
    ff_cargo test --release -p ferrofab-nvmeof-target --lib fuzz::fuzz_remote_serve -- --ignored --exact --nocapture \
    >"$out/live.log" 2>&1 || { tail -30 "$out/live.log" >&2; ff_die "live fuzz run failed (see $out/live.log)"; }

kill -0 "$serve_pid" 2>/dev/null || ff_die "the target died during the live run (see $out/serve.log)"
sleep 1
kill "$sampler_pid" 2>/dev/null || true
wait "$sampler_pid" 2>/dev/null || true
if grep -Eq "panicked|internal error" "$out/serve.log"; then
    grep -E "panicked|internal error" "$out/serve.log" | head -5 >&2
    ff_die "the target panicked during the live run (see $out/serve.log)"
fi
kill "$serve_pid" 2>/dev/null || true
wait "$serve_pid" 2>/dev/null || true

# The table is written whatever the outcome; the checks fail the suite
# afterwards, naming what was out of bounds.
python3 - "$out" "$write_lbas" "$max_threads" "$max_rss_kib" "$long_wall" "$live_secs" "$conns" <<'PY' >"$out/fuzz.md" || fuzz_failed=1
import pathlib, re, sys
out = pathlib.Path(sys.argv[1])
lo, hi = (int(x) for x in sys.argv[2].split(".."))
max_threads, max_rss = int(sys.argv[3]), int(sys.argv[4])
long_wall, live_secs, conns = sys.argv[5], sys.argv[6], sys.argv[7]
orig = (out / "ns1.orig").read_bytes()
now = (out / "ns1.img").read_bytes()
bs = 512
if len(now) != len(orig):
    sys.exit(f"namespace file changed size: {len(orig)} -> {len(now)}")
violations = []
bad = [b for b in range(len(orig) // bs) if not lo <= b < hi and orig[b * bs:(b + 1) * bs] != now[b * bs:(b + 1) * bs]]
if bad:
    violations.append(f"{len(bad)} blocks outside {lo}..{hi} changed, first {bad[:5]}")
changed = sum(1 for b in range(lo, hi) if orig[b * bs:(b + 1) * bs] != now[b * bs:(b + 1) * bs])
samples = [tuple(int(x) for x in l.split()) for l in (out / "samples.txt").read_text().splitlines() if len(l.split()) == 3]
if not samples:
    sys.exit("no RSS/thread samples of the target")
peak_rss = max(max(s[0] for s in samples), samples[-1][1])
peak_threads = max(s[2] for s in samples)
final_rss, final_threads = samples[-1][0], samples[-1][2]
if peak_threads > max_threads:
    violations.append(f"target reached {peak_threads} threads (bound {max_threads})")
if peak_rss > max_rss:
    violations.append(f"target RSS reached {peak_rss} KiB (bound {max_rss} KiB)")
figs = {}
for log in ("long.log", "live.log"):
    if not (out / log).exists():
        continue
    for m in re.finditer(r"FUZZ-FIGURES (\S+) inputs=(\d+) secs=([\d.]+) per_s=(\d+)", (out / log).read_text()):
        figs[m.group(1)] = (int(m.group(2)), float(m.group(3)), int(m.group(4)))
def row(name, key, unit):
    n, s, r = figs.get(key, (0, 0.0, 0))
    return f"| {name} | {n:,} {unit} | {s:.0f} | {r:,} |"
print("## Fuzzing at scale\n")
print("| run | inputs | seconds | inputs/s |")
print("|---|---:|---:|---:|")
print(row("PDU decoder (mutated streams, cut PDUs)", "decoder", "decodes"))
print(row("queue state machine (fuzzed connections)", "queue", "PDUs"))
print(row(f"live `serve`, {conns} connections, {live_secs} s: PDUs sent", "remote", "PDUs"))
print(row("live `serve`: connections", "remote-connections", "connections"))
print()
print(f"Live target: peak RSS {peak_rss / 1024:.1f} MiB (bound {max_rss // 1024} MiB), "
      f"peak threads {peak_threads} (bound {max_threads}); at the end {final_rss / 1024:.1f} MiB, {final_threads} threads. "
      f"No panic; the process stayed up; {len(orig) // bs - (hi - lo) - len(bad)} of the {len(orig) // bs - (hi - lo)} blocks outside LBAs {lo}..{hi} unchanged "
      f"({changed} of the {hi - lo} blocks inside were written). Long runs took {long_wall} s of wall time.")
for v in violations:
    print(f"\n**Out of bounds:** {v}.")
    print(v, file=sys.stderr)
sys.exit(1 if violations else 0)
PY
cat "$out/fuzz.md"
[ -z "${fuzz_failed:-}" ] || ff_die "the live fuzz run went out of bounds (see $out/fuzz.md)"
