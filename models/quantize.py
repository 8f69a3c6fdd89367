#!/usr/bin/env python3
"""Make the optional INT8 detector and recognizer from the registry files, reproducibly.

Static quantization with ONNX Runtime's own tools (onnxruntime.quantization, pinned to the
runtime the service loads, 1.31.1): weights INT8 per output channel, activations UINT8 per
tensor from a calibration set this script builds the same way every time from LFW photos:

* recognizer: 200 photos of 111 LFW View 2 fold-1 people (every 2nd photo of every 4th
  person by name, see calibration_photos), each face detected, chosen and aligned to
  112x112 as the service does it (models/src/detect.rs, subject.rs, align.rs: the crops
  equal `facegate-tools faces --aligned`'s within one level), RGB, (x - 127.5) / 127.5;
* detector: the same 200 photos as the service feeds them (BGR minus (104, 117, 127),
  longer side at most 640: LFW's 150x150 as they are), and 40 NUAA bona fide 640x480
  webcam frames, the size a camera sends.

The people evaluated (`facegate-tools eval lfw` on folds 2-5, BENCHMARKS.md "INT8 models")
are never among those calibrated on: View 2 folds are person-disjoint.

Usage:
  python models/quantize.py [--data ../shared/data]
      writes models/files/retinaface-mnet025-int8.onnx and w600k_mbf-int8.onnx, prints
      their sha256 (the recognizer's goes in pipeline.recognizer.sha256).
  python models/quantize.py bench [--runs 100]
      ONNX Runtime alone, FP32 against INT8, one intra-op thread, at the service's input
      sizes; median of the runs.

Needs a venv with onnxruntime==1.31.1, onnx==1.23.2, numpy==2.4.6 and pillow==13.0.0
(README, "INT8 models"). The INT8 files are derived from the registry files and carry their
licences (the recognizer's: InsightFace, non-commercial research use only): models/files is
git-ignored and they are never committed.
"""
import argparse
import csv
import hashlib
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

HERE = Path(__file__).resolve().parent
FILES = HERE / "files"
PINNED = {"onnxruntime": "1.31.1", "onnx": "1.23.2"}

DETECTOR = "retinaface-mnet025.onnx"
RECOGNIZER = "w600k_mbf.onnx"
OUTPUT = {DETECTOR: "retinaface-mnet025-int8.onnx", RECOGNIZER: "w600k_mbf-int8.onnx"}

# models/src/config.rs defaults: the service's own numbers.
MEAN_BGR = np.array([104.0, 117.0, 127.0], dtype=np.float32)
DET_MAX_SIDE, DET_SCORE, DET_NMS = 640, 0.8, 0.4
STRIDES = [(8, (16.0, 32.0)), (16, (64.0, 128.0)), (32, (256.0, 512.0))]
VARIANCE = (0.1, 0.2)
CENTRE_WEIGHT = 0.75
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
REC_SIZE, REC_MEAN, REC_STD = 112, 127.5, 127.5

# How each file is quantized: QDQ (QOperator was no faster, and with the recognizer's
# PRelu rewritten its QLinearMul by the per-channel slope gave embeddings unrelated to the
# FP32 ones: cosine 0.00 to them), depthwise convolutions in INT8 or left in float as
# measured with `quantize.py bench` on this project's 2-core x86 machine (AVX-512 VNNI;
# BENCHMARKS.md "INT8 models"). --format and --depthwise override.
SETTINGS = {
    DETECTOR: {"format": "qdq", "depthwise": "int8"},
    RECOGNIZER: {"format": "qdq", "depthwise": "float"},
}

N_RECOGNIZER = 200
N_NUAA = 40


