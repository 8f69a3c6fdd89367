#!/usr/bin/env python3
"""Join trained MAD networks into the one ONNX model facegate ships, and measure it.

Each member (a `train.py` output: image -> `logit` -> `morph`) scores the MAD crop and its
mirror image; the shipped score is the sigmoid of the mean of all those logits. Mirroring
was every member's training augmentation, so both views are equally valid inputs, and
averaging views and independently trained networks removes part of each one's noise.

With `--embeddings`, a second input joins: the recognizer's embedding of the same face,
which the service computes at enrolment anyway. A logistic regression on the training
split's embeddings (a morph's identity is a blend, and its embedding falls in regions bona fide
faces rarely reach) adds its logit, weighted, to the image networks' mean logit. It sees
what the residual maps do not: alone it is weaker (18.6 % validation D-EER), but its
errors are different ones. (A one-hidden-layer network instead was better alone, 16.8 %,
but not fused: D-EER 9.03 vs 9.36 %, APCER at BPCER 1 % 36.0 vs 35.3 %, cross-fitted
within 0.2 points; the linear model is kept.) The weight is read off validation (like the threshold),
so the report also gives a cross-fitted figure: weight chosen on one half of the
validation people, measured on the other. The graph records the recognizer's sha256
(`facegate.embedding_sha256`): the service refuses to pair it with another recognizer.

With `--maps`, a train_maps.py or train_tail.py network joins too: it reads the recognizer's
activations on one view of the face (inputs `recognizer:NODE` of the MAD crop's centre, or `recognizer_aligned:NODE` of
the aligned face, for which `--lfw-aligned` and `--set-aligned` give the faces, `facegate-tools faces
--aligned`; its inputs become the joined model's), and its logit is added with a weight read off
validation the same way, on top of the networks, the embedding model and the `--maps` before it
(each cross-fitted in the report as well; one whose weight is 0 is reported and left out of
the model). Alone each beats the two image networks and the embedding model together (8.57 and
8.39 % against 9.44 % validation D-EER). build.sh joins both views' networks and train_tail.py's
fine-tuned copy of the recognizer's last layers, whose weights the joined model holds as their
difference to the recognizer's (`as_delta`, below).

With `--calibrate` (as build.sh runs it), the joined logit is scaled and shifted before the sigmoid by a
logistic regression on the validation logits (`calibrate`, below), so the score reads as a
probability instead of crowding at 1.0.

With `--base MODEL` instead of members, the `--maps` networks are added on top of a model this
script made before (the shipped one), its joined logit weighted 1 and each new member's weight
read off validation as above, then calibrated anew (`extend`, below). The members inside MODEL
are not needed: a new member is measured against, and joined to, the shipped model without
rebuilding the others (the whole recipe takes about 3.5 hours).

The joined graph is checked against the members run one by one (or against MODEL and the new
members), then scored on the validation crops: the threshold is set there at BPCER 1 %, and the
report written with the same figures as train.py's.

Usage: ensemble.py --set DIR --lfw-crops DIR --set-crops DIR --out model.onnx --report report.json
       [--extra-set DIR --extra-crops DIR] [--embeddings LFW.jsonl SET.jsonl [EXTRA.jsonl] --recognizer w600k_mbf.onnx]
       [--maps MAPS.onnx --recognizer w600k_mbf.onnx --lfw-aligned DIR --set-aligned DIR] [--calibrate]
       MEMBER.onnx... | --base MODEL.onnx
"""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import LogisticRegression

from train import OPSET, SIZE, by_source, crop_list, d_eer, data_arguments, extra_items, load_crop, summary, threshold_at_bpcer
from train_maps import VIEWS, RecognizerTaps

# Fusion weights tried for the embedding's logit, relative to the networks' logit spread,
# and for the recognizer-maps network's (alone as good as the image networks together).
WEIGHTS = [round(0.1 * i, 1) for i in range(11)]
MAPS_WEIGHTS = [round(0.1 * i, 1) for i in range(21)]


