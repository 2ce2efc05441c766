#!/usr/bin/env bash
# Regenerates the figures of docs/benchmarks.md: runs `rotoken bench` and the
# bytes-per-family tool, writes JSON lines to docs/benchmarks/*.jsonl, then
# draws the plots (benches/plots/plot.py, needs python3 and matplotlib).
#
#   benches/plots/run.sh                 # everything (about 25 minutes on 2 cores)
#   SCALING="10000 1000000" benches/plots/run.sh   # skip the 10 million run
#   DURATION=20 benches/plots/run.sh     # longer runs
#
# Durable figures are the fsync latency of the file system holding
# $ROTOKEN_BENCH_DIR (default: the system temporary directory): never a tmpfs.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION="${DURATION:-10}"
FAMILIES="${FAMILIES:-10000}"
CALLERS="${CALLERS:-1 4 16 64 256}"
SCALING="${SCALING:-10000 1000000 10000000}"
OUT=docs/benchmarks
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"

cargo build --release -p rotoken-cli --features sqlite -p rotoken-bench --bins
BIN="$CARGO_TARGET_DIR/release"
mkdir -p "$OUT"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs) x $(nproc)"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel: $(uname -r)"
  echo "bench dir: $(df -T "${ROTOKEN_BENCH_DIR:-${TMPDIR:-/tmp}}" | awk 'NR==2 {print $2 " on " $1}')"
  echo "rustc: $(rustc --version)"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

bench() { "$BIN/rotoken" bench --json "$@"; }

# Throughput and latency against concurrency, durable, with the SQLite design
# on the same workload in the same run.
: > "$OUT/concurrency.jsonl"
for c in $CALLERS; do
  echo "== concurrency $c" >&2
  bench --concurrency "$c" --families "$FAMILIES" --duration "$DURATION" --compare sqlite >> "$OUT/concurrency.jsonl"
done

# Baselines: the engine's own non-durable one-caller figure, and durable
# without group commit.
: > "$OUT/baselines.jsonl"
echo "== relaxed, 1 caller" >&2
bench --concurrency 1 --families "$FAMILIES" --duration "$DURATION" --durability none >> "$OUT/baselines.jsonl"
for c in 1 64; do
  echo "== no group commit, $c callers" >&2
  bench --concurrency "$c" --families "$FAMILIES" --duration "$DURATION" --max-batch 1 >> "$OUT/baselines.jsonl"
done

# Throughput and bytes per family against the number of live families.
: > "$OUT/scaling.jsonl"
for n in $SCALING; do
  for mode in immediate none; do
    c=64; [ "$mode" = none ] && c=1
    echo "== scaling: $n families, $mode, $c callers" >&2
    bench --concurrency "$c" --families "$n" --duration "$DURATION" --durability "$mode" >> "$OUT/scaling.jsonl"
  done
done

# Bytes per family against rotations per family, rotoken and SQLite.
: > "$OUT/bytes_vs_rotations.jsonl"
for k in 0 1 10 100; do
  echo "== bytes per family after $k rotations" >&2
  "$BIN/bytes_per_family" "$FAMILIES" "$k" sqlite >> "$OUT/bytes_vs_rotations.jsonl"
done

python3 benches/plots/plot.py
