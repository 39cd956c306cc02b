#!/usr/bin/env bash
# The accelerator table of issue 18 on a fresh GPU machine, in one call:
#
#   experiments/bench/device.sh OUT_DIR [--dry-run] [more device_table.py options]
#
# 1. An environment (BERTLAB_DEVICE_ENV, default auto):
#    pip    two virtual environments under /tmp, so the CUDA libraries of the two frameworks
#           never meet: bertlab (this checkout, with its setup.cfg pins) + jax[cuda12]==0.10.2,
#           and torch==2.13.0 (PyPI's Linux x86-64 wheel is the CUDA build) +
#           transformers==4.57.6. BERTLAB_WHEELS=DIR installs from a folder of wheels alone.
#    image  the machine's own python3 (this workplace's GPU image holds jax, flax, optax, torch
#           and transformers, newer than our pins: the table names the versions it ran), with
#           this checkout on PYTHONPATH. Nothing is installed.
#    auto   pip when the package index answers within 5 s, else image (the reason is printed).
#    BERTLAB_PYTHON=... (and BERTLAB_TORCH_PYTHON=...) skip all of this and use those.
# 2. Checks that JAX and PyTorch see the GPU (with --dry-run a CPU is accepted).
# 3. The table (experiments/bench/device_table.py): < 8 minutes, written to OUT_DIR as
#    device_table.md, device_table.json and work.tar.gz (raw rows, worker logs), plus this
#    script's log device_sh.log. A rerun on the same machine reuses the compiled programs.
set -uo pipefail

OUT=${1:?usage: experiments/bench/device.sh OUT_DIR [--dry-run] [device_table.py options]}
shift
DRY=0
for arg in "$@"; do [ "$arg" = "--dry-run" ] && DRY=1; done
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device_sh.log") 2>&1
START=$(date +%s)
say() { echo "[device.sh $(($(date +%s) - START)) s] $*"; }
fail() { say "FAILED: $*"; exit 1; }

say "repository $REPO at $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'); out $OUT"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader || say "no nvidia-smi"

index_answers() {
    local url=${PIP_INDEX_URL:-https://pypi.org/simple/}
    python3 - "$url" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1] + "pip/", timeout=5)
except Exception as e:
    print(f"package index {sys.argv[1]} not reachable: {type(e).__name__}: {e}")
    sys.exit(1)
EOF
}

setup_pip() {
    local opts=(-q --disable-pip-version-check --timeout 20 --retries 2)
    [ -n "${BERTLAB_WHEELS:-}" ] && opts+=(--no-index --find-links "$BERTLAB_WHEELS")
    local jaxenv=/tmp/bertlab-venv-jax torchenv=/tmp/bertlab-venv-torch
    say "pip: $jaxenv <- bertlab + jax[cuda12]==0.10.2"
    python3 -m venv "$jaxenv" || return 1
    "$jaxenv/bin/pip" install "${opts[@]}" "$REPO" "jax[cuda12]==0.10.2" \
        || { say "pip install of bertlab + jax[cuda12]==0.10.2 failed"; return 1; }
    say "pip: $torchenv <- torch==2.13.0 + transformers==4.57.6"
    python3 -m venv "$torchenv" || return 1
    "$torchenv/bin/pip" install "${opts[@]}" "torch==2.13.0" "transformers==4.57.6" numpy \
        || { say "pip install of torch==2.13.0 + transformers==4.57.6 failed"; return 1; }
    JAX_PY=$jaxenv/bin/python
    TORCH_PY=$torchenv/bin/python
}

setup_image() {
    JAX_PY=$(command -v python3)
    TORCH_PY=$JAX_PY
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    say "image: $JAX_PY with $REPO on PYTHONPATH (nothing installed)"
}

if [ -n "${BERTLAB_PYTHON:-}" ]; then
    JAX_PY=$BERTLAB_PYTHON
    TORCH_PY=${BERTLAB_TORCH_PYTHON:-$BERTLAB_PYTHON}
    say "given: JAX $JAX_PY, PyTorch $TORCH_PY"
else
    case "${BERTLAB_DEVICE_ENV:-auto}" in
        pip) setup_pip || fail "pip environment (see above)" ;;
        image) setup_image ;;
        auto)
            if [ -n "${BERTLAB_WHEELS:-}" ] || index_answers; then
                setup_pip || { say "falling back to the image's python3"; setup_image; }
            else
                say "no package index: using the image's python3"
                setup_image
            fi ;;
        *) fail "BERTLAB_DEVICE_ENV=${BERTLAB_DEVICE_ENV} (pip | image | auto)" ;;
    esac
fi

say "checking that both frameworks see the accelerator"
"$JAX_PY" - "$DRY" <<'EOF' || fail "JAX check (above)"
import sys
import jax, flax, optax
devices = jax.devices()
print(f"jax {jax.__version__} flax {flax.__version__} optax {optax.__version__}: {devices}")
if devices[0].platform != "gpu" and sys.argv[1] != "1":
    sys.exit(f"JAX sees no GPU (platform {devices[0].platform}); is the CUDA jaxlib plugin "
             f"installed? (pip: jax[cuda12]; image: jax-cuda13-plugin)")
import bertlab.models  # the checkout imports with these versions
EOF
TORCH_OK=1
"$TORCH_PY" - "$DRY" <<'EOF' || TORCH_OK=0
import sys
import torch, transformers
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) transformers "
      f"{transformers.__version__}: {torch.cuda.get_device_name(0) if cuda else 'no GPU'}")
if not cuda and sys.argv[1] != "1":
    sys.exit("PyTorch sees no GPU: a CPU-only torch wheel?")
EOF
EXTRA=()
if [ "$TORCH_OK" = 0 ]; then
    say "PyTorch check failed (above): the table runs without the peer"
    EXTRA+=(--skip-torch)
fi

say "the table"
LIMIT=540  # 420 s of rows + the workers' grace; a dry run on a busy CPU may take longer
[ "$DRY" = 1 ] && LIMIT=1800
timeout "$LIMIT" "$JAX_PY" "$REPO/experiments/bench/device_table.py" "$OUT" --python "$JAX_PY" \
    --torch-python "$TORCH_PY" "${EXTRA[@]}" "$@"
CODE=$?
if [ "$CODE" = 124 ]; then
    say "the table was stopped at $LIMIT s: the report of the rows so far"
    "$JAX_PY" "$REPO/experiments/bench/device_table.py" "$OUT" --report-only >/dev/null
fi
say "done (exit $CODE); $(ls "$OUT" | tr '\n' ' ')"
exit "$CODE"
