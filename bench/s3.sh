#!/usr/bin/env bash
# Object-storage benchmark: ingest bench/data/1x/many from a loopback S3 server (moto) vs from
# local disk, side by side. Generate the data first with bench/run.sh (or SKIP_4X=1 ...).
#
#   bash bench/s3.sh            # ROUNDS=3 by default
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
cargo build --release --locked -p sluice-cli -p sluice-bench
BIN="$CARGO_TARGET_DIR/release"
if [ ! -f bench/data/1x/big.csv ]; then
  "$BIN/datagen" bench/data/1x --files 32 --rows 150000 --seed 42
fi
command -v moto_server >/dev/null || python3 -m pip install --quiet "moto[server]"
mkdir -p bench/results
python3 bench/s3.py --sluice "$BIN/sluice" --data bench/data/1x/many --rounds "${ROUNDS:-3}" \
  | tee bench/results/s3.txt
