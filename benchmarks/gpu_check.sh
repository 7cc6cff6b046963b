#!/usr/bin/env bash
# The GPU path, run for real, in one script that fits in about 9 minutes on one H100/H200:
#   (a) the tests marked `cuda` (tests/test_cuda.py): chunked losses and gradients in bf16 on CUDA against the
#       CPU in fp32, scoring in bf16 on CUDA against the CPU, a tiny compress on CUDA, and torchrun + NCCL:
#       distil, SIGKILL, resume, same weights as an uninterrupted run;
#   (b) benchmarks/throughput.py on the GPU shape (Mistral-shaped 1.5B teacher -> 0.9B student, vocabulary
#       131072), memory capped at 80 GiB to act as an H100 80GB, both loops also at 16,384 tokens a step;
#   (c) benchmarks/stream_12b.py --device cuda on Mistral-NeMo 12B's shape with GPU_CHECK_LAYERS layers (4).
# Results go under $OUT (default runs/gpu_check): one log per part, summary.txt, throughput.json, profile.txt.
#
#   bash benchmarks/gpu_prepare.sh     # once, where pip reaches a registry: wheels + Tekken tokenizer in .gpu/
#   bash benchmarks/gpu_check.sh       # on the GPU machine, from the repository root (.gpu/ beside it)
#   bash benchmarks/gpu_check.sh --dry # anywhere: the same parts, on the CPU and tiny (the test suite runs this)
#
# Each part has its own time limit and a failing part does not stop the next; the exit status is non-zero if any
# part failed.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0; [ "${1:-}" = "--dry" ] && DRY=1
OUT=${OUT:-runs/gpu_check}; mkdir -p "$OUT"; : > "$OUT/summary.txt"
PY=${PY:-python3}  # the image's python on the GPU machine; the test suite passes its own
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if compgen -G ".gpu/wheels/*.whl" >/dev/null && [ "$DRY" = 0 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/minitron-site \
    .gpu/wheels/*.whl && export PYTHONPATH=$PWD:/tmp/minitron-site
fi
status=0

part() {  # part NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, record the outcome
  local name=$1 limit=$2 start=$SECONDS rc; shift 2
  echo "=== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1; rc=$?
  echo "$name: exit $rc in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
  tail -n 15 "$OUT/$name.log"
  [ "$rc" = 0 ] || status=1
}

if [ "$DRY" = 1 ]; then
  export MINITRON_GPU_TESTS_DEVICE=cpu OMP_NUM_THREADS=1
  part cuda_tests 300 $PY -m pytest -q -x -p no:cacheprovider tests/test_cuda.py -k "forward_kl or torchrun"
  part throughput 120 $PY benchmarks/throughput.py --preset tiny --steps 1 --big-tokens 128 \
    --profile "$OUT/profile.txt" --json "$OUT/throughput.json"
  echo "stream_12b: skipped in the dry mode (tens of GB)" | tee -a "$OUT/summary.txt"
else
  part env 60 bash -c "nvidia-smi; $PY -c 'import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())'"
  part cuda_tests 180 $PY -m pytest -q -x -p no:cacheprovider -rs -s --durations=10 tests/test_cuda.py
  part throughput 200 $PY benchmarks/throughput.py --preset gpu --steps 5 --warmup 2 --memory-cap-gib 80 --experiments compile ckpt \
    --big-tokens 16384 --profile "$OUT/profile.txt" --json "$OUT/throughput.json"
  tok=(); if [ -f .gpu/tekken/tokenizer.json.gz ]; then
    mkdir -p /tmp/tekken && cp .gpu/tekken/tokenizer_config.json /tmp/tekken/ &&
      gunzip -c .gpu/tekken/tokenizer.json.gz >/tmp/tekken/tokenizer.json && tok=(--tokenizer /tmp/tekken); fi
  [ -n "${GPU_CHECK_SKIP_STREAM:-}" ] || part stream_12b 170 $PY benchmarks/stream_12b.py --device cuda --layers "${GPU_CHECK_LAYERS:-4}" \
    --dtypes bfloat16 float32 "${tok[@]}"
fi
echo "gpu_check: $([ $status = 0 ] && echo all parts passed || echo SOME PARTS FAILED) (results in $OUT)" | tee -a "$OUT/summary.txt"
exit $status
