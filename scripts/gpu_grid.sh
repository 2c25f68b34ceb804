#!/usr/bin/env bash
# Issue 16's full-data accuracy grid on a lent GPU machine (no internet there, torch preinstalled), in one call:
#   .gpu/base  = the base BERT folder (all-MiniLM-L6-v2, weights stored as float16 to fit the transfer limit)
#   .gpu/data  = rotten-tomatoes/{train,dev,test}.tsv, extra.txt (teacher-labelled text), amazon-xdomain.tsv
# The package runs from a namespace shim (no compile step: training needs no kernels). Results: $OUT/grid.tgz.
set -uo pipefail
export ROOT=$(pwd); OUTDIR=${OUT:-/tmp/out}; GRID=/tmp/grid; mkdir -p "$OUTDIR" "$GRID"
SHIM=/tmp/shim; rm -rf "$SHIM"; mkdir -p "$SHIM/bebert_deploy"
cp -r bebert_deploy/. "$SHIM/bebert_deploy/"
for d in models exporters runtime; do ln -s "$ROOT/$d" "$SHIM/bebert_deploy/$d"; done
export PYTHONPATH=$SHIM PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1  # SAFEPATH: the repo root must not shadow the shim
nvidia-smi -L; python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
# 1. smoke: the tiny random BERT of the tests, every stage once on the GPU (fails fast, before the long run)
python3 - <<'PY' || exit 1
import os, sys; sys.path.insert(0, os.environ["ROOT"] + "/tests")
from pathlib import Path
from conftest import write_tiny_bert, write_tiny_data
from bebert_deploy.config import TrainConfig, BoostConfig
from bebert_deploy.training.pipeline import train_bebert
t = Path("/tmp/smoke"); b = write_tiny_bert(t / "bert"); d = write_tiny_data(t / "data")
for ens in ("independent", "boost"):
    s = train_bebert(TrainConfig(data_dir=str(d), base=str(b), max_len=16, batch_size=16, teacher_epochs=1, ternary_epochs=1,
                     member_epochs=1, lr=1e-3, ensemble=ens, augment=1, device="cuda", boost=BoostConfig(members=2)), t / ens)
    print("smoke", ens, s["device"], s["ensemble_dev"])
PY
# 2. the grid: seeds one after another (side by side each ran 3x slower per step on an H100); no new run starts after GRID_DEADLINE s; the whole grid stops at GRID_TIMEOUT s
timeout "${GRID_TIMEOUT:-480}" python3 scripts/train_grid.py --out "$GRID" --device cuda --base .gpu/base \
  --data-dir .gpu/data/rotten-tomatoes --extra-text .gpu/data/extra.txt --xdomain .gpu/data/amazon-xdomain.tsv \
  --seeds "${GRID_SEEDS:-1,2,3}" --modes "${GRID_MODES:-indep,boost}" --parallel "${GRID_PARALLEL:-1}" --batch-size "${GRID_BS:-64}" \
  --deadline-s "${GRID_DEADLINE:-330}"
echo "grid exit $?"; ls -la "$GRID"; tail -n 5 "$GRID"/seed*.log
tar czf "$OUTDIR/grid.tgz" -C "$GRID" --exclude runs .
