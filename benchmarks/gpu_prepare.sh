#!/usr/bin/env bash
# Prepare, on a machine with a package registry, what benchmarks/gpu_check.sh carries to a GPU machine that has
# none: wheels of the packages its image lacks (cp312, manylinux x86-64) and the Tekken tokenizer converted to a
# Hugging Face tokenizer (mistral_common is not on that image). Everything lands in .gpu/ (git-ignored, ~5 MB):
#
#   bash benchmarks/gpu_prepare.sh            # then carry `.gpu` with the repository to the GPU machine
#
# The GPU image is expected to hold torch, transformers, accelerate, safetensors, tokenizers, numpy, tqdm,
# matplotlib, pyyaml, jinja2 and pytest (as the lent H100/H200 image does); WHEELS names the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# minitron's own needs, then lm-evaluation-harness (the benchmarks of gpu_quality.sh) and what it needs beyond the image
WHEELS=${WHEELS:-"gguf jsonargparse docstring-parser typeshed-client lm_eval datasets evaluate dill multiprocess
  more-itertools pytablewriter DataProperty mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet sqlitedict
  word2number rouge-score nltk"}
rm -rf .gpu/wheels .gpu/tekken && mkdir -p .gpu/wheels
for name in $WHEELS; do
  version=$($PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null || true)
  [ -n "$version" ] || { echo "skip $name (not installed here)"; continue; }
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .gpu/wheels "$name==$version" 2>/dev/null ||
    $PY -m pip wheel -q --no-deps -w .gpu/wheels "$name==$version"  # a pure-Python sdist: built here
done
$PY - <<'PYEOF'
import shutil, tempfile
from importlib import resources
from pathlib import Path
from transformers import AutoTokenizer
with tempfile.TemporaryDirectory() as tmp:
    shutil.copy(resources.files("mistral_common") / "data" / "tekken_240911.json", Path(tmp) / "tekken.json")
    tok = AutoTokenizer.from_pretrained(tmp)
tok.eos_token = "</s>"
tok.save_pretrained(".gpu/tekken")
PYEOF
gzip -9 .gpu/tekken/tokenizer.json
du -sh .gpu; ls .gpu/wheels
