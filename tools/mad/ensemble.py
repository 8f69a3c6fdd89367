#!/usr/bin/env python3
"""Join trained MAD networks into the one ONNX model facegate ships, and measure it.

Each member (a `train.py` output: image -> `logit` -> `morph`) scores the MAD crop and its
mirror image; the shipped score is the sigmoid of the mean of all those logits. Mirroring
was every member's training augmentation, so both views are equally valid inputs, and
averaging views and independently trained networks removes part of each one's noise.
The joined graph is checked against the members run one by one, then scored on the
validation crops: the threshold is set there at BPCER 1 %, and the report written with
the same figures as train.py's.

Usage: ensemble.py --set DIR --lfw-crops DIR --set-crops DIR --out model.onnx --report report.json MEMBER.onnx...
"""
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from train import OPSET, SIZE, by_source, crop_list, data_arguments, summary, threshold_at_bpcer


def join(members, doc):
    nodes, inits = [], []
    # The mirror image: the crop read right to left.
    for name, value in (("flip_start", [-1]), ("flip_end", [-(2**62)]), ("flip_axis", [3]), ("flip_step", [-1])):
        inits.append(numpy_helper.from_array(np.array(value, np.int64), name))
    nodes.append(helper.make_node("Slice", ["image", "flip_start", "flip_end", "flip_axis", "flip_step"], ["image_mirror"]))
    logits = []
    for i, member in enumerate(members):
        member = onnx.compose.add_prefix(member, f"m{i}_")
        inits += list(member.graph.initializer)  # once per member: both views share the weights
        for view, source in (("", "image"), ("mirror_", "image_mirror")):
            g = onnx.compose.add_prefix(member, view, rename_initializers=False).graph
            for n in g.node:
                n.input[:] = [source if x == f"{view}m{i}_image" else x for x in n.input]
            nodes += [n for n in g.node if n.output[0] != f"{view}m{i}_morph"]
            logits.append(f"{view}m{i}_logit")
    nodes.append(helper.make_node("Sum", logits, ["logit_sum"]))
    inits.append(numpy_helper.from_array(np.array([1.0 / len(logits)], np.float32), "views"))
    nodes.append(helper.make_node("Mul", ["logit_sum", "views"], ["logit"]))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["morph"]))
    graph = helper.make_graph(
        nodes,
        "facegate_mad",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("morph", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facegate tools/mad/ensemble.py")
    model.ir_version = 8
    model.doc_string = doc
    onnx.checker.check_model(model)
    return model


def load_crops(paths):
    return np.stack([cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).transpose(2, 0, 1).astype(np.float32) / 255.0 for p in paths])


def with_logit(model):
    """A copy of a model that also outputs its `logit` edge, for checking."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1]))
    return m


def run(session, images, output="morph", batch=256):
    return np.concatenate([session.run([output], {"image": images[i : i + batch]})[0][:, 0] for i in range(0, len(images), batch)])


def main() -> None:
    ap = data_arguments(__doc__)
    ap.add_argument("members", nargs="+", help="train.py outputs, with their reports next to them (same name, .json)")
    args = ap.parse_args()
    manifest = json.loads((Path(args.set) / "manifest.json").read_text())
    items = crop_list(manifest, "val", Path(args.lfw_crops), Path(args.set_crops))
    images = load_crops([i[0] for i in items])
    labels, sources = np.array([i[1] for i in items]), np.array([i[2] for i in items])

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    members = [onnx.load(m) for m in args.members]
    model = join(members, "")
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    scores = run(session, images)

    # The joined graph against the members run one by one, on every 50th crop, compared
    # as logits (a probability saturates at 1.0 in float32 and would hide a difference).
    sample = images[::50]
    views = []
    for m in members:
        s = ort.InferenceSession(with_logit(m).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        views += [run(s, sample, "logit"), run(s, sample[:, :, :, ::-1].copy(), "logit")]
    joined = ort.InferenceSession(with_logit(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    err = np.abs(np.mean(views, axis=0) - run(joined, sample, "logit")).max()
    if not err <= 1e-3:
        raise SystemExit(f"joined graph disagrees with its members by {err} in logit")

    bona = scores[labels == 0]
    threshold = threshold_at_bpcer(bona, 0.01)
    report = {
        "members": [json.loads(Path(m).with_suffix(".json").read_text()) if Path(m).with_suffix(".json").exists() else {} for m in args.members],
        "views": "crop and mirror image per member, mean logit",
        "threshold_at_val_bpcer1": round(threshold, 4),
        "val": summary(bona, scores[labels == 1], threshold),
        "val_by_source": by_source(bona, scores, labels, sources, threshold),
    }
    for member, path in zip(report["members"], args.members):
        member["file"] = Path(path).name
    print(json.dumps({k: v for k, v in report.items() if k != "members"}, indent=1))
    model.doc_string = (
        f"facegate MAD: {len(members)} residual-energy-map CNNs (tools/mad/train.py), each on the {SIZE}x{SIZE} MAD crop "
        f"and its mirror image, mean logit; RGB 0..1 -> morph probability. Validation threshold at BPCER 1 %: {threshold:.4f}"
    )
    Path(args.out).write_bytes(model.SerializeToString())
    Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes) and {args.report}")


if __name__ == "__main__":
    main()
