#!/usr/bin/env bash
# The Python package beside pyarrow, Polars and DuckDB (bench/python.py): builds the release
# module into bench/.venv (maturin develop --release), generates the seeded data, runs.
#
#   bash bench/python.sh            # ROUNDS=5 by default
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
DATA=bench/data

if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
fi
bench/.venv/bin/pip install --quiet --disable-pip-version-check "maturin>=1.9,<2" pyarrow polars duckdb
(cd python && VIRTUAL_ENV="$PWD/../bench/.venv" PATH="$PWD/../bench/.venv/bin:$PATH" maturin develop --release --quiet)
if [ ! -f "$DATA/1x/big.csv" ]; then
  cargo build --release --locked -p sluice-bench
  "$CARGO_TARGET_DIR/release/datagen" "$DATA/1x" --files 32 --rows 150000 --seed 42
fi
bench/.venv/bin/python bench/python.py --data "$DATA/1x" --rounds "${ROUNDS:-5}"
