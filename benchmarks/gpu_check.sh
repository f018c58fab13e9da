#!/usr/bin/env bash
# The GPU checks of a lent accelerator machine, as one prepared run (device time is short):
#   1. the machine: GPU, driver, torch/lightning/timm versions;
#   2. benchmarks/train_throughput.py on the GPU (bf16 autocast), ViT-B/16 at 224 px, at the
#      CPU benchmark's batch (8 units x 6 images), at 32 units (192 images a step) and at
#      configs/paper.yaml's batch (640 images a step); with GPU_CHECK_COMPILE=1 also with
#      trainer.compile (its first step compiles for minutes);
#   3. `radpath train --config configs/paper.yaml` (ViT-B/16, 224 px, bf16-mixed) for a few
#      epochs on the synthetic cohort: wall time, run.json, the end-to-end path on CUDA;
#   4. `radpath evaluate --device cuda` of that run on its test split with causal test-time
#      adaptation (the validation split, for the thresholds, predicted plainly).
# Python packages the machine's image lacks travel as wheels in .whl (see the device tool's
# notes): pydantic and its core, annotated-types, typing-inspection, typing_extensions,
# pydicom, torchstain. Fetch them here (versions as in .venv), with /.whl/ in .git/info/exclude:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 \
#     pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     typing_extensions==4.16.0 pydicom==3.0.2 torchstain==1.4.1
# and name .whl in the device call's carry. Everything written lands in OUT (default
# gpu-check-out).
#
#   bash benchmarks/gpu_check.sh                  # on the GPU machine
#   GPU_CHECK_CPU=1 bash benchmarks/gpu_check.sh  # dry run of the same steps on a CPU, tiny
set -uo pipefail
OUT=${OUT:-gpu-check-out}
EPOCHS=${GPU_CHECK_EPOCHS:-4}
PATIENTS=${GPU_CHECK_PATIENTS:-128}
mkdir -p "$OUT"
WORK=$(mktemp -d)
PY=${PYTHON:-python3}

if ! "$PY" -c "import pydantic, pydicom, torchstain" 2>/dev/null && [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1

if [ -n "${GPU_CHECK_CPU:-}" ]; then
  THROUGHPUT=(--device cpu --backbone vit_test --size 64 --steps 4 --warmup 1)
  PREDICT_DEVICE=cpu
  TRAIN_SETS=(--set trainer.accelerator=cpu --set trainer.precision=bf16-mixed
              --set model.backbone.name=vit_test --set model.backbone.img_size=64
              --set model.backbone.histo_img_size=64 --set data.preprocess.mammo.size=64
              --set data.preprocess.histo.tile_size=64 --set data.num_workers=0
              --set "model.backbone.mixstyle_layers=[0]" --set data.patch_size=8)
else
  # Each configuration's table lands as its own section of one Markdown file in OUT.
  THROUGHPUT=(--device cuda --backbone vit_base --size 224
              --write "$OUT/train_throughput_gpu.md")
  TRAIN_SETS=()
  PREDICT_DEVICE=cuda
fi

step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

{
  step machine
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
  "$PY" -c "import torch, lightning, timm; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'available', torch.cuda.is_available(), '| lightning',
lightning.__version__, '| timm', timm.__version__)"

  step "throughput, 8 units x (2 views + 4 tiles)"
  "$PY" benchmarks/train_throughput.py "${THROUGHPUT[@]}"
  step "throughput, 32 units x (2 views + 4 tiles)"
  "$PY" benchmarks/train_throughput.py "${THROUGHPUT[@]}" --batch 32

  step "throughput at configs/paper.yaml's batch, 32 units x (4 views + 16 tiles)"
  "$PY" benchmarks/train_throughput.py "${THROUGHPUT[@]}" --batch 32 --views 4 --tiles 16 \
    --steps 10
  if [ -n "${GPU_CHECK_COMPILE:-}" ]; then
    # ViT-B's first compiled step takes minutes: one radpath variant, and its own limit.
    step "throughput, compiled (trainer.compile), 8 units"
    timeout "${GPU_CHECK_COMPILE_LIMIT:-400}" "$PY" benchmarks/train_throughput.py \
      "${THROUGHPUT[@]}" --compile --algorithms erm --no-lightning
  fi

  step "synthetic cohort, $PATIENTS patients"
  "$PY" -m radpath synth --out "$WORK/synth" --patients "$PATIENTS" || exit 1
  step "radpath train --config configs/paper.yaml, $EPOCHS epochs"
  started=$(date +%s)
  "$PY" -m radpath train --config configs/paper.yaml \
    --manifest "$WORK/synth/manifest.csv" --out "$WORK/run" \
    --set optim.epochs="$EPOCHS" --set optim.warmup_epochs=1 "${TRAIN_SETS[@]}"
  echo "train exit $? after $(( $(date +%s) - started )) s (preprocessing included)"
  cp "$WORK/run/run.json" "$WORK/run/config.yaml" "$OUT/" 2>/dev/null
  ls "$WORK/run/checkpoints" 2>/dev/null

  step "radpath evaluate --device $PREDICT_DEVICE --adapt causal, test split"
  started=$(date +%s)
  "$PY" -m radpath evaluate --run "$WORK/run" --manifest "$WORK/synth/manifest.csv" \
    --out "$WORK/eval" --split test --adapt causal --device "$PREDICT_DEVICE"
  echo "evaluate exit $? after $(( $(date +%s) - started )) s"
  grep -o "<th>device</th><td>[^<]*</td>" "$WORK/eval/report.html"
  cp "$WORK/eval/metrics.json" "$OUT/" 2>/dev/null
} 2>&1 | tee "$OUT/gpu_check.log"
