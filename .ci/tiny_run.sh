#!/usr/bin/env bash
# The tiny pipeline in a throwaway clone of this repository's HEAD, then:
#   .ci/tiny_run.sh           the metrics diff against the committed baseline of this CPU
#                             (.ci/tiny/metrics-<capability>) as a Markdown table, and the gate
#                             (.ci/metrics_gate.py, .ci/tolerance.yaml)
#   .ci/tiny_run.sh --update  replace this CPU's baseline with this run's metrics (make ci-baseline)
# With HUBERT_DVC_TINY_RUN naming a folder where the test suite left the metrics of its own tiny
# run of this same commit (.ci/run sets it), those are compared instead of running it again.
# One baseline per CPU capability (torch's: avx2, avx512, ...): torch's CPU kernels differ
# between them, and training amplifies the last-digit differences into moved labels and
# error rates, so a run is compared only with a run on the same kind of CPU.
# It reuses this checkout's .venv (make install first) and never touches its files
# except .ci/tiny/ with --update.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cap="$("$repo/.venv/bin/python" -c 'import torch; print(torch.backends.cpu.get_cpu_capability())' | tr '[:upper:]' '[:lower:]')"
baseline="$repo/.ci/tiny/metrics-$cap"
if [ "${1:-}" != "--update" ] && [ ! -d "$baseline" ]; then
    echo "metrics gate: no tiny baseline for this CPU ($cap) in .ci/tiny/; have: $(ls "$repo/.ci/tiny")." >&2
    echo "Run 'make ci-baseline' on a machine with this CPU and commit .ci/tiny/metrics-$cap." >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/repo"
cd "$work/repo"
ln -s "$repo/.venv" .venv
# ../shared beside the clone, as beside the checkout (the evaluate stage's real speech)
if [ -d "$repo/../shared" ]; then ln -s "$(cd "$repo/../shared" && pwd)" "$work/shared"; fi
export PYTHONPATH="$work/repo"  # the clone's code, not the checkout's (the venv installs it editable)
if [ "${1:-}" != "--update" ]; then
    # the baseline as the committed metrics/, so that `dvc metrics diff` compares the run with it
    rm -rf metrics && cp -r "$baseline" metrics
    git add -A metrics && git -c user.name=ci -c user.email=ci@localhost commit -q -m "tiny baseline"
fi
start=$(date +%s)
export PATH="$repo/.venv/bin:$PATH"
# one torch thread, as the test suite's run (make test): the baseline, the fresh run and the shared
# run must sum their floats in one order
export OMP_NUM_THREADS=1
shared="${HUBERT_DVC_TINY_RUN:-}"
if [ "${1:-}" != "--update" ] && [ -n "$shared" ] && [ -f "$shared/commit" ] \
        && [ "$(cat "$shared/commit")" = "$(git -C "$repo" rev-parse HEAD)" ]; then
    # the test suite ran this commit's tiny pipeline in a clone of its own (tests/_exp_fixtures.py,
    # `dvc exp run -S profile=tiny`): its metrics are this run's
    rm -rf metrics && cp -r "$shared/metrics" metrics
    echo "tiny pipeline: the test suite's run of $(cat "$shared/commit") (HUBERT_DVC_TINY_RUN), not run again"
else
    # what `make repro PROFILE=tiny` does, without its install step: make would find the clone's
    # pyproject.toml newer than the venv's stamp and re-point the venv's editable install at this
    # throwaway clone
    { python -m stages.compose_params profile=tiny && dvc repro; } > "$work/repro.log" 2>&1 \
        || { tail -50 "$work/repro.log"; exit 1; }
    echo "tiny pipeline: $(( $(date +%s) - start )) s"
fi
if [ "${1:-}" = "--update" ]; then
    rm -rf "$baseline" && mkdir -p "$repo/.ci/tiny" && cp -r metrics "$baseline"
    echo "baseline written to .ci/tiny/metrics-$cap: commit it"
    exit 0
fi
echo "dvc metrics diff (committed tiny baseline of this CPU, $cap -> this run):"
.venv/bin/dvc metrics diff --md HEAD
.venv/bin/python "$repo/.ci/metrics_gate.py" --baseline "$baseline" --fresh metrics \
    --tolerance "$repo/.ci/tolerance.yaml" --cpu "$cap"
