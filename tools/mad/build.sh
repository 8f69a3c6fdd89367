#!/usr/bin/env bash
# Rebuild facegate's MAD model from the evaluation photos, end to end (about 30 minutes on
# 2 cores):
#   tools/mad/build.sh FACES_DIR [WORK_DIR]
# FACES_DIR is laid out like ../shared/data/faces (lfw/images/<Name>/*.jpg). WORK_DIR
# (default /var/cache/facegate/mad) receives every intermediate file; nothing derived from
# the photos is written into the repository except the model and its report.
# Needs: ./facegate.sh setup done (models fetched, release binary built).
set -euo pipefail
cd "$(dirname "$0")/../.."
faces=${1:?usage: tools/mad/build.sh FACES_DIR [WORK_DIR]}
work=${2:-/var/cache/facegate/mad}
venv=.facegate/madvenv
mkdir -p "$work"
export OMP_NUM_THREADS=1

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import cv2, jax, optax, sklearn, scipy, onnxruntime' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tools/mad/requirements.txt
fi
bin=${CARGO_TARGET_DIR:-target}/release/facegate
# The crops are the model's input: extract them with no MAD model loaded, so that the
# recipe also works before the first model exists.
export FACEGATE__PIPELINE__MAD__FILE=""

"$bin" faces "$faces/lfw/images" --out "$work/lfw.jsonl" --crops "$work/crops/lfw"
"$venv/bin/python" tools/mad/morph.py --faces "$work/lfw.jsonl" --images "$faces/lfw/images" \
    --landmarks models/files/fr_landmark.onnx --out "$work/set"
"$bin" faces "$work/set" --out "$work/set.jsonl" --crops "$work/crops/set"
"$venv/bin/python" tools/mad/train.py --set "$work/set" --lfw-crops "$work/crops/lfw" --set-crops "$work/crops/set" \
    --out models/mad/facegate-mad-v1.onnx --report models/mad/report.json
sha256sum models/mad/facegate-mad-v1.onnx
echo "then: put that sha256 in models/manifest.toml and report.json's threshold in pipeline.mad.threshold"
echo "(config/default.toml and models/src/config.rs), rebuild, python3 models/fetch.py, and measure:"
echo "  $bin eval mad --data $work/set/eval"
