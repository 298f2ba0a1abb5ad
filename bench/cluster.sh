#!/usr/bin/env bash
# sluice on a loopback Ballista cluster (1 scheduler, 2 executors of the built binary) beside
# the same jobs run locally: overhead per job and per task, the main ingest job, and the
# enrich stage's load on the API. See bench/README.md.
#
#   bash bench/cluster.sh               # 3 rounds, 2 slots per executor
#   ROUNDS=5 SLOTS=1 bash bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"

cargo build --release --locked -p sluice-cli -p sluice-bench
BIN="$CARGO_TARGET_DIR/release"
if [ ! -f bench/data/1x/big.csv ]; then
  "$BIN/datagen" bench/data/1x --files 32 --rows 150000 --seed 42
fi
mkdir -p bench/results
python3 bench/cluster.py --sluice "$BIN/sluice" --apiserver "$BIN/apiserver" \
  --data bench/data/1x --rounds "${ROUNDS:-3}" --slots "${SLOTS:-2}" | tee bench/results/cluster.txt
