#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md in one go, on a machine whose python3 already has
# a CUDA build of PyTorch (the package itself is used from src/, nothing is installed):
#   1. the test suite on the GPU (TAILMIX_TEST_DEVICE=cuda), which exercises the CUDA paths;
#   2. train_speed.py and mixer_cost.py on the GPU;
#   3. the timed unit of research: a full 200-epoch ResNet-32 CIFAR-10-LT ratio-100 run
#      (configs/cifar10_lt.yaml, evaluation every 10 epochs), wall time from the shell,
#      eagerly and with train.compile=reduce-overhead (CUDA graphs);
#   4. optional, with FAMILY=1: the mixing family side by side at 200 epochs, 3 seeds
#      (benchmarks/suites/cifar10_lt_family_paper.yaml: 39 runs, resumable; run it again to
#      go on where it stopped).
#
# Usage: [FAMILY=1] benchmarks/gpu_figures.sh DATA_ROOT [OUT_DIR]
#   DATA_ROOT  CIFAR-10 root or the JPEG image-folder zip of CIFAR-10-LT
#   OUT_DIR    where logs and the run folder go (default: runs/gpu-figures)
set -euo pipefail
data=${1:?usage: benchmarks/gpu_figures.sh DATA_ROOT [OUT_DIR]}
out=${2:-runs/gpu-figures}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export TAILMIX_CACHE=${TAILMIX_CACHE:-$out/cache}
py=${PYTHON:-python3}

$py -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print('torch', torch.__version__, '|', torch.cuda.get_device_name(0))" | tee "$out/device.txt"

echo "== tests on cuda" | tee "$out/tests.txt"
TAILMIX_TEST_DEVICE=cuda $py -m pytest -q -x -p no:cacheprovider tests 2>&1 \
    | tail -n 30 | tee -a "$out/tests.txt"

echo "== train_speed.py" | tee "$out/speed.txt"
$py benchmarks/train_speed.py --data-root "$data" --device cuda --steps 200 --repeats 3 2>&1 \
    | tee -a "$out/speed.txt"
$py benchmarks/mixer_cost.py --device cuda 2>&1 | tee -a "$out/speed.txt"
$py benchmarks/augment_cost.py --device cuda 2>&1 | tee -a "$out/speed.txt"

# The 200-epoch run eagerly, then with CUDA graphs through torch.compile.
for compile in false reduce-overhead; do
  run="$out/run200-compile-$compile"
  echo "== 200-epoch run, train.compile=$compile" | tee "$run.txt"
  rm -rf "$run"
  start=$(date +%s.%N)
  $py -m tailmix train -c configs/cifar10_lt.yaml --data-root "$data" --out "$run" \
      --set train.compile=$compile --no-progress 2>&1 | tail -n 20 | tee -a "$run.txt"
  end=$(date +%s.%N)
  $py - "$start" "$end" "$run/metrics.json" <<'EOF' | tee -a "$run.txt"
import json, sys
start, end, path = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
m = json.load(open(path))
images = 200 * sum(m["class_counts"])
print(f"200-epoch run: shell wall {end - start:.1f} s (process start to exit); run wall "
      f"{m['wall_time_s']:.1f} s; training {m['train_time_s']:.1f} s = "
      f"{images / m['train_time_s']:.0f} training img/s; final top-1 {m['final']['top1']:.2f}")
EOF
done

if [ "${FAMILY:-0}" = 1 ]; then
  echo "== the mixing family, 200 epochs, 3 seeds" | tee "$out/family.txt"
  $py -m tailmix bench benchmarks/suites/cifar10_lt_family_paper.yaml --data-root "$data" \
      --out "$out/results" 2>&1 | tail -n 40 | tee -a "$out/family.txt"
fi
