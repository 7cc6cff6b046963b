#!/usr/bin/env bash
# Issue 31's quality run on one GPU (benchmarks/gpu_quality.py says what it measures): the real default teacher, the
# demo's shape and recipe, 20M+ tokens of the default corpus in bf16. Prepared here, run there in three calls back
# to back (the parts of ~115 MB of teacher, corpus and tasks, and 14 MB of wheels, at most 64 MiB a call):
#
#   bash benchmarks/gpu_prepare.sh && python benchmarks/gpu_quality.py prepare   # here: .gpu/wheels, .gpu/quality/
#   bash benchmarks/gpu_quality.sh        # there, call 1 carrying .gpu/wheels and .gpu/quality/part1: stages it
#   bash benchmarks/gpu_quality.sh        # there, call 2 carrying .gpu/quality/part2: stages it
#   bash benchmarks/gpu_quality.sh        # there, call 3 carrying .gpu/quality/part3: stages it and runs (~5 min)
#   bash benchmarks/gpu_quality.sh --sweep  # the same, with a short sweep of batch and lr first (~1-2 min more)
#   bash benchmarks/gpu_quality.sh --dry  # anywhere: packs a tiny teacher and runs it on the CPU (the test suite)
#
# Results under $OUT (default runs/gpu_quality): gpu_quality.json, report.md, loss.png, run.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}  # the image's python on the GPU machine; the test suite passes its own
OUT=${OUT:-runs/gpu_quality}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ "${1:-}" = "--dry" ]; then
  ROOT=$OUT/dry; rm -rf "$ROOT"
  export OMP_NUM_THREADS=1
  $PY benchmarks/gpu_quality.py prepare --dry --root "$ROOT/parts" --part-mib 2 || exit 1
  mkdir -p "$ROOT/first" && cp -r "$ROOT/parts/part1" "$ROOT/first/"   # the first call: one part arrived
  $PY benchmarks/gpu_quality.py run --dry --root "$ROOT/first" --staging "$ROOT/staged" --out "$OUT"
  rc=$?; [ "$rc" = 3 ] || { echo "expected exit 3 (parts missing) after the first part, got $rc"; exit 1; }
  $PY benchmarks/gpu_quality.py run --dry --sweep --root "$ROOT/parts" --staging "$ROOT/staged" --out "$OUT" 2>&1 \
    | tee "$OUT/run.log"
  exit "${PIPESTATUS[0]}"
fi
if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/minitron-site \
    .gpu/wheels/*.whl && export PYTHONPATH=$PWD:/tmp/minitron-site
fi
$PY benchmarks/gpu_quality.py run --out "$OUT" "$@" 2>&1 | tee -a "$OUT/run.log"
exit "${PIPESTATUS[0]}"
