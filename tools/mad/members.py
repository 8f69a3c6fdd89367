#!/usr/bin/env python3
"""What each member of a joined MAD model contributes, per morphing tool, and a lighter model of some of them.

ensemble.py joins its members into one graph whose logit is the sum of weighted parts (the
`Sum` that makes `logit`): the residual-map networks' mean logit over the crop and its mirror
image (`image_logit`), the embedding model (`embedding_logit`) and each --maps member
(`maps_weighted`, `maps2_weighted`, ...). This script reads the members' own logits out of
that graph instead of retraining anything:

  logits  runs the joined model (--model: an ensemble.py output such as the six-member
          facegate-mad-v8.onnx build.sh writes to its work directory; the one the shipped
          model was read from is in git: `git show 255d1c7~1:models/mad/facegate-mad-v8.onnx > v8.onnx`)
          on the faces `facegate-tools faces` wrote (MAD crop, aligned face, embedding; --faces JSONL
          CROPS ALIGNED, repeatable), with each member's logit exposed, the recognizer's feature
          maps and weights fed as ensemble.py feeds them, and writes one CSV row per face.
  table   from those rows: each member alone, the model with each member left out and any
          --subset, per tool (morph.py's validation morphs and every --tool folder of morphs):
          D-EER and APCER at BPCER 1 % against morph.py's validation bona fide photos and
          copies (the threshold set on them), and BPCER at that threshold on every LFW photo
          and on each --bona-fide folder. A subset is joined the way ensemble.py joins it:
          with `--weights v8` the model's own weights for the parts kept; with `--weights refit`
          (the default) each weight read anew off validation in ensemble.py's order and grid
          (`fusion_weight`); then Platt scaling on the validation logits (`calibrate`) and the
          threshold at validation BPCER 1 %. Platt scaling is monotonic: it moves the
          threshold, not D-EER or APCER.
  build   writes a subset as an ONNX model the service loads unchanged: the joined graph with
          the left-out parts and every node, weight and input only they needed removed, the
          kept weights and the calibration set as `table` sets them, the recognizer's sha256
          kept (`facegate.embedding_sha256`) and the threshold, version, crop size and
          context recorded in its metadata; checked against the rows' logits.
  scores  the table's figures for one model from `facegate-tools eval mad --scores` (the service's
          own pipeline: detector, alignment, crop, recognizer taps, ONNX Runtime).

Parts (in ensemble.py's join order): abs-sq, abs-fm (the train.py networks m0, m1: one part
each here, both views), embedding, maps-centre, maps-aligned, tail (the --maps members).

Usage:
  members.py logits --model M.onnx --recognizer w600k_mbf.onnx --faces X.jsonl CROPS ALIGNED [...] --out logits.csv
  members.py table --logits logits.csv [...] --set SET --lfw-crops C --set-crops C --tool NAME=CROPS_DIR [...]
                   [--bona-fide NAME=CROPS_DIR] [--subset abs-sq,abs-fm,...] [--weights refit|v8] --out table.json
  members.py scores --scores eval.csv [...] --val SET/eval --tool NAME=DIR [...] [--bona-fide NAME=DIR] [--threshold T]
  members.py build --model M.onnx --recognizer w600k_mbf.onnx --logits ... --set ... --subset PARTS --version NAME --out OUT.onnx
Dependencies: tools/mad/requirements.txt (pinned).
"""
import argparse
import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from ensemble import MAPS_WEIGHTS, WEIGHTS, calibrate, person_halves, recognizer_weights, with_weights
from train import SIZE, crop_list, load_crop, threshold_at_bpcer
from train_maps import RecognizerTaps

# part name -> (the graph edges that hold its logit (summed), the edge the joined Sum reads)
PARTS = {
    "abs-sq": (("m0_logit", "mirror_m0_logit"), "image_logit"),
    "abs-fm": (("m1_logit", "mirror_m1_logit"), "image_logit"),
    "embedding": (("embedding_logit",), "embedding_logit"),
    "maps-centre": (("maps_logit",), "maps_weighted"),
    "maps-aligned": (("maps2_logit",), "maps2_weighted"),
    "tail": (("maps3_logit",), "maps3_weighted"),
}
IMAGE = ("abs-sq", "abs-fm")
MAPS_WEIGHT = {"maps-centre": "maps_weight", "maps-aligned": "maps2_weight", "tail": "maps3_weight"}
EDGES = [e for edges, _ in PARTS.values() for e in edges]


