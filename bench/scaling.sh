#!/usr/bin/env bash
# Does a CPU-heavy custom batch function scale with threads? Runs the cpu_function example
# (release) with 1 and 2 threads, interleaved, ROUNDS times each, and prints the median times
# and the speed-up (goal on this 2-core machine: 2 threads >= 1.8x of 1 thread).
#
#   bash bench/scaling.sh            # ROWS=400000 ROUNDS=5 by default
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
ROWS="${ROWS:-400000}"
ROUNDS="${ROUNDS:-5}"
# The example, built as a binary of the bench crate (same features as the CLI build).
cargo build --release --locked -p sluice-cli -p sluice-bench
BIN="$CARGO_TARGET_DIR/release/cpu_function"
declare -a one two
for _ in $(seq "$ROUNDS"); do
  one+=("$("$BIN" --threads 1 --rows "$ROWS" | sed 's/.*seconds=//')")
  two+=("$("$BIN" --threads 2 --rows "$ROWS" | sed 's/.*seconds=//')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m1=$(median "${one[@]}")
m2=$(median "${two[@]}")
echo "cpu_function, $ROWS rows, median of $ROUNDS (interleaved):"
echo "  1 thread : ${m1}s   (${one[*]})"
echo "  2 threads: ${m2}s   (${two[*]})"
awk -v a="$m1" -v b="$m2" 'BEGIN {printf "  speed-up : %.2fx (goal >= 1.8x)\n", a / b}'
