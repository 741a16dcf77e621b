#!/usr/bin/env bash
# Trains the shipped default in a fixed wall-clock budget on one GPU (or NPROC GPUs), from the repository root
# with lamsc installed:
#
#   sh benchmarks/gpu_train.sh PHOTOS OUT [MINUTES]
#   NPROC=4 sh benchmarks/gpu_train.sh PHOTOS OUT [MINUTES]   # data-parallel on 4 GPUs under torchrun
#   ABLATION=1 sh benchmarks/gpu_train.sh PHOTOS OUT [MINUTES] # the plain Deep JSCC ablation, same recipe
#   STEPS=asi=90,codec=6000,asc=2400 sh benchmarks/gpu_train.sh PHOTOS OUT  # these steps, no wall-clock fit
#   INIT=semcom/default_model/lamsc-default sh benchmarks/gpu_train.sh PHOTOS OUT [MINUTES]  # refine a model
#
# With NPROC > 1 each step trains on NPROC x the preset's batch (one batch per GPU), in the same budget.
# PHOTOS: the folder ../shared/data/photos.sh builds (a segments.npz beside the photographs' run folder is
# reused: put one in OUT/train to skip segmenting). MINUTES: the training budget (default: the preset's, gpu 6,
# gpu-refine 8).
# Writes OUT/lamsc-default.{safetensors,json} (fp16 weights, what ships in semcom/default_model/),
# OUT/curves.png, OUT/history.json and OUT/train.json; the run itself (resumable) stays in OUT/train.
# ABLATION=1: lamsc's codec with ASI and ASC off (--segments 0 --levels 1) and 8 channels, every feature sent
# (CBR 1/48), by the same preset, budget and seed; writes OUT/lamsc-plain.* instead of OUT/lamsc-default.*
# (benchmarks/results/ablation.md). Give it its own OUT: a run folder resumes only the model it began.
# STEPS: the steps per stage as given (the budget is not fitted; give STEPS or MINUTES): a matched pair trains
# the default and the ablation with one STEPS, e.g. the shipped default's GPU stage's (its JSON, last init_trained).
# INIT: a further round of the shipped default's last step on INIT (the gpu-refine preset: its encoder and decoder
# on the block-mean depth maps, mask network fixed; 8 minutes unless MINUTES; with STEPS give asc=N only), what a
# GPU holder runs to improve the default.
set -eu
photos=${1:?usage: gpu_train.sh PHOTOS OUT [MINUTES]}
out=${2:?usage: gpu_train.sh PHOTOS OUT [MINUTES]}
py=${PYTHON:-python3}
mkdir -p "$out/train"
launch=$py
if [ "${NPROC:-1}" -gt 1 ]; then  # torchrun: one process per GPU; rank 0 alone writes train.json
  launch="$py -m torch.distributed.run --standalone --nproc_per_node $NPROC"
fi
if [ -n "${STEPS:-}" ] && [ -n "${3:-}" ]; then
  echo "gpu_train.sh: give STEPS (fixed steps) or MINUTES (a budget), not both" >&2
  exit 2
fi
name=lamsc-default
variant=""
preset=gpu
if [ -n "${INIT:-}" ]; then
  preset=gpu-refine
fi
if [ "${ABLATION:-0}" = 1 ]; then
  [ -z "${INIT:-}" ] || { echo "gpu_train.sh: ABLATION trains a new plain codec; leave INIT out" >&2; exit 2; }
  name=lamsc-plain
  variant="--channels 8 --segments 0 --levels 1"
fi
$launch -m lamsc.cli train --preset "$preset" --data "$photos" --device "${DEVICE:-cuda}" --precision fp32 $variant \
  ${INIT:+--init "$INIT"} \
  ${3:+--minutes "$3"} ${STEPS:+--steps "$STEPS" --minutes 0} --out "$out/train" --json >"$out/train.json"
$py - "$out" "$name" <<'PY'
import shutil, sys
from pathlib import Path
from lamsc.semcom.model import LamscModel
out = Path(sys.argv[1])
LamscModel.load(out / "train" / "model").save(out / sys.argv[2], half=True)
for name in ("curves.png", "history.json"):
    shutil.copy(out / "train" / name, out / name)
PY