def session(model, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def exposing(model, edges):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for e in edges:
        m.graph.output.append(helper.make_tensor_value_info(e, onnx.TensorProto.FLOAT, None))
    return m


# ---------------------------------------------------------------------------------------- logits
def faces_of(jsonl, crops, aligned):
    """(crop path, aligned path, embedding) of every face with both crops in a `facegate-tools faces` output."""
    out = []
    for line in open(jsonl):
        r = json.loads(line)
        if r.get("crop") and r.get("aligned") and r.get("embedding"):
            out.append((Path(crops) / r["crop"], Path(aligned) / r["aligned"], r["embedding"]))
    return out


def cmd_logits(args):
    model = onnx.load(args.model)
    weights = recognizer_weights(Path(args.recognizer))
    s = session(with_weights(exposing(model, EDGES + ["logit"]), weights), args.threads)
    names = {i.name for i in s.get_inputs()}
    taps = {v: RecognizerTaps(Path(args.recognizer), v) for v, prefix in (("centre", "recognizer:"), ("aligned", "recognizer_aligned:")) if any(n.startswith(prefix) for n in names)}
    for t in taps.values():  # its own session, with --threads
        t.session = session(exposing(onnx.load(args.recognizer), [n for n, _, _, _ in t.nodes]), args.threads)
    items = [f for triple in args.faces for f in faces_of(*triple)]
    print(f"{len(items)} faces", flush=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["crop"] + EDGES + ["logit"])
        for i in range(0, len(items), args.batch):
            chunk = items[i : i + args.batch]
            feed = {"image": np.stack([load_crop(c) for c, _, _ in chunk])}
            if "embedding" in names:
                feed["embedding"] = np.array([e for _, _, e in chunk], np.float32)
            if "centre" in taps:
                feed.update(taps["centre"].feed([c for c, _, _ in chunk]))
            if "aligned" in taps:
                feed.update(taps["aligned"].feed([a for _, a, _ in chunk]))
            got = s.run(EDGES + ["logit"], {k: v for k, v in feed.items() if k in names})
            for k, (c, _, _) in enumerate(chunk):
                w.writerow([str(c.resolve())] + [f"{float(g.reshape(len(chunk), -1)[k, 0]):.7g}" for g in got])
            if i // args.batch % 20 == 0:
                print(f"{i + len(chunk)} / {len(items)}", flush=True)


# ----------------------------------------------------------------------------------------- table
def read_logits(paths):
    table = {}
    for p in paths:
        with open(p) as fh:
            for r in csv.DictReader(fh):
                table[r["crop"]] = {k: float(v) for k, v in r.items() if k != "crop"}
    return table


def raw_parts(rows):
    """Per part the logit it contributes in the shipped model before its weight: the image
    networks' own mean over both views, the embedding model as shipped (its weight is inside
    its Gemm), each --maps member unweighted."""
    return {p: np.array([sum(r[e] for e in edges) / len(edges) for r in rows]) for p, (edges, _) in PARTS.items()}


def fast_d_eer(bona, morph):
    """train.d_eer (the first unique score at which BPCER and APCER are closest, their mean
    there), vectorised."""
    t = np.unique(np.concatenate([bona, morph]))
    b = (len(bona) - np.searchsorted(np.sort(bona), t, side="left")) / len(bona)
    a = np.searchsorted(np.sort(morph), t, side="left") / len(morph)
    k = int(np.argmin(np.abs(b - a)))
    return (a[k] + b[k]) / 2


def fusion_factor(logits, raw, labels, grid):
    """ensemble.fusion_weight's factor (the grid weight, in units of the spread of `logits`,
    with the lowest validation D-EER; the first of equals), without its report."""
    unit = logits.std() / raw.std()

    def deer(w):
        fused = logits + w * unit * raw
        return fast_d_eer(fused[labels == 0], fused[labels == 1])

    return min(grid, key=deer) * unit


def combine(subset, raw, v8_weights, val, labels, persons, mode):
    """The joined logit of `subset` (a list of parts) on every row, and the factors used: the
    image networks' mean (over those kept), then each other part added with its weight, in
    ensemble.py's order; mode 'v8' keeps the joined model's own factors, 'refit' reads each off
    validation (ensemble.fusion_weight's grid and rule: lowest validation D-EER)."""
    kept_image = [p for p in IMAGE if p in subset]
    factors = {}
    if kept_image:
        total = np.mean([raw[p] for p in kept_image], axis=0)
        for p in kept_image:
            factors[p] = 1.0 / len(kept_image)
    else:
        total = None
    for p in [p for p in PARTS if p not in IMAGE and p in subset]:
        if total is None:
            total, factors[p] = raw[p].copy(), 1.0
            continue
        if mode == "v8":
            f = v8_weights[p]
        else:
            grid = WEIGHTS if p == "embedding" else MAPS_WEIGHTS
            f = float(fusion_factor(total[val], raw[p][val], labels, grid))
        factors[p] = f
        total = total + f * raw[p]
    return total, factors


def scores_of(logits, calibration):
    scale, bias = calibration
    return (1.0 / (1.0 + np.exp(-(np.float32(scale) * logits.astype(np.float32) + np.float32(bias))))).astype(np.float32)


def shipped_weights(model):
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    w = {p: float(inits[name][0]) for p, name in MAPS_WEIGHT.items()}
    w["embedding"] = 1.0
    return w


def load_everything(args):
    rows_by_crop = read_logits(args.logits)
    manifest = json.loads((Path(args.set) / "manifest.json").read_text())
    val_items = [i for i in crop_list(manifest, "val", Path(args.lfw_crops), Path(args.set_crops)) if str(i[0].resolve()) in rows_by_crop]
    groups = {"val": [(str(i[0].resolve()), i[1], i[2], i[3]) for i in val_items]}
    lfw_root = str(Path(args.lfw_crops).resolve())
    groups["lfw-all"] = [(c, 0, "lfw-all", "") for c in rows_by_crop if c.startswith(lfw_root + "/")]
    for spec in args.tool or []:
        name, folder = spec.split("=", 1)
        root = str(Path(folder).resolve())
        groups[name] = [(c, 1, name, "") for c in rows_by_crop if c.startswith(root + "/")]
    for spec in args.bona_fide or []:
        name, folder = spec.split("=", 1)
        root = str(Path(folder).resolve())
        groups[name] = [(c, 0, name, "") for c in rows_by_crop if c.startswith(root + "/")]
    order = [c for g in groups.values() for c, _, _, _ in g]
    rows = [rows_by_crop[c] for c in order]
    index, at = {}, 0
    for g, items in groups.items():
        index[g] = np.arange(at, at + len(items))
        at += len(items)
    vi = index["val"]
    labels = np.array([i[1] for i in groups["val"]])
    persons = [i[3] for i in groups["val"]]
    sources = np.array([i[2] for i in groups["val"]])
    return rows, groups, index, vi, labels, persons, sources


def load_joined(args):
    """The joined model, its own weights, its parts' logits and the rows `load_everything` groups."""
    model = onnx.load(args.model)
    rows, *grouped = load_everything(args)
    return (model, shipped_weights(model), raw_parts(rows), rows, *grouped)


def evaluate(subset, raw, v8w, index, vi, labels, persons, sources, mode, tools, bona_extra):
    logits, factors = combine(subset, raw, v8w, vi, labels, persons, mode)
    calibration, _ = calibrate(logits[vi], labels)
    scores = scores_of(logits, calibration)
    sv = scores[vi]
    bona = sv[labels == 0]
    t = threshold_at_bpcer(bona, 0.01)
    out = {"parts": list(subset), "factors": {k: round(v, 6) for k, v in factors.items()}, "calibration": [round(c, 6) for c in calibration], "threshold": round(t, 6)}
    per = {"morph.py-val": (sv[labels == 1])}
    for v in ("full", "poisson", "splice"):
        per[f"morph.py-{v}"] = sv[sources == v]
    for name in tools:
        per[name] = scores[index[name]]
    res = {}
    for name, morph in per.items():
        if len(morph) == 0:
            continue
        res[name] = {"n": int(len(morph)), "d_eer": round(100 * fast_d_eer(bona, morph), 2), "apcer_at_bpcer1": round(100 * float(np.mean(morph < t)), 2)}
    # Cross-fitted on the two halves of the validation people (person_halves): calibration,
    # weights and threshold read off validation are in-sample; the D-EER of one half with
    # weights chosen on the other says how much of a difference is noise.
    if mode == "refit" and len(subset) > 1:
        half = person_halves(persons)
        cross = []
        for h in (0, 1):
            sel = half != h
            lg, _ = combine(subset, raw, v8w, vi[sel], labels[sel], None, mode)
            other = lg[vi][~sel]
            cross.append(round(100 * fast_d_eer(other[labels[~sel] == 0], other[labels[~sel] == 1]), 2))
        out["val_d_eer_cross_fitted_halves"] = cross
    out["tools"] = res
    out["bpcer"] = {"val-bona-fide": round(100 * float(np.mean(bona >= t)), 2), "lfw-all": round(100 * float(np.mean(scores[index["lfw-all"]] >= t)), 2)}
    for s in ("lfw", "post"):  # the validation people's photos as they are, their post-processed copies
        out["bpcer"][f"val-{s}"] = round(100 * float(np.mean(sv[sources == s] >= t)), 2)
    for name in bona_extra:
        out["bpcer"][name] = round(100 * float(np.mean(scores[index[name]] >= t)), 2)
    unseen = [n for n in tools]
    if unseen:
        out["unseen_mean_apcer"] = round(float(np.mean([res[n]["apcer_at_bpcer1"] for n in unseen])), 2)
        out["unseen_mean_d_eer"] = round(float(np.mean([res[n]["d_eer"] for n in unseen])), 2)
    return out


def cmd_table(args):
    model, v8w, raw, rows, groups, index, vi, labels, persons, sources = load_joined(args)
    tools = [s.split("=", 1)[0] for s in args.tool or []]
    bona_extra = [s.split("=", 1)[0] for s in args.bona_fide or []]
    print({g: len(v) for g, v in groups.items()}, flush=True)
    # The shipped model's own logit, recomputed from its parts, against its `logit` edge.
    full = list(PARTS)
    check, _ = combine(full, raw, v8w, vi, labels, persons, "v8")
    err = float(np.max(np.abs(check - np.array([r["logit"] for r in rows]))))
    print(f"parts recombined vs the model's logit: max |diff| {err:.2e}", flush=True)
    if err > 1e-3:
        raise SystemExit("the parts do not add up to the model's logit")
    subsets = [("all (v8 weights)", full, "v8"), ("all (refit)", full, "refit")]
    subsets += [(f"{p} alone", [p], "v8") for p in full]
    subsets += [("image CNNs alone (abs-sq + abs-fm)", list(IMAGE), "v8")]
    for mode in args.weights:
        subsets += [(f"without {p} ({mode})", [q for q in full if q != p], mode) for p in full]
        for spec in args.subset or []:
            subsets.append((f"{spec} ({mode})", spec.split(","), mode))
    if args.all_subsets:  # every non-empty subset of the parts, refitted
        from itertools import combinations
        named = {tuple(sub) for _, sub, _ in subsets}
        for k in range(2, len(full) + 1):
            for sub in combinations(full, k):
                if sub not in named:
                    subsets.append(("+".join(sub) + " (refit)", list(sub), "refit"))
    out = {}
    for name, subset, mode in subsets:
        out[name] = evaluate(subset, raw, v8w, index, vi, labels, persons, sources, mode, tools, bona_extra)
        r = out[name]
        print(f"{name:45s} val D-EER {r['tools']['morph.py-val']['d_eer']:5.2f} APCER {r['tools']['morph.py-val']['apcer_at_bpcer1']:5.2f} | "
              + " | ".join(f"{t} {r['tools'][t]['d_eer']:5.2f}/{r['tools'][t]['apcer_at_bpcer1']:5.2f}" for t in tools)
              + f" | LFW BPCER {r['bpcer']['lfw-all']:.2f}", flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(out, tools, bona_extra))


def markdown(out, tools, bona_extra) -> str:
    """The table as Markdown: D-EER / APCER at BPCER 1 % per tool, BPCER per bona fide set (%)."""
    cols = ["morph.py-val"] + tools
    head = ["model"] + [f"{c} D-EER / APCER" for c in cols] + ["unseen mean APCER", "BPCER LFW all"] + [f"BPCER {b}" for b in bona_extra] + ["val D-EER cross-fitted halves", "threshold"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in out.items():
        cells = [name] + [f"{r['tools'][c]['d_eer']:.2f} / {r['tools'][c]['apcer_at_bpcer1']:.2f}" for c in cols]
        cells += [f"{r.get('unseen_mean_apcer', float('nan')):.2f}", f"{r['bpcer']['lfw-all']:.2f}"] + [f"{r['bpcer'][b]:.2f}" for b in bona_extra]
        cells += [" / ".join(f"{x:.2f}" for x in r.get("val_d_eer_cross_fitted_halves", [])), f"{r['threshold']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- scores
def cmd_scores(args):
    """The same figures from `facegate-tools eval mad --scores` (the service's own pipeline): the
    threshold at BPCER 1 % on morph.py's validation bona fide photos and copies."""
    rows = [r for path in args.scores for r in csv.DictReader(open(path))]
    groups = {}
    def under(prefix):
        prefix = str(Path(prefix)).rstrip("/") + "/"
        return [r for r in rows if r["path"].startswith(prefix)]

    val = Path(args.val)
    kinds = {"val-bona-fide": (under(val / "bona_fide"), 0)}
    for variant in sorted(p.name for p in (val / "morph").iterdir()):
        kinds[f"morph.py-{variant}"] = (under(val / "morph" / variant), 1)
    kinds["morph.py-val"] = (under(val / "morph"), 1)
    for spec in args.tool or []:
        name, folder = spec.split("=", 1)
        kinds[name] = (under(folder), 1)
    for spec in args.bona_fide or []:
        name, folder = spec.split("=", 1)
        kinds[name] = (under(folder), 0)
    def values(rs):
        return np.array([float(r["score"]) for r in rs if r["score"] not in ("no_face", "failed")], np.float32)
    bona = values(kinds["val-bona-fide"][0])
    t = threshold_at_bpcer(bona, 0.01)
    out = {"scores": args.scores, "threshold_at_val_bpcer1": round(t, 6), "configured_threshold": args.threshold, "sets": {}}
    for name, (rs, label) in kinds.items():
        v = values(rs)
        entry = {"n": len(rs), "scored": int(len(v)), "no_face_or_failed": len(rs) - int(len(v))}
        if label == 1:
            entry |= {"d_eer": round(100 * fast_d_eer(bona, v), 2), "apcer_at_bpcer1": round(100 * float(np.mean(v < t)), 2)}
            if args.threshold is not None:
                entry["apcer_at_configured"] = round(100 * float(np.mean(v < np.float32(args.threshold))), 2)
        else:
            entry["bpcer_at_bpcer1_threshold"] = round(100 * float(np.mean(v >= t)), 2)
            if args.threshold is not None:
                entry["bpcer_at_configured"] = round(100 * float(np.mean(v >= np.float32(args.threshold))), 2)
        out["sets"][name] = entry
    unseen = [s.split("=", 1)[0] for s in args.tool or []]
    if unseen:
        out["unseen_mean_apcer"] = round(float(np.mean([out["sets"][n]["apcer_at_bpcer1"] for n in unseen])), 2)
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


# ----------------------------------------------------------------------------------------- build
def prune(model, keep_outputs=("morph",)):
    """The graph with only what `keep_outputs` needs: nodes, initializers, inputs (the image
    input always first, as the service expects)."""
    g = model.graph
    need, nodes = set(keep_outputs), []
    for n in reversed(list(g.node)):
        if any(o in need for o in n.output):
            nodes.append(n)
            need.update(x for x in n.input if x)
    nodes.reverse()
    del g.node[:]
    g.node.extend(nodes)
    inits = [i for i in g.initializer if i.name in need]
    del g.initializer[:]
    g.initializer.extend(inits)
    inputs = [i for i in g.input if i.name in need or i.name == "image"]
    del g.input[:]
    g.input.extend(inputs)
    return model


def cmd_build(args):
    model, v8w, raw, rows, groups, index, vi, labels, persons, sources = load_joined(args)
    subset = args.subset.split(",")
    unknown = [p for p in subset if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; known: {list(PARTS)}")
    mode = args.weights[0]
    logits, factors = combine(subset, raw, v8w, vi, labels, persons, mode)
    calibration, _ = calibrate(logits[vi], labels)
    scores = scores_of(logits, calibration)
    threshold = threshold_at_bpcer(scores[vi][labels == 0], 0.01)

    g = model.graph
    inits = {i.name: i for i in g.initializer}

    def set_init(name, value):
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))

    kept_image = [p for p in IMAGE if p in subset]
    others = [p for p in PARTS if p not in IMAGE and p in subset]
    summed = next(n for n in g.node if n.op_type == "Sum" and n.output[0] == "logit")
    parts = (["image_logit"] if kept_image else []) + [PARTS[p][1] for p in others]
    summed.input[:] = parts
    if kept_image:
        views = next(n for n in g.node if n.op_type == "Sum" and n.output[0] == "logit_sum")
        views.input[:] = [e for p in kept_image for e in PARTS[p][0]]
        set_init("views", [1.0 / (2 * len(kept_image))])
    for p in others:
        f = factors[p]
        if p == "embedding":
            set_init("head_w", numpy_helper.to_array(inits["head_w"]) * f)
            set_init("head_b", numpy_helper.to_array(inits["head_b"]) * f)
        else:
            set_init(MAPS_WEIGHT[p], [f])
    set_init("calibration_scale", [calibration[0]])
    set_init("calibration_bias", [calibration[1]])
    prune(model)
    props = {p.key: p.value for p in model.metadata_props}
    props.update({
        "facegate.threshold": f"{threshold:.4f}",
        "facegate.version": args.version,
        "facegate.input_size": str(SIZE),
        "facegate.context": str(args.context),
        "facegate.members": ",".join(subset),
    })
    del model.metadata_props[:]
    helper.set_model_props(model, props)
    if not any(i.name != "image" for i in model.graph.input):
        raise SystemExit("an image-only subset: use the image-only recipe (ensemble.py without --embeddings), not this")
    if "facegate.embedding_sha256" not in props:
        raise SystemExit("the model reads the recognizer but names none")
    model.doc_string = (
        f"{args.version}: facegate-mad-v8's members {', '.join(subset)} (tools/mad/members.py build), weights "
        f"{', '.join(f'{k} {v:.4g}' for k, v in factors.items())}; the sum scaled and shifted (Platt, on validation); "
        f"RGB 0..1 -> morph probability. Validation threshold at BPCER 1 %: {threshold:.4f}"
    )
    onnx.checker.check_model(model)
    weights = recognizer_weights(Path(args.recognizer))
    copied = {(tuple(w.shape), w.astype(np.float32).tobytes()) for w in weights.values()}
    if any((tuple(i.dims), numpy_helper.to_array(i).astype(np.float32).tobytes()) in copied for i in model.graph.initializer):
        raise SystemExit("the model would contain one of the recognizer's weights")
    Path(args.out).write_bytes(model.SerializeToString())
    # Checked: the written graph, run on some faces, against the logit combined from the rows.
    check_rows = [c for c, _, _, _ in groups["val"]][:: max(1, len(groups["val"]) // 200)]
    aligned_of = {}
    for triple in args.faces or []:
        for c, a, e in faces_of(*triple):
            aligned_of[str(c.resolve())] = (a, e)
    if check_rows and all(c in aligned_of for c in check_rows):
        s = session(with_weights(exposing(model, ["logit"]), weights), 2)
        names = {i.name for i in s.get_inputs()}
        feed = {"image": np.stack([load_crop(c) for c in check_rows])}
        if "embedding" in names:
            feed["embedding"] = np.array([aligned_of[c][1] for c in check_rows], np.float32)
        for view, prefix in (("centre", "recognizer:"), ("aligned", "recognizer_aligned:")):
            if any(n.startswith(prefix) for n in names):
                t = RecognizerTaps(Path(args.recognizer), view)
                feed.update(t.feed([c if view == "centre" else aligned_of[c][0] for c in check_rows]))
        got_logit, got = s.run(["logit", "morph"], {k: v for k, v in feed.items() if k in names})
        pos = {c: k for k, c in enumerate([c for c, _, _, _ in groups["val"]])}
        want = logits[vi][[pos[c] for c in check_rows]]
        err = float(np.max(np.abs(got_logit[:, 0] - want)))
        print(f"written graph vs combined parts on {len(check_rows)} faces: max |logit diff| {err:.2e}")
        if err > 1e-3:
            raise SystemExit("the written graph disagrees with its parts")
    else:
        print("not checked against the graph: give --faces for the validation faces")
    sha = hashlib.sha256(Path(args.out).read_bytes()).hexdigest()
    print(json.dumps({"out": args.out, "sha256": sha, "bytes": Path(args.out).stat().st_size, "threshold": round(threshold, 4),
                      "factors": factors, "calibration": calibration, "inputs": [i.name for i in model.graph.input if not i.name.startswith("recognizer_weight:")],
                      "recognizer_weight_inputs": sum(i.name.startswith("recognizer_weight:") for i in model.graph.input), "metadata": props}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    lg = sub.add_parser("logits", help="each member's logit on every face, as CSV")
    lg.add_argument("--model", required=True, help="the joined model (ensemble.py's output, e.g. v8)")
    lg.add_argument("--recognizer", default="models/files/w600k_mbf.onnx")
    lg.add_argument("--faces", nargs=3, action="append", required=True, metavar=("JSONL", "CROPS", "ALIGNED"), help="a `facegate-tools faces --crops CROPS --aligned ALIGNED` output")
    lg.add_argument("--out", required=True)
    lg.add_argument("--batch", type=int, default=64)
    lg.add_argument("--threads", type=int, default=1)
    for name, fn in (("table", cmd_table), ("build", cmd_build)):
        p = sub.add_parser(name)
        p.set_defaults(fn=fn)
        p.add_argument("--model", required=True, help="the joined model the --logits rows came from")
        p.add_argument("--logits", nargs="+", required=True, help="`logits` outputs")
        p.add_argument("--set", required=True, help="morph.py's output folder (manifest.json)")
        p.add_argument("--lfw-crops", required=True)
        p.add_argument("--set-crops", required=True)
        p.add_argument("--tool", action="append", help="NAME=CROPS_DIR: the crops of one tool's morphs (an unseen-tool column)")
        p.add_argument("--bona-fide", action="append", help="NAME=CROPS_DIR: more bona fide crops, BPCER only")
        p.add_argument("--weights", nargs="+", choices=["refit", "v8"], default=["refit"], help="how a subset's weights are set (build: the first)")
    tb = sub.choices["table"]
    tb.add_argument("--subset", action="append", help="comma-separated parts to join as well (of: " + ", ".join(PARTS) + ")")
    tb.add_argument("--out", required=True)
    tb.add_argument("--markdown", help="also write the table as Markdown here")
    tb.add_argument("--all-subsets", action="store_true", help="also every subset of two parts or more (refit)")
    bd = sub.choices["build"]
    bd.add_argument("--subset", required=True, help="comma-separated parts to keep")
    bd.add_argument("--recognizer", default="models/files/w600k_mbf.onnx")
    bd.add_argument("--faces", nargs=3, action="append", metavar=("JSONL", "CROPS", "ALIGNED"), help="the validation faces, to check the written graph")
    bd.add_argument("--version", required=True, help="facegate.version")
    bd.add_argument("--context", type=float, default=1.5, help="facegate.context: the crop's context the members were trained with (pipeline.mad.context)")
    bd.add_argument("--out", required=True)
    lg.set_defaults(fn=cmd_logits)
    sc = sub.add_parser("scores", help="the same figures from `facegate-tools eval mad --scores` (the real pipeline)")
    sc.set_defaults(fn=cmd_scores)
    sc.add_argument("--scores", nargs="+", required=True, help="facegate-tools eval mad --scores CSVs (one model)")
    sc.add_argument("--val", required=True, help="morph.py's OUT/eval as given to `eval mad --data`")
    sc.add_argument("--tool", action="append", help="NAME=DIR: morphs given to `eval mad --morphs` (as written there)")
    sc.add_argument("--bona-fide", action="append", help="NAME=DIR: bona fide given to `eval mad --bona-fide`")
    sc.add_argument("--threshold", type=float, help="the threshold the model ships with, measured too")
    sc.add_argument("--out")
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
