#!/usr/bin/env bash
# Create .venv/ at the repository root and install gatelab into it (editable, with test tools).
# On a machine without an NVIDIA GPU, the CPU build of torch is installed first, so that no
# dependency pulls a multi-GB CUDA build. Safe to rerun: a finished install is checked, not redone.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
stamp=.venv/.gatelab-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# This machine's pip config lists local index folders that may be absent: drop those warnings.
quiet() { "$@" 2> >(grep -v "is neither a file nor a directory" >&2); }

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "setup: no NVIDIA GPU found: installing the CPU build of torch 2.13.0" >&2
  quiet "${pip[@]}" "torch==2.13.0"
fi
echo "setup: installing gatelab and its dependencies into .venv/ (first time: 10-20 minutes here, mostly downloads)" >&2
quiet "${pip[@]}" -e ".[dev]"
echo "$want" > "$stamp"