def join(members, doc, head=None, maps=(), calibration=None):
    """The members' mean logit over both views; with `head` = (weights [dim, 1], bias [1]),
    plus the logit of that linear model on a second input, `embedding`; with `maps` =
    [(train_maps.py's model, weight)], plus each one's logit times its weight, their inputs
    (`recognizer:NODE`, `recognizer_aligned:NODE`) becoming the joined model's; with
    `calibration` = (scale, bias), the output is the sigmoid of scale * logit + bias."""
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
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])]
    if head is None and not maps:
        nodes.append(helper.make_node("Mul", ["logit_sum", "views"], ["logit"]))
    parts = ["image_logit"]
    if head is not None:
        w, b = head
        inputs.append(helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", w.shape[0]]))
        inits.append(numpy_helper.from_array(np.asarray(w, np.float32), "head_w"))
        inits.append(numpy_helper.from_array(np.asarray(b, np.float32), "head_b"))
        nodes.append(helper.make_node("Gemm", ["embedding", "head_w", "head_b"], ["embedding_logit"]))
        parts.append("embedding_logit")
    if len(parts) > 1 or maps:
        nodes.append(helper.make_node("Mul", ["logit_sum", "views"], ["image_logit"]))
    for k, (member, weight) in enumerate(maps):
        parts.append(add_maps(nodes, inits, inputs, member, weight, "maps_" if k == 0 else f"maps{k + 1}_"))  # the first one unnumbered, so a one-member model is rebuilt byte for byte
    if len(parts) > 1:
        # Add for two parts (Sum for more), so a two-part model is rebuilt byte for byte.
        nodes.append(helper.make_node("Add" if len(parts) == 2 else "Sum", parts, ["logit"]))
    return finish_graph(nodes, inits, inputs, calibration, doc)


def add_maps(nodes, inits, inputs, member, weight, prefix) -> str:
    """Append a --maps member's nodes and weights, its names prefixed but its inputs
    (`recognizer:NODE`, `recognizer_aligned:NODE`, `recognizer_weight:NAME`) kept, so that
    members reading the same recognizer node or weight share the input; returns its
    weighted logit's name."""
    m = onnx.compose.add_prefix(member, prefix)
    inits += list(m.graph.initializer)
    own = {f"{prefix}{i.name}": i.name for i in member.graph.input}
    for n in m.graph.node:
        n.input[:] = [own.get(x, x) for x in n.input]
    nodes += [n for n in m.graph.node if n.output[0] != f"{prefix}morph"]
    have = {i.name for i in inputs}
    inputs += [i for i in member.graph.input if i.name not in have]
    inits.append(numpy_helper.from_array(np.array([weight], np.float32), f"{prefix}weight"))
    nodes.append(helper.make_node("Mul", [f"{prefix}logit", f"{prefix}weight"], [f"{prefix}weighted"]))
    return f"{prefix}weighted"


def finish_graph(nodes, inits, inputs, calibration, doc):
    """The model whose output `morph` is the sigmoid of the `logit` edge, with `calibration`
    = (scale, bias) of scale * logit + bias."""
    if calibration is None:
        nodes.append(helper.make_node("Sigmoid", ["logit"], ["morph"]))
    else:
        for name, value in zip(("calibration_scale", "calibration_bias"), calibration):
            inits.append(numpy_helper.from_array(np.array([value], np.float32), name))
        nodes.append(helper.make_node("Mul", ["logit", "calibration_scale"], ["logit_scaled"]))
        nodes.append(helper.make_node("Add", ["logit_scaled", "calibration_bias"], ["calibrated"]))
        nodes.append(helper.make_node("Sigmoid", ["calibrated"], ["morph"]))
    graph = helper.make_graph(nodes, "facegate_mad", inputs, [helper.make_tensor_value_info("morph", TensorProto.FLOAT, ["N", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facegate tools/mad/ensemble.py")
    model.ir_version = 8
    model.doc_string = doc
    onnx.checker.check_model(model)
    return model


# What the joined logit turns into, removed when a shipped model is extended.
OUTPUT_EDGES = {"morph", "logit_scaled", "calibrated"}
OUTPUT_WEIGHTS = {"calibration_scale", "calibration_bias"}


def extend(base, maps, calibration, doc):
    """The shipped model `base` with more --maps members added on top of its joined logit
    (which it keeps, as `base_logit`), calibrated anew: a new member is then measured and
    shipped without retraining the ones inside `base`."""
    g, nodes = base.graph, []
    for n in g.node:
        if n.output[0] not in OUTPUT_EDGES:
            nodes.append(onnx.NodeProto())
            nodes[-1].CopyFrom(n)
            nodes[-1].output[:] = ["base_logit" if x == "logit" else x for x in n.output]
    inits = [i for i in g.initializer if i.name not in OUTPUT_WEIGHTS]
    inputs = list(g.input)
    taken = sum(1 for i in inits if re.fullmatch(r"maps\d*_weight", i.name))
    parts = ["base_logit"] + [add_maps(nodes, inits, inputs, member, weight, f"maps{taken + k + 1}_") for k, (member, weight) in enumerate(maps)]
    nodes.append(helper.make_node("Sum", parts, ["logit"]))
    return finish_graph(nodes, inits, inputs, calibration, doc)


def with_logit(model):
    """A copy of a model that also outputs its `logit` edge, for checking."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", 1]))
    return m


def run(session, images, output="morph", embeddings=None, batch=256, feeds=()):
    """`output`'s value per image; for a list of outputs, an array [images, outputs].
    `feeds`: [(a RecognizerTaps, the paths of its view of each face)], to feed the
    recognizer's maps too."""
    def feed(i):
        inputs = {"image": images[i : i + batch]}
        if embeddings is not None:
            inputs["embedding"] = embeddings[i : i + batch]
        for taps, paths in feeds:
            inputs.update(taps.feed(paths[i : i + batch]))
        return {k: v for k, v in inputs.items() if k in wanted}

    wanted = {i.name for i in session.get_inputs()}
    names = [output] if isinstance(output, str) else list(output)
    got = np.concatenate([np.stack([o.reshape(len(o), -1)[:, 0] for o in session.run(names, feed(i))], 1) for i in range(0, len(images), batch)])
    return got[:, 0] if isinstance(output, str) else got


def embeddings_of(items, jsonl, roots):
    """The recognizer's embedding of each item's face, from `facegate-tools faces` outputs (one
    per crop root: `crop` is relative to it)."""
    table = {}
    for path, root in zip(jsonl, roots):
        for line in open(path):
            r = json.loads(line)
            if r.get("embedding"):
                table[(Path(root) / r["crop"]).resolve()] = r["embedding"]
    missing = [str(i[0]) for i in items if i[0].resolve() not in table]
    if missing:
        raise SystemExit(f"{len(missing)} crops have no embedding in {jsonl}, e.g. {missing[0]}")
    return np.array([table[i[0].resolve()] for i in items], np.float32)


def fit_head(train_x, train_y, logits, val_x, labels, persons):
    """The embedding model, scaled by its weight, as (weights [dim, 1], bias [1]); and the
    report's part."""
    reg = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced").fit(train_x, train_y)
    scale, part = fusion_weight(logits, reg.decision_function(val_x), labels, persons, WEIGHTS)
    part = {
        "model": "logistic regression (C 0.1, balanced classes) on the L2-normalised embedding of the training split",
        "train": {"bona_fide": int((train_y == 0).sum()), "morphs": int((train_y == 1).sum())},
    } | part
    return (reg.coef_.T * scale, reg.intercept_ * scale), part


def calibrate(logits, labels):
    """(scale, bias) of a logistic regression of the labels on the joined validation logits,
    classes weighted equally (Platt scaling), and the report's part. The joined logit is a
    weighted sum, not a probability: uncalibrated, the join of five networks reaches 1.0 in
    float32 for 13 validation bona fide photos and 2,097 of 3,000 morphs, which puts the
    threshold in the seventh decimal and shows every refused morph as "1.000". Scaling is monotonic: it changes no ranking, only
    ties that float32 made at 1.0."""
    reg = LogisticRegression(C=1e6, max_iter=1000, class_weight="balanced").fit(logits[:, None], labels)
    scale, bias = float(reg.coef_[0, 0]), float(reg.intercept_[0])
    return (scale, bias), {
        "model": "sigmoid(scale * logit + bias), a logistic regression on the joined validation logits, classes weighted equally",
        "scale": round(scale, 6),
        "bias": round(bias, 6),
    }


def person_halves(persons) -> np.ndarray:
    """0 or 1 per image, by its person: the two halves of the validation people that the
    cross-fitted figures choose on one and measure on the other."""
    return np.array([int(hashlib.sha256(p.encode()).hexdigest(), 16) % 2 for p in persons])


def fusion_weight(logits, raw, labels, persons, grid):
    """The factor on `raw` (another model's validation logits) that, added to `logits`,
    gives the lowest validation D-EER, the weight read off `grid` in units of the spread
    of `logits`; and the report's part, with a cross-fitted figure: the weight chosen on
    one half of the validation people, measured on the other."""
    unit = logits.std() / raw.std()  # weight 1 = the same spread as `logits`

    def deer(sel, w):
        fused = logits + w * unit * raw
        return d_eer(fused[sel & (labels == 0)], fused[sel & (labels == 1)])

    everyone = np.ones(len(labels), bool)
    weight = min(grid, key=lambda w: deer(everyone, w))
    half = person_halves(persons)
    cross = []
    for h in (0, 1):
        w = min(grid, key=lambda w: deer(half != h, w))
        cross.append({"weight": w, "d_eer": round(100 * deer(half == h, w), 2), "d_eer_without": round(100 * deer(half == h, 0.0), 2)})
    return weight * unit, {
        "d_eer_alone": round(100 * d_eer(raw[labels == 0], raw[labels == 1]), 2),
        "weight": weight,
        "d_eer_by_weight": {str(w): round(100 * deer(everyone, w), 2) for w in grid},
        "cross_fitted_halves": cross,
    }


# A member's weight that starts from the recognizer's (train_tail.py) is shipped as a graph
# input `recognizer_weight:NAME` plus the difference `delta:NAME`: the service fills the input
# from the recognizer file it already has (models/src/mad.rs), so the shipped file holds none
# of the recognizer's weights, as for every other member.
WEIGHT = "recognizer_weight:"


def recognizer_weights(recognizer: Path) -> dict:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(recognizer).graph.initializer}


def as_delta(member, weights: dict):
    """`member` with each initializer that has a recognizer weight's name and shape replaced
    by WEIGHT + NAME (an input) plus `delta:NAME`; the others are its own."""
    m = onnx.ModelProto()
    m.CopyFrom(member)
    g, own, adds = m.graph, [], []
    for init in g.initializer:
        w = numpy_helper.to_array(init)
        base = weights.get(init.name)
        if base is None or base.shape != w.shape:
            own.append(init)
            continue
        own.append(numpy_helper.from_array((w.astype(np.float32) - base.astype(np.float32)).astype(np.float32), f"delta:{init.name}"))
        g.input.append(helper.make_tensor_value_info(WEIGHT + init.name, TensorProto.FLOAT, list(w.shape)))
        adds.append(helper.make_node("Add", [WEIGHT + init.name, f"delta:{init.name}"], [init.name]))
    del g.initializer[:]
    g.initializer.extend(own)
    nodes = adds + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return m


def with_weights(model, weights: dict):
    """A copy of `model` whose WEIGHT inputs are filled from the recognizer's `weights`, as the
    service fills them, for running it here."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    filled = [i for i in m.graph.input if i.name.startswith(WEIGHT)]
    for i in filled:
        m.graph.initializer.append(numpy_helper.from_array(weights[i.name[len(WEIGHT) :]], i.name))
        m.graph.input.remove(i)  # a constant, not an overridable input: ONNX Runtime folds the sum
    return m


def described(member, taps) -> str:
    """A --maps member in the joined model's description, by the script that made it."""
    view = VIEWS[taps.view][2]
    if "train_tail.py" in member.producer_name:
        node = member.graph.input[0].name
        return f", plus the recognizer's layers after `{node}` fine-tuned for MAD on {view} (tools/mad/train_tail.py; input `{node}`)"
    return f", plus a CNN on the recognizer's feature maps of {view} (tools/mad/train_maps.py; inputs `{taps.prefix}NODE`)"


def view_feeds(model, taps: dict, recognizer: Path, items, lfw, crops, args):
    """What `run` needs to feed `model`'s recognizer inputs: per view it reads, the
    recognizer's taps on that view of each item's face. `taps` holds one per view, made on
    first use and shared by every model that reads the view."""
    names = [i.name for i in model.graph.input]
    feeds = []
    for view, (prefix, _, _) in VIEWS.items():
        if any(n.startswith(prefix) for n in names):
            faces = [i[0] for i in items]
            if view == "aligned":
                faces = aligned_paths(faces, [(lfw, args.lfw_aligned), (crops, args.set_aligned)])
            if view not in taps:
                taps[view] = RecognizerTaps(recognizer, view)
            feeds.append((taps[view], faces))
    return feeds


def distinct(feeds):
    """One feed per view: members reading the same view read the same recognizer run, which
    `run` would otherwise repeat for each of them."""
    return list({taps.view: (taps, paths) for taps, paths in feeds}.values())


def aligned_paths(crops, roots):
    """The aligned faces (facegate-tools faces --aligned) of these MAD crops: same relative
    paths under the aligned folder that goes with each crop folder."""
    out = []
    for c in crops:
        root, aligned = next(((r, a) for r, a in roots if c.is_relative_to(r)), (None, None))
        if aligned is None:
            raise SystemExit(f"{c}: --maps needs the aligned faces of its folder (--lfw-aligned, --set-aligned)")
        out.append(Path(aligned) / c.relative_to(root))
        if not out[-1].exists():
            raise SystemExit(f"{out[-1]}: no aligned face for the crop {c}")
    return out


def main() -> None:
    ap = data_arguments(__doc__)
    ap.add_argument("--embeddings", nargs="+", metavar="JSONL", help="`facegate-tools faces` outputs of the photos, of the set and (with --extra-set) of the extra set's morphs: add the embedding model")
    ap.add_argument("--recognizer", help="the recognizer ONNX file that made those embeddings (its sha256 goes into the model)")
    ap.add_argument("--maps", action="append", help="a train_maps.py output (on the recognizer's feature maps; needs --recognizer): add it, weighted; repeatable, each weighted on top of the ones before")
    ap.add_argument("--calibrate", action="store_true", help="scale the joined logit to a readable probability (Platt scaling on validation; v8 is made with it)")
    ap.add_argument("--base", help="a model this script made (the shipped one): add the --maps members to it instead of joining MEMBERs")
    ap.add_argument("members", nargs="*", help="train.py outputs, with their reports next to them (same name, .json)")
    args = ap.parse_args()
    if bool(args.base) == bool(args.members):
        raise SystemExit("give either MEMBERs or --base")
    if bool(args.embeddings or args.maps or args.base) != bool(args.recognizer):
        raise SystemExit("--recognizer goes with --embeddings, --maps or --base")
    recognizer_sha256 = hashlib.sha256(Path(args.recognizer).read_bytes()).hexdigest() if args.recognizer else None
    roots = [Path(args.lfw_crops), Path(args.set_crops)] + ([Path(args.extra_crops)] if args.extra_set else [])
    if args.embeddings and len(args.embeddings) != len(roots):
        raise SystemExit(f"--embeddings needs {len(roots)} `facegate-tools faces` outputs, one per crop folder: {', '.join(map(str, roots))}")
    manifest = json.loads((Path(args.set) / "manifest.json").read_text())
    lfw, crops = Path(args.lfw_crops), Path(args.set_crops)
    items = crop_list(manifest, "val", lfw, crops)
    images = np.stack([load_crop(i[0]) for i in items])
    labels, sources = np.array([i[1] for i in items]), np.array([i[2] for i in items])

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    members = [onnx.load(m) for m in args.members]
    weights = recognizer_weights(Path(args.recognizer)) if args.maps or args.base else {}
    head, head_report, embeddings, base_feeds, taps_by_view = None, None, None, [], {}
    if args.base:
        base = onnx.load(args.base)
        reads = {i.name for i in base.graph.input}
        if "embedding" in reads and not args.embeddings:
            raise SystemExit(f"{args.base} reads the recognizer's embedding: give --embeddings")
        embeddings = embeddings_of(items, args.embeddings, roots) if args.embeddings else None
        base_feeds = view_feeds(base, taps_by_view, Path(args.recognizer), items, lfw, crops, args)
        session = ort.InferenceSession(with_weights(with_logit(base), weights).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        image_logits = run(session, images, "logit", embeddings, feeds=base_feeds)
    else:
        model = join(members, "")
        session = ort.InferenceSession(with_logit(model).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        image_logits = run(session, images, "logit")

    if args.embeddings and not args.base:
        train_items = crop_list(manifest, "train", lfw, crops) + extra_items(args)
        train_x = embeddings_of(train_items, args.embeddings, roots)
        embeddings = embeddings_of(items, args.embeddings, roots)
        head, head_report = fit_head(train_x, np.array([i[1] for i in train_items]), image_logits, embeddings, labels, [i[3] for i in items])
        head_report["recognizer_sha256"] = recognizer_sha256
        model = join(members, "", head)

    maps, maps_reports, feeds, maps_logits = [], [], [], []
    so_far = image_logits + ((embeddings @ head[0] + head[1])[:, 0] if head else 0)
    for path in args.maps or []:
        maps_model = as_delta(onnx.load(path), weights)
        named = {p.key: p.value for p in maps_model.metadata_props}.get("facegate.embedding_sha256")
        if named != recognizer_sha256:
            raise SystemExit(f"{path} was trained on the recognizer {named}, not on {args.recognizer} ({recognizer_sha256})")
        read_from = len(feeds)
        feeds += view_feeds(maps_model, taps_by_view, Path(args.recognizer), items, lfw, crops, args)
        s = ort.InferenceSession(with_weights(with_logit(maps_model), weights).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        maps_logits.append(run(s, images, "logit", feeds=feeds[-1:]))
        weight, report = fusion_weight(so_far, maps_logits[-1], labels, [i[3] for i in items], MAPS_WEIGHTS)
        so_far = so_far + weight * maps_logits[-1]
        maps_reports.append({"member": json.loads(Path(path).with_suffix(".json").read_text()) | {"file": Path(path).name}} | report)
        if weight == 0:  # it would only cost the service a run of its layers
            print(f"{path}: weight 0 on validation, left out of the model", flush=True)
            del feeds[read_from:], maps_logits[-1]
            continue
        maps.append((maps_model, weight))
    calibration, calibration_report = calibrate(so_far, labels) if args.calibrate else (None, None)
    if args.base:
        model = extend(base, maps, calibration, "")
    elif maps or calibration:
        model = join(members, "", head, maps, calibration)
    if head or maps or calibration:
        session = ort.InferenceSession(with_weights(model, weights).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        scores = run(session, images, embeddings=embeddings, feeds=distinct(base_feeds + feeds))
    else:
        scores = 1 / (1 + np.exp(-image_logits))

    # The joined graph against the members run one by one, on every 50th crop, compared
    # as logits (a probability saturates at 1.0 in float32 and would hide a difference).
    sample = images[::50]
    views = []
    for m in members:
        s = ort.InferenceSession(with_logit(m).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        views += [run(s, sample, "logit"), run(s, sample[:, :, :, ::-1].copy(), "logit")]
    want = image_logits[::50] if args.base else np.mean(views, axis=0)
    if head:
        want = want + (embeddings[::50] @ head[0] + head[1])[:, 0]
    for logits, (_, weight) in zip(maps_logits, maps):
        want = want + logits[::50] * weight
    joined = ort.InferenceSession(with_weights(with_logit(model), weights).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    err = np.abs(want - run(joined, sample, "logit", None if embeddings is None else embeddings[::50], feeds=[(t, paths[::50]) for t, paths in distinct(base_feeds + feeds)])).max()
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
    if args.base:
        report["base"] = {"file": Path(args.base).name, "sha256": hashlib.sha256(Path(args.base).read_bytes()).hexdigest()}
        del report["members"], report["views"]
    if head:
        report["embedding"] = head_report
    if maps_reports:  # those left out at weight 0 too: their figures say why
        report["recognizer_maps"] = maps_reports
    if calibration:
        report["calibration"] = calibration_report
    print(json.dumps({k: v for k, v in report.items() if k != "members"}, indent=1))
    # Extended, the base's own description up to its calibration and threshold.
    model.doc_string = (
        (re.split("; the sum scaled|; RGB", base.doc_string)[0] if args.base else
         f"facegate MAD: {len(members)} residual-energy-map CNNs (tools/mad/train.py), each on the {SIZE}x{SIZE} MAD crop "
         f"and its mirror image, mean logit")
        + (", plus a linear model on the recognizer's embedding (input `embedding`)" if head else "")
        + "".join(described(m, taps) for (taps, _), (m, _) in zip(feeds, maps))
        + ("; the sum scaled and shifted (Platt, on validation)" if calibration else "")
        + f"; RGB 0..1 -> morph probability. Validation threshold at BPCER 1 %: {threshold:.4f}"
    )
    if any(i.name != "image" for i in model.graph.input):  # it reads the recognizer: name it
        onnx.helper.set_model_props(model, {"facegate.embedding_sha256": recognizer_sha256})
    copied = {(tuple(w.shape), w.astype(np.float32).tobytes()) for w in weights.values()}
    if any((tuple(i.dims), numpy_helper.to_array(i).astype(np.float32).tobytes()) in copied for i in model.graph.initializer):
        raise SystemExit("the joined model would contain one of the recognizer's weights")
    Path(args.out).write_bytes(model.SerializeToString())
    Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes) and {args.report}")


if __name__ == "__main__":
    main()
