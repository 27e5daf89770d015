#!/usr/bin/env bash
# Measure operator tables on this machine's GPU for Llama-3.1-8B and Llama-2-7B (random weights, no download) and
# fit a step-time profile from each: OUT_DIR/<model>_ops.json (operator profile), OUT_DIR/<model>_profile.json
# (use as `model.profile: PATH` in a scenario), logs, and nvidia-smi's view of the GPU.
#
# Usage: scripts/calibrate_gpu.sh OUT_DIR [more `lorasim calibrate run` options, e.g. --quick]
# Needs a CUDA build of torch (pip install -e '.[calibrate]'); PYTHON selects the interpreter (default: the repo's
# .venv if present, else python3). About 1-3 minutes per model on an H100/H200; each run is capped by
# --time-budget-s 240 (repeats shrink to fit it).
set -euo pipefail
out=${1:?usage: scripts/calibrate_gpu.sh OUT_DIR [run options]}
shift
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
"$PYTHON" - <<'PY' || { echo "calibrate_gpu.sh: torch sees no CUDA device (or torch is missing)" >&2; exit 3; }
import sys, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
sys.exit(0 if torch.cuda.is_available() else 1)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/nvidia-smi.csv" 2>&1 || true
for model in llama-3.1-8b llama-2-7b; do
  start=$SECONDS
  "$PYTHON" -m lorasim.cli calibrate run --model "$model" --device cuda --time-budget-s 240 --no-progress \
    --out "$out/${model}_ops.json" "$@" 2>&1 | tee "$out/${model}_run.log"
  "$PYTHON" -m lorasim.cli calibrate fit "$out/${model}_ops.json" --out "$out/${model}_profile.json" \
    2>&1 | tee "$out/${model}_fit.log"
  echo "$model: $((SECONDS - start)) s" | tee -a "$out/timing.txt"
done
