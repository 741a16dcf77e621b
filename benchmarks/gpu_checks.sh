#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, in one run, from the repository root with lamsc installed:
#
#   sh benchmarks/gpu_checks.sh [OUT]            (OUT defaults to benchmarks/results/gpu)
#
# 1. builds kernels/ for this GPU's architecture (CMake, nvcc);
# 2. runs the gpu-marked tests (CUDA kernels bit-identical to their references, CUDA-event latencies);
# 3. benchmarks/kernels_bench.py (kernels against the torch path they replace and the copy bandwidth);
# 4. lamsc profile on the torch backend with --energy nvml (Zeus), CUDA-event graph latencies included;
# 5. where onnxruntime-gpu is installed, the same profile on ONNX Runtime's CUDA provider.
# Every step runs even when one before it failed; OUT/gpu_checks.md lists each step's exit status.
set -u
out=${1:-benchmarks/results/gpu}
mkdir -p "$out"
summary="$out/gpu_checks.md"
py=${PYTHON:-python3}
status() { echo "| $1 | $2 |" >>"$summary"; }

gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
arch=$($py -c "import torch; m, n = torch.cuda.get_device_capability(); print(f'{m}{n}')")
{
  echo "GPU checks on ${gpu:-an unnamed GPU} (sm_$arch), lamsc $(git rev-parse --short HEAD 2>/dev/null || echo '?'),"
  echo "torch $($py -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)'), $(nvcc --version | tail -1)."
  echo
  echo "| step | exit status |"
  echo "|---|---|"
} >"$summary"

cmake -S . -B build -DCMAKE_CUDA_ARCHITECTURES="$arch" >"$out/build.log" 2>&1 &&
  cmake --build build -j >>"$out/build.log" 2>&1
status "build kernels (sm_$arch)" "$?"
export LAMSC_KERNELS_LIB="$PWD/build/liblamsc_kernels.so"

# -P: import lamsc as installed, not the source folder of the same name
$py -P -m pytest -m gpu -q -p no:cacheprovider tests >"$out/gpu_tests.txt" 2>&1
rc=$?
status "pytest -m gpu ($(tail -1 "$out/gpu_tests.txt"))" "$rc"

$py -P benchmarks/kernels_bench.py --out "$out" >"$out/kernels_bench.log" 2>&1
status "benchmarks/kernels_bench.py" $?

lamsc profile --backend torch --energy nvml --json --out "$out/profile_torch" >"$out/profile_torch.json" \
  2>"$out/profile_torch.err"
status "lamsc profile --backend torch --energy nvml" $?

if $py -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
  lamsc export --out "$out/bundle" >"$out/export.log" 2>&1 &&
    lamsc profile "$out/bundle" --backend onnxruntime --energy nvml --json --out "$out/profile_ort" \
      >"$out/profile_ort.json" 2>"$out/profile_ort.err"
  status "lamsc profile on ONNX Runtime's CUDA provider" $?
else
  status "ONNX Runtime's CUDA provider: not run (onnxruntime-gpu is not installed)" "-"
fi
cat "$summary"
