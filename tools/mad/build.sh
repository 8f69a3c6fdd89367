#!/usr/bin/env bash
# Rebuild facegate's MAD model from the evaluation photos, end to end (about 3.5 hours on
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
bin=${CARGO_TARGET_DIR:-target}/release/facegate-tools
# The crops are the model's input: extract them with no MAD model loaded, so that the
# recipe also works before the first model exists.
export FACEGATE__PIPELINE__MAD__FILE=""

"$bin" faces "$faces/lfw/images" --out "$work/lfw.jsonl" --crops "$work/crops/lfw" --aligned "$work/aligned/lfw"
# 24,000 training morphs and 16,000 post-processed bona fide copies (the 4,172 training photos
# about four times each, each copy processed anew); validation keeps its own random stream
# and sizes, 3,000 morphs and 1,333 copies.
"$venv/bin/python" tools/mad/morph.py --faces "$work/lfw.jsonl" --images "$faces/lfw/images" \
    --landmarks models/files/fr_landmark.onnx --out "$work/set" \
    --morphs 8000 --bona-post 16000 --val-morphs 1000 --val-bona-post 1333
"$bin" faces "$work/set" --out "$work/set.jsonl" --crops "$work/crops/set" --aligned "$work/aligned/set"
data=(--set "$work/set" --lfw-crops "$work/crops/lfw" --set-crops "$work/crops/set")
aligned=(--lfw-aligned "$work/aligned/lfw" --set-aligned "$work/aligned/set")

# Morphs made by another tool, FaceMorpher (PyPI), for the first network: trained on two tools'
# morphs it does better on a third it never saw (BENCHMARKS.md). Its Stasm landmarker has no
# Linux wheel and compiles against the system's OpenCV, in a venv of its own.
fmvenv=.facegate/fmvenv
if [ ! -x "$fmvenv/bin/python" ] || ! "$fmvenv/bin/python" -c 'import facemorpher, stasm' 2>/dev/null; then
    [ -d /usr/include/opencv4 ] || { echo "FaceMorpher's Stasm needs OpenCV's headers: apt-get install libopencv-dev" >&2; exit 1; }
    python3 -m venv "$fmvenv"
    "$fmvenv/bin/python" -m pip install --quiet --disable-pip-version-check -r tools/mad/requirements.txt setuptools==65.5.0 wheel==0.48.0
    CFLAGS=-I/usr/include/opencv4 "$fmvenv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-build-isolation -r tools/mad/requirements-facemorpher.txt
fi
"$fmvenv/bin/python" tools/mad/facemorpher_set.py --set "$work/set" --images "$faces/lfw/images" \
    --out "$work/fm-train" --split train --pairs 4000
"$bin" faces "$work/fm-train" --out "$work/fm-train.jsonl" --crops "$work/crops/fm-train"

# Two networks, different residual statistics, training sets and seeds, two on the
# recognizer's feature maps (of the MAD crop's centre and of the aligned face) and the
# recognizer's last stage fine-tuned on the aligned face; ensemble.py
# joins them (the first two on the crop and its mirror image) with a linear model on the
# recognizer's embeddings (from the `faces` outputs above) and sets the threshold on validation.
"$venv/bin/python" tools/mad/train.py "${data[@]}" --extra-set "$work/fm-train" --extra-crops "$work/crops/fm-train" \
    --moments abs --seed 20261126 --out "$work/member-abs-fm.onnx" --report "$work/member-abs-fm.json"
"$venv/bin/python" tools/mad/train.py "${data[@]}" --moments abs,sq --seed 20261127 \
    --out "$work/member-abs-sq.onnx" --report "$work/member-abs-sq.json"
"$venv/bin/python" tools/mad/train_maps.py "${data[@]}" --view centre --seed 20261127 --recognizer models/files/w600k_mbf.onnx \
    --out "$work/member-maps.onnx" --report "$work/member-maps.json"
"$venv/bin/python" tools/mad/train_maps.py "${data[@]}" "${aligned[@]}" --view aligned --seed 20261128 \
    --recognizer models/files/w600k_mbf.onnx --out "$work/member-maps-aligned.onnx" --report "$work/member-maps-aligned.json"
"$venv/bin/python" tools/mad/train_tail.py "${data[@]}" "${aligned[@]}" --view aligned --seed 20261129 \
    --recognizer models/files/w600k_mbf.onnx --out "$work/member-tail-aligned.onnx" --report "$work/member-tail-aligned.json"
"$venv/bin/python" tools/mad/ensemble.py "${data[@]}" "${aligned[@]}" --out "$work/facegate-mad-v8.onnx" --report "$work/report-v8.json" \
    --embeddings "$work/lfw.jsonl" "$work/set.jsonl" --recognizer models/files/w600k_mbf.onnx \
    --maps "$work/member-maps.onnx" --maps "$work/member-maps-aligned.onnx" --maps "$work/member-tail-aligned.onnx" --calibrate \
    "$work/member-abs-sq.onnx" "$work/member-abs-fm.onnx"
# The shipped model keeps four of those six members: the fine-tuned tail and the embedding
# model made APCER on tools the model never saw worse (members.py table; BENCHMARKS.md).
# members.py reads every member's logit out of the joined graph, re-reads the weights of the
# four on validation, calibrates and writes them as one model with its contract in its
# metadata (threshold at validation BPCER 1 %, crop, version).
faces_args=(--faces "$work/lfw.jsonl" "$work/crops/lfw" "$work/aligned/lfw" --faces "$work/set.jsonl" "$work/crops/set" "$work/aligned/set")
"$venv/bin/python" tools/mad/members.py logits --model "$work/facegate-mad-v8.onnx" --recognizer models/files/w600k_mbf.onnx \
    "${faces_args[@]}" --out "$work/logits.csv"
"$venv/bin/python" tools/mad/members.py build --model "$work/facegate-mad-v8.onnx" --recognizer models/files/w600k_mbf.onnx \
    --logits "$work/logits.csv" "${data[@]}" --subset abs-sq,abs-fm,maps-centre,maps-aligned --weights refit \
    "${faces_args[@]}" --version facegate-mad-v9 --context 1.5 --out models/mad/facegate-mad-v9.onnx
# The image-only facegate-mad-v2.onnx (for other recognizers), which this recipe does not
# make, is ensemble.py without --embeddings, --maps and --recognizer on two train.py networks:
# abs trained without --extra-set, and abs,sq.
sha256sum models/mad/facegate-mad-v9.onnx
echo "then: put that sha256 in models/manifest.toml (the model carries its own threshold), python3 models/fetch.py, and measure:"
echo "  $bin eval mad --data $work/set/eval"
