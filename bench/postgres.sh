#!/usr/bin/env bash
# PostgreSQL reads and writes: sluice beside ConnectorX, Polars and psql's \copy on a
# 5,000,000-row table, interleaved; peak memory as the table grows 4x. See bench/README.md.
#
#   bash bench/postgres.sh                       # a throwaway server from .ci/pg.sh
#   SLUICE_PG_URL=postgres://... ROWS=1000000 ROUNDS=5 bash bench/postgres.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"

cargo build --release --locked -p sluice-cli
python3 -c 'import connectorx, polars, pyarrow' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check connectorx polars pyarrow
URL="${SLUICE_PG_URL:-}"
if [ -z "$URL" ]; then
  PG_DIR="$(mktemp -d)"
  trap 'bash .ci/pg.sh stop "$PG_DIR"; rm -rf "$PG_DIR"' EXIT
  # Plain TCP for every tool alike (the throwaway server also offers TLS).
  URL="$(bash .ci/pg.sh start "$PG_DIR")?sslmode=disable"
fi
mkdir -p bench/results
python3 bench/postgres.py --sluice "$CARGO_TARGET_DIR/release/sluice" --url "$URL" \
  --rows "${ROWS:-5000000}" --rounds "${ROUNDS:-3}" | tee bench/results/postgres.txt
