#!/usr/bin/env bash
# Build (once) the interpreter a peer of `fmgauge quantize compare --peers PEER` runs in. Each peer pins other
# transformers / torch versions than fmgauge (llmcompressor 0.14: transformers<=5.17, torch<=2.14; GPTQModel 7.7:
# transformers>=5.20), so each gets its own venv.
#   usage: scripts/peers-venv.sh llmcompressor|gptqmodel      (prints the venv's python on the last line)
#   FMGAUGE_PEERS_ROOT  where (default: ~/.cache/fmgauge/peers)
set -euo pipefail
peer="${1:?usage: scripts/peers-venv.sh llmcompressor|gptqmodel}"
case "$peer" in
  llmcompressor) pins=("llmcompressor==0.14.0.1" "transformers==5.17.0" "torch==2.14.0" "compressed-tensors==0.19.0" "datasets") ;;
  gptqmodel) pins=("gptqmodel==7.7.0" "optimum==2.3.0" "transformers==5.24.0" "torch==2.14.1" "datasets") ;;
  *) echo "unknown peer $peer (llmcompressor | gptqmodel)" >&2; exit 2 ;;
esac
python="${PYTHON:-python3}"
venv="${FMGAUGE_PEERS_ROOT:-$HOME/.cache/fmgauge/peers}/$peer"
if [ ! -f "$venv/.complete" ]; then
  echo "[peers] creating $venv (first run only)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q "${pins[@]}" 2>&1 | grep -v -e "^WARNING: Location" -e "^\[notice\]" >&2 || true
  "$venv/bin/python" -c "import $peer" \
    || { echo "[peers] installing $peer failed (see above); nothing was marked complete" >&2; exit 1; }
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
