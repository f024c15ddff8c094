#!/usr/bin/env bash
# Create .venv/ at the repository root and install gatelab into it (editable, with test tools).
# On a machine without an NVIDIA GPU, the CPU build of torch is installed first, so that no
# dependency pulls a multi-GB CUDA build. On a machine with one (nvidia-smi answers), a CUDA
# torch already there is kept (in .venv/, or the base Python's, which .venv/ then sees) and
# otherwise the CUDA build for the driver's CUDA version is installed; flash-attn is added on
# request: scripts/setup.sh --flash-attn, or GATELAB_FLASH_ATTN=1. Safe to rerun: a finished
# install is checked, not redone.
#   GATELAB_TORCH_INDEX=URL  install torch from this index instead of the one chosen for the driver
set -euo pipefail
cd "$(dirname "$0")/.."

flash=${GATELAB_FLASH_ATTN:-0}
for arg in "$@"; do
  case "$arg" in
    --flash-attn) flash=1 ;;
    *) echo "setup: unknown argument $arg (allowed: --flash-attn)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
stamp=.venv/.gatelab-installed
gpu=0
if nvidia-smi >/dev/null 2>&1; then gpu=1; fi
want=$( (cat pyproject.toml scripts/setup.sh; echo "gpu=$gpu flash=$flash") | sha256sum | cut -c1-16)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ "$flash" = 1 ] && [ "$gpu" = 0 ]; then
  echo "setup: flash-attn was asked for (--flash-attn or GATELAB_FLASH_ATTN=1), but no NVIDIA GPU" \
       "answers nvidia-smi here: flash-attn builds and runs only with CUDA. Rerun without it;" \
       "attention then uses torch SDPA." >&2
  exit 1
fi

pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# This machine's pip config lists local index folders that may be absent: drop those warnings.
quiet() { "$@" 2> >(grep -v "is neither a file nor a directory" >&2); }
# The torch a Python imports, if it is a CUDA build: "2.8.0+cu128 12.8"; nothing otherwise.
cuda_torch() { "$1" -c "import torch; assert torch.version.cuda; print(torch.__version__, torch.version.cuda)" 2>/dev/null || true; }

if [ "$gpu" = 0 ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  echo "setup: no NVIDIA GPU found: installing the CPU build of torch 2.13.0" >&2
  quiet "${pip[@]}" "torch==2.13.0"
else
  if [ ! -x .venv/bin/python ]; then
    if [ -n "$(cuda_torch "$PYTHON")" ]; then
      # An image with torch built for its CUDA (NGC, cloud images): use it rather than download.
      echo "setup: $PYTHON has a CUDA torch ($(cuda_torch "$PYTHON")): .venv/ will use it" >&2
      "$PYTHON" -m venv --system-site-packages .venv
    else
      "$PYTHON" -m venv .venv
    fi
  fi
  found=$(cuda_torch .venv/bin/python)
  if [ -n "$found" ]; then
    echo "setup: NVIDIA GPU found; keeping torch $found" >&2
  else
    # The newest CUDA build of torch that the driver supports (nvidia-smi prints the highest
    # CUDA version the driver runs).
    driver_cuda=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\)\.\([0-9]*\).*/\1\2/p' | head -1)
    index=${GATELAB_TORCH_INDEX:-}
    if [ -z "$index" ]; then
      for cu in 130 129 128 126 124 121 118; do
        if [ "${driver_cuda:-0}" -ge "$cu" ]; then index="https://download.pytorch.org/whl/cu$cu"; break; fi
      done
    fi
    if [ -z "$index" ]; then
      echo "setup: nvidia-smi reports CUDA '${driver_cuda:-?}', older than any torch CUDA build" \
           "(11.8 at least): update the driver, or set GATELAB_TORCH_INDEX" >&2
      exit 1
    fi
    echo "setup: NVIDIA GPU found (driver CUDA ${driver_cuda:0:-1}.${driver_cuda: -1}): installing a" \
         "CUDA build of torch from $index (several GB)" >&2
    quiet "${pip[@]}" "torch>=2.5,<2.15" --index-url "$index"
  fi
fi
echo "setup: installing gatelab and its dependencies into .venv/ (first time: 10-20 minutes here, mostly downloads)" >&2
quiet "${pip[@]}" -e ".[dev]"
if [ "$flash" = 1 ]; then
  # flash-attn's build imports torch, so it must see the venv's (no build isolation), and it
  # needs its build tools there. It fetches a prebuilt wheel for this torch/CUDA/Python when one
  # exists, else compiles (long: MAX_JOBS bounds its memory).
  echo "setup: installing flash-attn (the gpu extra) against torch $(cuda_torch .venv/bin/python)" >&2
  quiet "${pip[@]}" "setuptools>=69" wheel packaging ninja psutil
  quiet "${pip[@]}" --no-build-isolation -e ".[dev,gpu]"
  .venv/bin/python -c "import flash_attn; print('setup: flash-attn', flash_attn.__version__)" >&2
fi
echo "$want" > "$stamp"