def fail(msg: str) -> None:
    print(f"quantize: error: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source(name: str) -> Path:
    """A registry file, checked against the manifest's sha256 (fetch.py put it there)."""
    manifest = tomllib.loads((HERE / "manifest.toml").read_text())
    entry = next((m for m in manifest["model"] if m["file"] == name), None)
    if entry is None:
        fail(f"{name} is not in models/manifest.toml")
    path = FILES / name
    if not path.is_file() or sha256(path) != entry["sha256"]:
        fail(f"{path} missing or not the pinned file; run `python3 models/fetch.py`")
    return path


# --- the service's preprocessing, step for step -------------------------------------------


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def detector_image(rgb: np.ndarray) -> np.ndarray:
    """detect.rs: a longer side above 640 is brought to 640 by a triangle filter (PIL's
    bilinear widens its support with the downscale factor, as the service's resize does)."""
    h0, w0 = rgb.shape[:2]
    scale = min(DET_MAX_SIDE / max(w0, h0), 1.0)
    if scale < 1.0:
        w, h = max(round(w0 * scale), 1), max(round(h0 * scale), 1)
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
    return rgb


def detector_tensor(rgb: np.ndarray) -> np.ndarray:
    bgr = rgb[:, :, ::-1].astype(np.float32) - MEAN_BGR
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])


