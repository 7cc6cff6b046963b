#!/bin/bash
# The teacher cache's speed gain and accuracy cost (issue 18 item 4), on the real default teacher and a ~50%
# student (magnitude-pruned: no calibration pass), bf16 autocast: full-vocabulary forward KL, then top-k KL through --teacher-cache twice (the first pass runs the
# teacher and writes the cache, the second reads it and does not load the teacher), same batches, same tokens.
#   bash benchmarks/teacher_cache.sh [WORK_DIR]      (then read the three lines it prints)
set -euo pipefail
WORK=${1:-runs/teacher-cache-bench}
PY=${PYTHON:-python}
mkdir -p "$WORK"
[ -d "$WORK/pruned" ] || $PY -m minitron prune --model default --prune.criterion magnitude --out "$WORK/pruned" \
    --target hidden_size=384,intermediate_size=1024,num_attention_heads=6
COMMON=(--teacher default --student "$WORK/pruned" --seq-len 256 --micro-batch 4 --global-batch-tokens 2048
        --tokens 16384 --lr 1e-3 --min-lr 1e-4 --warmup-steps 0 --eval-every 0 --eval-seqs 32 --save-every 0
        --precision bf16 --overwrite)
rm -rf "$WORK/cache"
$PY -m minitron distill "${COMMON[@]}" --loss forward_kl --out "$WORK/full"
$PY -m minitron distill "${COMMON[@]}" --loss topk_kl --top-k 64 --teacher-cache "$WORK/cache" --out "$WORK/write"
$PY -m minitron distill "${COMMON[@]}" --loss topk_kl --top-k 64 --teacher-cache "$WORK/cache" --out "$WORK/read"
du -sh "$WORK/cache"
for run in full write read; do
  $PY - "$WORK/$run/metrics.jsonl" "$run" <<'PYEOF'
import json, sys
m = [json.loads(line) for line in open(sys.argv[1])]
tps = [r["tokens_per_s"] for r in m[1:]] or [m[0]["tokens_per_s"]]  # the first step includes warm-up
print(f"{sys.argv[2]}: {sum(tps) / len(tps):.1f} tokens/s (steps 2-), final val_loss {m[-1]['val_loss']:.4f}")
PYEOF
done
