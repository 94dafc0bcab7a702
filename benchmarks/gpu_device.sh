#!/usr/bin/env bash
# On a lent GPU machine without network: the wheels `make gpu-carry` gathered (in .whl/, carried with the working
# tree) installed beside the machine's own CUDA torch, then `make gpu-check`'s rows (arguments passed on; its JSON
# lines go to gpu_check.jsonl and $OUT/gpu_check.jsonl). Run from the repository root:
#     bash benchmarks/gpu_device.sh --budget-s 420
set -euo pipefail
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/thinkswitch-site}
ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "error: no wheels in $WHEELS/: run 'make gpu-carry' here first and carry $WHEELS" >&2; exit 2; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1  # gpu_check goes offline itself
"$PY" -c 'import torch, transformers, trl, peft, bitsandbytes, mergekit, hydra; print("torch", torch.__version__, "cuda", torch.version.cuda, "| transformers", transformers.__version__, "trl", trl.__version__, "peft", peft.__version__, "bitsandbytes", bitsandbytes.__version__)'
"$PY" -m benchmarks.gpu_carry --check
exec "$PY" -m benchmarks.gpu_check "$@"
