#!/usr/bin/env bash
# The acceptance check of `engramsim validate` (issue #15), for a quiet machine: two runs of
# `validate --quick` in a row, each saved under profiles/validation/, then the verdict of each:
# every case consistent, and every per-step median error within 10%.
#
#   bash benchmarks/validate_twice.sh [NAME]     # NAME defaults to <hostname>-cpu-<date>
#
# Writes profiles/validation/NAME-run1.json and NAME-run2.json (commit them) and the raw
# measurements of each run to ${MEASURED_DIR:-/tmp}/NAME-runN.pkl (for `validate --replay`; not
# committed: over 1 MB), and exits non-zero unless both runs pass. Each run takes about 6 minutes on a 2-core machine
# (profile, then rounds until the overhead CIs are within +-1 pp or BUDGET_S runs out).
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:-$(hostname)-cpu-$(date -u +%F)}
BUDGET_S=${BUDGET_S:-300}
MEASURED_DIR=${MEASURED_DIR:-/tmp}
FLAGS=${VALIDATE_FLAGS:---quick}  # VALIDATE_FLAGS=--tiny: a seconds-long smoke test of this script
status=0
for run in 1 2; do
  out="profiles/validation/${NAME}-run${run}.json"
  echo "== run $run -> $out"
  python cli.py validate $FLAGS --budget-s "$BUDGET_S" --save "$out" --save-measured "$MEASURED_DIR/${NAME}-run${run}.pkl"
  python - "$out" <<'PY' || status=1
import json, sys
d = json.load(open(sys.argv[1]))
bad = [c["placement"] for c in d["cases"] if not c["consistent"]]
print(f"rounds {d['rounds']} (kept {d['rounds_kept']}), stopped by {d['stopped_by']}, "
      f"CI half-width up to {d['worst_overhead_ci_half_width_pp']:.2f} pp; "
      f"worst per-step error {d['worst_step_error_pct']:.1f}%; inconsistent: {', '.join(bad) or 'none'}")
sys.exit(0 if not bad and d["worst_step_error_pct"] <= 10 else 1)
PY
done
exit $status
