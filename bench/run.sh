#!/usr/bin/env bash
# End-to-end benchmark: build sluice (release), generate the seeded data, install the peers
# (DuckDB, Polars) into bench/.venv, then run sluice beside them and print the ratios.
#
#   bash bench/run.sh                 # 32 files x 150k rows, plus the 4x set for memory
#   ROUNDS=5 JOBS=groupby_big bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
DATA=bench/data

step() { printf '==> %s\n' "$*" >&2; }

step "build (release)"
cargo build --release --locked -p sluice-cli -p sluice-bench
BIN="$CARGO_TARGET_DIR/release"

if [ ! -f "$DATA/1x/big.csv" ]; then
  step "generate 1x data (32 files x 150k rows)"
  "$BIN/datagen" "$DATA/1x" --files 32 --rows 150000 --seed 42
fi
if [ "${SKIP_4X:-0}" != 1 ] && [ ! -f "$DATA/4x/big.csv" ]; then
  step "generate 4x data (32 files x 600k rows)"
  "$BIN/datagen" "$DATA/4x" --files 32 --rows 600000 --seed 42
fi

if [ ! -x bench/.venv/bin/python ]; then
  step "install peers into bench/.venv"
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install --quiet --disable-pip-version-check duckdb polars
fi

mkdir -p bench/results
args=(--sluice "$BIN/sluice" --data "$DATA/1x" --rounds "${ROUNDS:-3}" --json bench/results/latest.json)
[ -n "${JOBS:-}" ] && args+=(--jobs "$JOBS")
[ "${SKIP_4X:-0}" != 1 ] && args+=(--data4 "$DATA/4x")
step "run"
bench/.venv/bin/python bench/run.py "${args[@]}" | tee bench/results/latest.txt
