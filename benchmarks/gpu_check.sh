#!/usr/bin/env bash
# The GPU check of engramsim, in one command for a lent CUDA machine (an H200):
#   1. profile this machine (full sweeps of what GPU validation reads, time-bounded),
#   2. validate --quick against that profile (the real model on the GPU vs the simulator),
#   3. the GPU tests (pytest -m gpu).
#
# Through the device tool, from the repository root, carrying nothing:
#   run(command="bash benchmarks/gpu_check.sh $OUT", timeout_s=540)
# What comes back under $OUT: profile-h200.json, validate-h200.json, and a log per stage
# (env.log, profile.log, validate.log, pytest-gpu.log). Commit the two JSON files under
# profiles/ (e.g. profiles/validation/) and put validate's table in the README.
#
# Installs nothing (the machine reaches no network): it needs python with torch (CUDA build),
# numpy, click, rich, simpy and pytest already there; env.log says what was found.
# Time: the profile is interrupted at PROFILE_S (default 240 s) with SIGINT, which saves what was
# measured, marked partial; validate --quick takes under 3 minutes on an H200 (bounded at
# VALIDATE_S, default 200 s); the GPU tests under a minute. Exits non-zero if a stage fails.
set -euo pipefail

OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
PROFILE_S=${PROFILE_S:-240}
VALIDATE_S=${VALIDATE_S:-200}
# Seconds of validation rounds (the rest of VALIDATE_S is model setup, timing and simulation).
VALIDATE_BUDGET_S=${VALIDATE_BUDGET_S:-120}
PYTEST_S=${PYTEST_S:-90}
# The benchmarks GPU validation reads (engramsim.validate.GPU_PROFILE_BENCHMARKS); "all" for every one.
PROFILE_ONLY=${PROFILE_ONLY:-dram_gather,memcpy,hash,hbm_gather,h2d,d2h,uva_gather,copy_pipeline,overlap_gpu}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."

stage() { echo "== $(date +%T) $*" | tee -a "$OUT/stages.log"; }

stage "environment"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python - <<'PY'
import sys, torch, numpy, click, rich, simpy, pytest  # fails here, with the missing name, if absent
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "numpy", numpy.__version__, "simpy", simpy.__version__)
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch")
print("device", torch.cuda.get_device_name(0))
PY
} 2>&1 | tee "$OUT/env.log"

stage "profile (full sweeps of $PROFILE_ONLY, bounded at ${PROFILE_S}s)"
only=()
[ "$PROFILE_ONLY" = all ] || only=(--only "$PROFILE_ONLY")
rc=0
timeout -k 30 -s INT "$PROFILE_S" python cli.py profile "${only[@]}" --out "$OUT/profile-h200.json" \
  2>&1 | tee "$OUT/profile.log" || rc=$?
# 124: the bound was reached and the interrupted profile was saved (marked partial); keep going.
if [ "$rc" -ne 0 ] && ! { [ "$rc" -eq 124 ] && [ -s "$OUT/profile-h200.json" ]; }; then
  stage "profile failed (exit $rc)"; exit "$rc"
fi

stage "validate --quick (bounded at ${VALIDATE_S}s)"
timeout -k 10 "$VALIDATE_S" python cli.py validate --quick --profile "$OUT/profile-h200.json" --json \
  --budget-s "$VALIDATE_BUDGET_S" > "$OUT/validate-h200.json" 2> "$OUT/validate.log" || { rc=$?; tail -20 "$OUT/validate.log"; stage "validate failed (exit $rc)"; exit "$rc"; }
python - "$OUT/validate-h200.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
print(f"rounds {data['rounds']} (kept {data['rounds_kept']}), stopped by {data['stopped_by']}, "
      f"worst CI half-width {data['worst_overhead_ci_half_width_pp']:.2f} pp")
print(f"{'placement':<22}{'measured':>12}{'predicted':>12}{'error':>9}{'overhead meas [CI] / pred':>34}"
      f"{'consistent':>12}{'worst step':>12}")
for c in data["cases"]:
    lo, hi = c["measured_overhead_ci_pp"]
    worst = max((abs(s["error_pct"]) for s in c["per_step"]), default=0.0)
    print(f"{c['placement']:<22}{c['measured_tok_s']:>12,.0f}{c['predicted_tok_s']:>12,.0f}{c['error_pct']:>+8.1f}%"
          f"{c['measured_overhead_pct']:>+10.1f}% [{lo:+.1f}, {hi:+.1f}] / {c['predicted_overhead_pct']:+.1f}%"
          f"{str(c['consistent']):>12}{worst:>11.1f}%")
PY

stage "pytest -m gpu (bounded at ${PYTEST_S}s)"
timeout -k 10 "$PYTEST_S" python -m pytest -m gpu -q -rs tests 2>&1 | tee "$OUT/pytest-gpu.log"

stage "done"
