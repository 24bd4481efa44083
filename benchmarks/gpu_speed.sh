#!/usr/bin/env bash
# The GPU-speed benchmark of the cifar10-resnet18 profile in one command of under 10 minutes (not a test):
#   1. per-loop figures (bench_cifar.py --loops): trainer, fine-tuning, relearning variants, evaluations;
#   2. gpu_validate.py on the real CIFAR-10: build `gaussian` seed 0 (models + reference measurements) and
#      audit NoOp, GradientDescent and Retrain on it.
# Everything lands in $OUT (default ./gpu-speed-out), tarred into one file for a device that returns few files.
#
#   CARRY=.gpu-carry bash benchmarks/gpu_speed.sh          # on a GPU machine; CARRY holds the packed
#                                                          # cifar10-images.tar.gz and any missing wheels
#   bash benchmarks/gpu_speed.sh --rehearse                # the same steps on this CPU (stand-ins)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-speed-out}
CARRY=${CARRY:-.gpu-carry}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if ls "$CARRY"/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-speed-site "$CARRY"/*.whl || exit 1
  export PYTHONPATH=/tmp/gpu-speed-site${PYTHONPATH:+:$PYTHONPATH}
fi
# The checkout, importable without installing it (as gpu_validate.py lays it out).
$PY -c "import sys; sys.path.insert(0, 'benchmarks'); import gpu_validate as g; from pathlib import Path; g.make_shim(g.REPO, Path('/tmp/gpu-speed-shim'))"
SHIM=/tmp/gpu-speed-shim${PYTHONPATH:+:$PYTHONPATH}
if [ "${1:-}" = "--rehearse" ]; then
  PYTHONPATH=$SHIM timeout 300 $PY benchmarks/bench_cifar.py --loops --quick --device cpu --out "$OUT/loops.json" 2>&1 | tee "$OUT/loops.log"
  timeout 400 $PY benchmarks/gpu_validate.py --standin --out "$OUT/validate" --deadline-s 380 --scenario gaussian \
    --methods NoOp GradientDescent 2>&1 | tee "$OUT/validate.log" | grep -v '^  |'
else
  PYTHONPATH=$SHIM timeout 200 $PY benchmarks/bench_cifar.py --loops --out "$OUT/loops.json" 2>&1 | tee "$OUT/loops.log"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/env.txt" 2>&1
  timeout 370 $PY benchmarks/gpu_validate.py --images "$CARRY/cifar10-images.tar.gz" --out "$OUT/validate" \
    --deadline-s ${VALIDATE_DEADLINE_S:-350} --scenario gaussian --methods NoOp GradientDescent Retrain 2>&1 \
    | tee "$OUT/validate.log" | grep -v '^  |'
fi
tar czf "$OUT.tar.gz" "$OUT" && echo "wrote $OUT.tar.gz"