def anchors(w: int, h: int) -> np.ndarray:
    out = []
    for stride, sizes in STRIDES:
        nx, ny = -(-w // stride), -(-h // stride)
        for y in range(ny):
            for x in range(nx):
                cx, cy = (x + 0.5) * stride / w, (y + 0.5) * stride / h
                for s in sizes:
                    out.append((cx, cy, s / w, s / h))
    return np.array(out, dtype=np.float32)


def iou(a, b) -> float:
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return 0.0 if union <= 0 else inter / union


def detect(session: ort.InferenceSession, rgb: np.ndarray):
    """Faces (bbox, score, landmarks [5, 2]) in the coordinates of `rgb`, as detect.rs."""
    h0, w0 = rgb.shape[:2]
    inp = detector_image(rgb)
    h, w = inp.shape[:2]
    inv = w0 / w if w != w0 else 1.0
    loc, conf, landm = session.run(["loc", "conf", "landmarks"], {"input": detector_tensor(inp)})
    a = anchors(w, h)
    loc, conf, landm = loc[0], conf[0], landm[0]
    faces = []
    fw, fh = w * inv, h * inv
    for i in np.nonzero(conf[:, 1] >= DET_SCORE)[0]:
        l, an = loc[i], a[i]
        cx = an[0] + l[0] * VARIANCE[0] * an[2]
        cy = an[1] + l[1] * VARIANCE[0] * an[3]
        bw = an[2] * np.exp(l[2] * VARIANCE[1])
        bh = an[3] * np.exp(l[3] * VARIANCE[1])
        bbox = np.array([(cx - bw / 2) * fw, (cy - bh / 2) * fh, (cx + bw / 2) * fw, (cy + bh / 2) * fh])
        p = landm[i].reshape(5, 2)
        lms = np.stack([(an[0] + p[:, 0] * VARIANCE[0] * an[2]) * fw, (an[1] + p[:, 1] * VARIANCE[0] * an[3]) * fh], 1)
        faces.append((bbox, float(conf[i, 1]), lms))
    faces.sort(key=lambda f: -f[1])
    kept = []
    for f in faces:
        if all(iou(k[0], f[0]) <= DET_NMS for k in kept):
            kept.append(f)
    return kept


def subject(faces, w: int, h: int):
    """subject.rs: the most prominent face (size discounted by distance from the centre)."""

    def prominence(f):
        b = f[0]
        size = np.sqrt(max(b[2] - b[0], 0) * max(b[3] - b[1], 0))
        cx, cy = (b[0] + b[2]) / 2 - w / 2, (b[1] + b[3]) / 2 - h / 2
        off = min(np.hypot(cx, cy) / np.hypot(w, h) * 2, 1.0)
        return size * max(1 - CENTRE_WEIGHT * off, 0.0)

    return max(faces, key=prominence) if faces else None


def similarity(src: np.ndarray, dst: np.ndarray):
    """align.rs Similarity::estimate: least squares, no reflection, in f64."""
    src, dst = src.astype(np.float64), dst.astype(np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    den = (s**2).sum()
    a = (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum() / den
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / den
    tx = md[0] - (a * ms[0] - b * ms[1])
    ty = md[1] - (b * ms[0] + a * ms[1])
    return np.float32(a), np.float32(b), np.float32(tx), np.float32(ty)


def align(rgb: np.ndarray, lms: np.ndarray) -> np.ndarray:
    """align.rs align + bilinear: inverse-mapped bilinear samples, black outside, rounded."""
    a, b, tx, ty = similarity(lms, ARCFACE_TEMPLATE)
    dd = a * a + b * b
    ia, ib = a / dd, -b / dd
    itx, ity = -(ia * tx - ib * ty), -(ib * tx + ia * ty)
    v, u = np.mgrid[0:REC_SIZE, 0:REC_SIZE].astype(np.float32)
    x = ia * u - ib * v + itx
    y = ib * u + ia * v + ity
    h, w = rgb.shape[:2]
    inside = (x > -1) & (y > -1) & (x < w) & (y < h)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    img = rgb.astype(np.float32)

    def at(xi, yi):
        ok = (xi >= 0) & (yi >= 0) & (xi < w) & (yi < h)
        px = img[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
        return np.where(ok[..., None], px, 0.0)

    top = at(x0, y0) * (1 - fx) + at(x0 + 1, y0) * fx
    bottom = at(x0, y0 + 1) * (1 - fx) + at(x0 + 1, y0 + 1) * fx
    out = np.clip(np.round(top * (1 - fy) + bottom * fy), 0, 255)
    return np.where(inside[..., None], out, 0).astype(np.uint8)


def recognizer_tensor(face: np.ndarray) -> np.ndarray:
    x = (face.astype(np.float32) - REC_MEAN) * (1.0 / REC_STD)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


# --- the calibration set ------------------------------------------------------------------


def fold_people(data: Path, folds: set[int]) -> list[str]:
    rows = csv.DictReader(open(data / "faces/pairs/lfw_view2_folds1-5.csv", newline=""))
    people = set()
    for r in rows:
        if int(r["fold"]) in folds:
            for k in ("identity_a", "identity_b"):
                people.add(r[k].removeprefix("lfw:"))
    return sorted(people)


def calibration_photos(data: Path) -> list[Path]:
    """200 photos of fold-1 people, fixed by sorted names: every 4th person from the first,
    every 2nd of their photos in order (the 1st, 3rd, ...), until there are 200."""
    images = data / "faces/lfw/images"
    people = fold_people(data, {1})
    out: list[Path] = []
    for start in range(4):
        for person in people[start::4]:
            files = sorted((images / person).glob("*.jpg"))
            out += files[::2][: max(1, (N_RECOGNIZER - len(out)))]
            if len(out) >= N_RECOGNIZER:
                return out[:N_RECOGNIZER]
    return out


def nuaa_frames(data: Path) -> list[Path]:
    rows = [r["path"] for r in csv.DictReader(open(data / "pad/index.csv", newline="")) if r["source"] == "nuaa" and r["label"] == "bona_fide"]
    rows.sort()
    step = max(len(rows) // N_NUAA, 1)
    return [data / "pad" / p for p in rows[::step][:N_NUAA]]


class Feed(CalibrationDataReader):
    def __init__(self, name: str, tensors: list[np.ndarray]):
        self.name, self.tensors, self.i = name, tensors, 0

    def get_next(self):
        if self.i >= len(self.tensors):
            return None
        self.i += 1
        return {self.name: self.tensors[self.i - 1]}

    def rewind(self):
        self.i = 0


def session(model: Path | onnx.ModelProto, threads: int = 1) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    what = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(what, so, providers=["CPUExecutionProvider"])


def calibration_sets(data: Path, detector: Path):
    photos = calibration_photos(data)
    det = session(detector)
    det_inputs, rec_inputs, skipped = [], [], 0
    for p in photos:
        rgb = load_rgb(p)
        det_inputs.append(detector_tensor(detector_image(rgb)))
        face = subject(detect(det, rgb), rgb.shape[1], rgb.shape[0])
        if face is None:
            skipped += 1
            continue
        rec_inputs.append(recognizer_tensor(align(rgb, face[2])))
    for p in nuaa_frames(data):
        det_inputs.append(detector_tensor(detector_image(load_rgb(p))))
    print(f"quantize: calibration: {len(photos)} LFW fold-1 photos ({skipped} without a face), {len(rec_inputs)} aligned faces, {len(det_inputs)} detector inputs")
    return det_inputs, rec_inputs


def prelu_as_relu(model: onnx.ModelProto) -> onnx.ModelProto:
    """PRelu(x) = Relu(x) + slope * (x - Relu(x)), bit for bit. ONNX Runtime 1.31's CPU PRelu
    with a [C, 1, 1] slope took half of w600k_mbf's time (7.9 of 14.9 ms, profiled) and
    stays in float between quantized convolutions; Relu, Sub, Mul and Add are fast and
    quantizable."""
    out = []
    for n in model.graph.node:
        if n.op_type != "PRelu":
            out.append(n)
            continue
        (x, slope), y = n.input, n.output[0]
        pos, neg, scaled = f"{y}/relu", f"{y}/neg", f"{y}/scaled"
        out += [
            onnx.helper.make_node("Relu", [x], [pos]),
            onnx.helper.make_node("Sub", [x, pos], [neg]),
            onnx.helper.make_node("Mul", [neg, slope], [scaled]),
            onnx.helper.make_node("Add", [pos, scaled], [y]),
        ]
    del model.graph.node[:]
    model.graph.node.extend(out)
    return model


def quantize(src: Path, dst: Path, input_name: str, tensors: list[np.ndarray], fmt: str, rewrite: bool, float_depthwise: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Per-channel QDQ needs opset 13 (DequantizeLinear's axis); both files are opset 11.
        model = onnx.load(str(src))
        if rewrite:
            model = prelu_as_relu(model)
        if max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 13:
            model = onnx.version_converter.convert_version(model, 13)
        up = Path(tmp) / "opset13.onnx"
        onnx.save(model, str(up))
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(up), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        # Depthwise convolutions stay in float: ONNX Runtime's INT8 depthwise kernel took
        # 9.0 ms of w600k_mbf against 1.3 ms for the float one (profiled on this CPU),
        # while INT8 halves the dense convolutions' time.
        depthwise = [n.name for n in pre_model.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
        if float_depthwise and not all(depthwise):
            fail(f"{src.name}: unnamed depthwise convolutions, cannot exclude them")
        part = dst.with_suffix(".part")
        quantize_static(
            str(pre),
            str(part),
            Feed(input_name, tensors),
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # MinMax: the histogram methods (percentile, entropy) fail on calibration inputs
            # of different sizes, which the detector's must be.
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=depthwise if float_depthwise else [],
            extra_options={"CalibMovingAverage": False},
        )
        os.replace(part, dst)


def make(args) -> None:
    for mod, want in PINNED.items():
        got = sys.modules[mod].__version__
        if got != want:
            fail(f"{mod} {got} found, {want} pinned (a different version quantizes differently)")
    det_src, rec_src = source(DETECTOR), source(RECOGNIZER)
    det_inputs, rec_inputs = calibration_sets(Path(args.data), det_src)
    suffix = args.variant
    for src, name, tensors in [(det_src, "input", det_inputs), (rec_src, "input.1", rec_inputs)]:
        dst = variant(src.name, suffix)
        fmt = args.format or SETTINGS[src.name]["format"]
        depthwise = args.depthwise or SETTINGS[src.name]["depthwise"]
        rewrite = src.name == RECOGNIZER and not args.keep_prelu
        quantize(src, dst, name, tensors, fmt, rewrite, depthwise == "float")
        how = f"{fmt}, minmax, depthwise {depthwise}" + (", PRelu rewritten" if rewrite else "")
        print(f"quantize: {dst.relative_to(HERE.parent)} {sha256(dst)} ({dst.stat().st_size} bytes; {how})")


# --- speed --------------------------------------------------------------------------------


def variant(src: str, name: str) -> Path:
    """The INT8 file made from `src`, with a variant's name after -int8 when given."""
    return FILES / OUTPUT[src].replace("-int8", f"-int8-{name}" if name else "-int8")


def medians_ms(sessions: list, feed: dict, runs: int) -> list:
    """Median time of each session on `feed`, the sessions taking turns run by run so that
    other load on the machine falls on every column alike."""
    live = [s for s in sessions if s is not None]
    for s in live:
        for _ in range(3):
            s.run(None, feed)
    times: dict = {id(s): [] for s in live}
    for _ in range(runs):
        for s in live:
            t = time.perf_counter()
            s.run(None, feed)
            times[id(s)].append(time.perf_counter() - t)
    return [1000 * float(np.median(times[id(s)])) if s is not None else None for s in sessions]


def bench(args) -> None:
    """Each file alone in ONNX Runtime, one thread, on real inputs of the service's sizes."""
    data = Path(args.data)
    photo = load_rgb(sorted((data / "faces/lfw/images").glob("*/*.jpg"))[0])
    frame = load_rgb(nuaa_frames(data)[0])
    found = subject(detect(session(FILES / DETECTOR), photo), photo.shape[1], photo.shape[0])
    if found is None:
        fail("no face in the benchmark photo")
    face = recognizer_tensor(align(photo, found[2]))
    cases = {
        DETECTOR: [("640x480 camera frame", {"input": detector_tensor(frame)}), ("150x150 LFW photo", {"input": detector_tensor(photo)})],
        RECOGNIZER: [("112x112 aligned face", {"input.1": face})],
    }
    print(f"onnxruntime {ort.__version__}, 1 intra-op thread, median of {args.runs} runs (3 warm-up; the files take turns run by run), ms")
    print(f"{'model':<28} {'input':<22} " + " ".join(f"{v or 'INT8':>12}" for v in ["FP32"] + args.variants + ["FP32 no PRelu"]))
    for src, feeds in cases.items():
        files = [FILES / src] + [variant(src, v) for v in args.variants]
        sessions = [session(f) if f.is_file() else None for f in files]
        # The FP32 recognizer with its PRelu layers rewritten (prelu_as_relu), in memory.
        sessions.append(session(prelu_as_relu(onnx.load(str(FILES / src)))) if src == RECOGNIZER else None)
        for label, feed in feeds:
            cells = [f"{m:12.2f}" if m is not None else f"{'-':>12}" for m in medians_ms(sessions, feed, args.runs)]
            print(f"{src:<28} {label:<22} " + " ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", nargs="?", default="make", choices=["make", "bench"])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--format", choices=["qdq", "qoperator"], help="for both files (default: SETTINGS, per file)")
    ap.add_argument("--variant", default="", help="a name put after -int8 in the output files (to keep variants side by side)")
    ap.add_argument("--keep-prelu", action="store_true", help="quantize the recognizer's PRelu layers as they are (slower)")
    ap.add_argument("--depthwise", choices=["int8", "float"], help="for both files (default: SETTINGS, per file)")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--variants", nargs="*", default=[""], help="bench: the --variant of each INT8 file to time ('' for the plain -int8 files)")
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        fail(f"{args.data}: no data folder (the calibration photos); give --data")
    (make if args.command == "make" else bench)(args)


if __name__ == "__main__":
    main()
