#!/usr/bin/env bash
# Makes .bench-venv/ in the repository root: a Python virtual environment with the Azure ML
# Python SDK pinned in requirements.txt, for `keysync bench` to run the documented procedure.
# Needs Python 3.10 or newer with venv (Debian: python3-venv). Safe to run again: pip leaves
# what is already installed alone.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.bench-venv"

"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/scripts/bench/requirements.txt"
"$venv/bin/python" -c 'import azure.ai.ml; print("azure-ai-ml", azure.ai.ml.__version__)'
echo "ready: $venv/bin/python"
