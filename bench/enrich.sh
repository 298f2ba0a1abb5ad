#!/usr/bin/env bash
# Enrich benchmark: sluice vs the floor (keys x latency / concurrency) vs Python's
# ThreadPoolExecutor(10)+requests and asyncio+aiohttp(64), against a loopback API with 20 ms
# latency. See bench/README.md.
#
#   bash bench/enrich.sh                  # 100k rows, 10k ids, 3 sluice rounds, both Python recipes
#   SKIP_PYTHON=1 ROUNDS=5 bash bench/enrich.sh
#   SKIP_PER_ROW=1 bash bench/enrich.sh  # sluice and aiohttp+dedupe only (no per-row recipes)
#   FAULTS=1 bash bench/enrich.sh         # an API with 500s, 429 + Retry-After and 404s
#   JITTER_MS=5 bash bench/enrich.sh      # the clean API, each answer after 20 +- 5 ms
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"

cargo build --release --locked -p sluice-cli -p sluice-bench
BIN="$CARGO_TARGET_DIR/release"
if [ ! -x bench/.venv/bin/python ]; then
  python3 -m venv bench/.venv
fi
if ! bench/.venv/bin/python -c 'import requests, aiohttp' 2>/dev/null; then
  bench/.venv/bin/pip install --quiet --disable-pip-version-check requests aiohttp
fi
args=(--sluice "$BIN/sluice" --apiserver "$BIN/apiserver" --rounds "${ROUNDS:-3}")
[ "${SKIP_PYTHON:-0}" = 1 ] && args+=(--skip-python)
[ "${FAULTS:-0}" = 1 ] && args+=(--faults)
[ "${SKIP_PER_ROW:-0}" = 1 ] && args+=(--skip-per-row)
[ -n "${JITTER_MS:-}" ] && args+=(--jitter-ms "$JITTER_MS")
mkdir -p bench/results
bench/.venv/bin/python bench/enrich.py "${args[@]}" | tee bench/results/enrich.txt
