#!/usr/bin/env bash
# Trains the shipped default in a fixed wall-clock budget on one GPU (or NPROC GPUs), from the repository root
# with lamsc installed:
#
#   sh benchmarks/gpu_train.sh PHOTOS OUT [MINUTES]
#   NPROC=4 sh benchmarks/gpu_train.sh PHOTOS OUT [MINUTES]   # data-parallel on 4 GPUs under torchrun
#
# With NPROC > 1 each step trains on NPROC x the preset's batch (one batch per GPU), in the same budget.
# PHOTOS: the folder ../shared/data/photos.sh builds (a segments.npz beside the photographs' run folder is
# reused: put one in OUT/train to skip segmenting). MINUTES: the training budget (default: the gpu preset's).
# Writes OUT/lamsc-default.{safetensors,json} (fp16 weights, what ships in semcom/default_model/),
# OUT/curves.png, OUT/history.json and OUT/train.json; the run itself (resumable) stays in OUT/train.
set -eu
photos=${1:?usage: gpu_train.sh PHOTOS OUT [MINUTES]}
out=${2:?usage: gpu_train.sh PHOTOS OUT [MINUTES]}
py=${PYTHON:-python3}
mkdir -p "$out/train"
launch=$py
if [ "${NPROC:-1}" -gt 1 ]; then  # torchrun: one process per GPU; rank 0 alone writes train.json
  launch="$py -m torch.distributed.run --standalone --nproc_per_node $NPROC"
fi
$launch -m lamsc.cli train --preset gpu --data "$photos" --device "${DEVICE:-cuda}" --precision fp32 \
  ${3:+--minutes "$3"} --out "$out/train" --json >"$out/train.json"
$py - "$out" <<'PY'
import shutil, sys
from pathlib import Path
from lamsc.semcom.model import LamscModel
out = Path(sys.argv[1])
LamscModel.load(out / "train" / "model").save(out / "lamsc-default", half=True)
for name in ("curves.png", "history.json"):
    shutil.copy(out / "train" / name, out / name)
PY
