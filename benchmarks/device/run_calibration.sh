#!/usr/bin/env bash
# One command to run the calibration microbenchmarks on a GPU machine.
#
#   benchmarks/device/run_calibration.sh [OUT_DIR] [extra sim.calibrate.run args...]
#
# OUT_DIR defaults to $OUT (device machine) or benchmarks/results.  Writes
#   OUT_DIR/<card-slug>-measured.yaml   (re-written after every section, so a
#                                        killed run still leaves data)
#   OUT_DIR/calibration.log             (nvidia-smi + full runner log)
# Env: CALIB_BUDGET_S (default 400), PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1   # repo root, so `python -m sim.calibrate.run` resolves

OUT_DIR="${OUT:-benchmarks/results}"
if [[ $# -gt 0 && "$1" != --* ]]; then OUT_DIR="$1"; shift; fi
BUDGET="${CALIB_BUDGET_S:-400}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/calibration.log"

{
  echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) calibration start (budget ${BUDGET}s) in $(pwd)"
  nvidia-smi || echo "nvidia-smi unavailable"
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cuda available", torch.cuda.is_available())'
} 2>&1 | tee "$LOG"

# Hard stop a little after the runner's own budget; SIGTERM makes the runner write what it has.
PYTHONUNBUFFERED=1 timeout --signal=TERM --kill-after=15 $((BUDGET + 45)) \
  "$PY" -m sim.calibrate.run --device cuda --budget-s "$BUDGET" --out-dir "$OUT_DIR" "$@" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}

{
  echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ) runner exit code $rc"
  nvidia-smi --query-gpu=clocks.sm,clocks.mem,clocks.max.sm,power.draw,temperature.gpu --format=csv 2>/dev/null || true
  ls -l "$OUT_DIR"
} 2>&1 | tee -a "$LOG"
exit "$rc"
