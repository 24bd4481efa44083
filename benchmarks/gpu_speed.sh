#!/usr/bin/env bash
# The GPU-speed benchmark of the cifar10-resnet18 profile in one command of under 10 minutes (not a test):
#   1. per-loop figures (bench_cifar.py --loops): trainer, fine-tuning, relearning variants, evaluations;
#   2. gpu_validate.py on the real CIFAR-10: build `gaussian` seed 0 (models + reference measurements) and
#      audit NoOp, GradientDescent and Retrain on it.
# Everything lands in ./gpu-speed-out, tarred into one file in $OUT (a device's return folder; default
# ./gpu-speed-out-return) with copies of the two JSONs, for a device that returns few files.
#
#   CARRY=.gpu-carry bash benchmarks/gpu_speed.sh          # on a GPU machine; CARRY holds the packed
#                                                          # cifar10-images.tar.gz and any missing wheels
#   bash benchmarks/gpu_speed.sh --rehearse                # the same steps on this CPU (stand-ins)
# Environment: SCENARIOS (default gaussian), METHODS (NoOp GradientDescent Retrain), RESUME (an earlier
# gpu_validate.json: its finished steps are skipped), VALIDATE_DEADLINE_S (350), LOOPS_TIMEOUT_S (150),
# RELEARN_STEPS (300). SKIP_LOOPS=1 leaves out the loop benchmark.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=gpu-speed-out          # everything, tarred at the end into ${OUT:-.}/gpu-speed-out.tar.gz
RETURN=${OUT:-$RUN-return} # a device's return folder: the JSONs are copied there as soon as they exist
CARRY=${CARRY:-.gpu-carry}
rm -rf "$RUN"; mkdir -p "$RUN" "$RETURN"
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
  PYTHONPATH=$SHIM timeout 300 $PY benchmarks/bench_cifar.py --loops --quick --device cpu --relearn-steps 8 --out "$RUN/loops.json" 2>&1 | tee "$RUN/loops.log"
  cp "$RUN/loops.json" "$RETURN/" 2>/dev/null
  timeout 400 $PY benchmarks/gpu_validate.py --standin --out "$RUN/validate" --deadline-s 380 --scenario gaussian \
    --methods NoOp GradientDescent ${RESUME:+--resume $RESUME} 2>&1 | tee "$RUN/validate.log" | grep -v '^  |'
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$RUN/env.txt" 2>&1
  [ -n "${SKIP_LOOPS:-}" ] || PYTHONPATH=$SHIM timeout ${LOOPS_TIMEOUT_S:-150} $PY benchmarks/bench_cifar.py --loops --relearn-steps ${RELEARN_STEPS:-300} \
    --out "$RUN/loops.json" 2>&1 | tee "$RUN/loops.log"
  cp "$RUN/loops.json" "$RETURN/" 2>/dev/null
  timeout $(( ${VALIDATE_DEADLINE_S:-350} + 20 )) $PY benchmarks/gpu_validate.py --images "$CARRY/cifar10-images.tar.gz" \
    --out "$RUN/validate" --deadline-s ${VALIDATE_DEADLINE_S:-350} $(for s in ${SCENARIOS:-gaussian}; do echo --scenario $s; done) \
    --methods ${METHODS:-NoOp GradientDescent Retrain} ${RESUME:+--resume $RESUME} 2>&1 | tee "$RUN/validate.log" | grep -v '^  |'
fi
cp "$RUN/validate/gpu_validate.json" "$RETURN/" 2>/dev/null
tar czf "$RETURN/$RUN.tar.gz" "$RUN" && echo "wrote $RETURN/$RUN.tar.gz"
