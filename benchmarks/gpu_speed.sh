#!/usr/bin/env bash
# The GPU-speed benchmark of the cifar10-resnet18 profile in one command of under 10 minutes (not a test).
# Its stages (STAGES, default "loops validate"; run in this order):
#   loops     per-loop figures (bench_cifar.py --loops): trainer (also under each of COMPILE_MODES, e.g.
#             "default reduce-overhead", and with CUDNN_BENCHMARK=1 cuDNN's autotuner), fine-tuning,
#             relearning variants, evaluations;
#   sweep     recipe_sweep.py on the real CIFAR-10: accuracy, Gaussian leakage and seconds of training
#             variants (augmentation, epochs, compile; SWEEP_VARIANTS picks some), to choose the recipes;
#   validate  gpu_validate.py on the real CIFAR-10: build SCENARIOS seed 0 (models + reference measurements)
#             and audit METHODS on them.
# Everything lands in ./gpu-speed-out, tarred into one file in $OUT (a device's return folder; default
# ./gpu-speed-out-return) with copies of the JSONs and logs, for a device that returns few files (7 at most).
# The copies are refreshed every 10 s while the stages run, so a command killed at the device's time limit still
# returns every line and step written so far (each JSON is rewritten whole after each line or step).
#
#   CARRY=.gpu-carry bash benchmarks/gpu_speed.sh          # on a GPU machine; CARRY holds the packed
#                                                          # cifar10-images.tar.gz and any missing wheels
#   bash benchmarks/gpu_speed.sh --rehearse                # the same steps on this CPU (stand-ins)
# Environment: STAGES, SCENARIOS (default gaussian), METHODS (NoOp GradientDescent Retrain), RESUME (an earlier
# gpu_validate.json: its finished steps are skipped), VALIDATE_DEADLINE_S (350), LOOPS_TIMEOUT_S (150),
# RELEARN_STEPS (300), COMPILE_MODES (none), CUDNN_BENCHMARK (off), SWEEP_VARIANTS (all), SWEEP_DEADLINE_S (300).
# SKIP_LOOPS=1 leaves out the loop benchmark (as STAGES without "loops"). WORK (default gpu-validate-work, git-ignored):
# gpu_validate's data and fixture cache, kept between calls on a warm machine, so that a second call continues
# where the first one's deadline stopped a build (shared models and fixtures already written are read, not redone).
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=gpu-speed-out          # everything, tarred at the end into ${OUT:-.}/gpu-speed-out.tar.gz
RETURN=${OUT:-$RUN-return} # a device's return folder: the JSONs are copied there as soon as they exist
CARRY=${CARRY:-.gpu-carry}
rm -rf "$RUN"; mkdir -p "$RUN" "$RETURN"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
STAGES=${STAGES:-loops validate}
[ -n "${SKIP_LOOPS:-}" ] && STAGES=${STAGES//loops/}
has() { [[ " $STAGES " == *" $1 "* ]]; }
COMPILE_ARGS="$(for m in ${COMPILE_MODES:-}; do echo --compile $m; done) ${CUDNN_BENCHMARK:+--cudnn-benchmark}"
SWEEP_ARGS=$(for v in ${SWEEP_VARIANTS:-}; do echo --variant $v; done)
if ls "$CARRY"/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-speed-site "$CARRY"/*.whl || exit 1
  export PYTHONPATH=/tmp/gpu-speed-site${PYTHONPATH:+:$PYTHONPATH}
fi
# The checkout, importable without installing it (as gpu_validate.py lays it out).
$PY -c "import sys; sys.path.insert(0, 'benchmarks'); import gpu_validate as g; from pathlib import Path; g.make_shim(g.REPO, Path('/tmp/gpu-speed-shim'))"
SHIM=/tmp/gpu-speed-shim${PYTHONPATH:+:$PYTHONPATH}
# What comes back if the device's limit kills this command: the JSONs and logs so far, copied whole (a copy is
# renamed into place, so a half-copied file never stands in $RETURN).
return_copies() {
  for f in "$RUN/loops.json" "$RUN/sweep.json" "$RUN/validate/gpu_validate.json" "$RUN"/*.log; do
    [ -f "$f" ] && cp -f "$f" "$RETURN/.$(basename "$f").part" && mv -f "$RETURN/.$(basename "$f").part" "$RETURN/$(basename "$f")"
  done
  return 0
}
( while sleep 10; do return_copies; done ) >/dev/null 2>&1 &
RETURNER=$!
trap 'kill $RETURNER 2>/dev/null' EXIT
if [ "${1:-}" = "--rehearse" ]; then
  has loops && PYTHONPATH=$SHIM timeout 300 $PY benchmarks/bench_cifar.py --loops --quick --device cpu --relearn-steps 8 \
    $COMPILE_ARGS --out "$RUN/loops.json" 2>&1 | tee "$RUN/loops.log"
  has sweep && timeout 600 $PY benchmarks/recipe_sweep.py --standin --out "$RUN/sweep.json" $SWEEP_ARGS \
    ${COMPILE_MODES:+--force-compile} 2>&1 | tee "$RUN/sweep.log"
  has validate && timeout 400 $PY benchmarks/gpu_validate.py --standin --out "$RUN/validate" --deadline-s 380 \
    $(for s in ${SCENARIOS:-gaussian}; do echo --scenario $s; done) --methods NoOp GradientDescent ${RESUME:+--resume $RESUME} 2>&1 | tee "$RUN/validate.log" | grep -v '^  |'
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$RUN/env.txt" 2>&1
  has loops && PYTHONPATH=$SHIM timeout ${LOOPS_TIMEOUT_S:-150} $PY benchmarks/bench_cifar.py --loops --relearn-steps ${RELEARN_STEPS:-300} \
    $COMPILE_ARGS --out "$RUN/loops.json" 2>&1 | tee "$RUN/loops.log"
  return_copies
  has sweep && timeout $(( ${SWEEP_DEADLINE_S:-300} + 120 )) $PY benchmarks/recipe_sweep.py --images "$CARRY/cifar10-images.tar.gz" \
    --out "$RUN/sweep.json" --deadline-s ${SWEEP_DEADLINE_S:-300} $SWEEP_ARGS 2>&1 | tee "$RUN/sweep.log"
  return_copies
  has validate && timeout $(( ${VALIDATE_DEADLINE_S:-350} + 20 )) $PY benchmarks/gpu_validate.py --images "$CARRY/cifar10-images.tar.gz" \
    --out "$RUN/validate" --work "${WORK:-gpu-validate-work}" --deadline-s ${VALIDATE_DEADLINE_S:-350} $(for s in ${SCENARIOS:-gaussian}; do echo --scenario $s; done) \
    --methods ${METHODS:-NoOp GradientDescent Retrain} ${RESUME:+--resume $RESUME} 2>&1 | tee "$RUN/validate.log" | grep -v '^  |'
fi
kill $RETURNER 2>/dev/null; wait $RETURNER 2>/dev/null
return_copies
tar czf "$RETURN/$RUN.tar.gz" "$RUN" && echo "wrote $RETURN/$RUN.tar.gz"
