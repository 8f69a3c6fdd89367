#!/usr/bin/env python3
"""Where a joined MAD model's validation errors are, and what its parts could still give.

ensemble.py reports a model's figures; this script looks inside one (`--model`: the
six-member model build.sh writes to its work directory), on the validation split of the
morph set:

- its errors at the D-EER score split by what morph.py did to each image (post-processing,
  blend weight, how alike the two people are, from the set's manifest): the six-member
  model misses sharpened morphs and refuses blurred bona fide copies most;
- the threshold set at BPCER 1 % on one half of the validation people, measured on the other
  (threshold and calibration are both read off validation);
- the parts of its joined logit (the inputs of the `Sum` that makes it) refitted jointly, a
  logistic regression cross-fitted on the same halves, against the weights ensemble.py
  read off one at a time;
- the parts that read the recognizer's feature maps also run on the mirrored faces (the
  residual networks already see the crop and its mirror image), averaged over both.

Nothing is written. Usage:
  probe.py --set DIR --lfw-crops DIR --set-crops DIR --lfw-aligned DIR --set-aligned DIR
           --embeddings LFW.jsonl SET.jsonl --recognizer w600k_mbf.onnx [--model MODEL.onnx]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from sklearn.linear_model import LogisticRegression

from ensemble import distinct, embeddings_of, person_halves, recognizer_weights, run, view_feeds, with_weights
from train import crop_list, d_eer, eer_point, load_crop, threshold_at_bpcer


def part_names(model) -> list:
    """The inputs of the Sum whose output is the joined logit."""
    return list(next(n for n in model.graph.node if n.op_type == "Sum" and n.output[0] == "logit").input)


class Mirrored:
    """RecognizerTaps whose `feed` reads the mirrored faces."""

    def __init__(self, taps):
        self.taps = taps

    def feed(self, paths):
        return self.taps.feed(paths, process=lambda _, face: face[:, ::-1])


def errors_by_processing(item_meta, labels, z):
    """Error rates at the D-EER score of `z`, by what morph.py did to the images."""
    t, _ = eer_point(z[labels == 0], z[labels == 1])
    print(f"errors at the D-EER score {t:.4g} (APCER of morphs, BPCER of bona fide images):")
    groups = {}
    for (label, post, alpha, cosine), s in zip(item_meta, z):
        steps = [k for k in ("sharpen", "print-scan", "smooth", "resize") if k in post] or ["no processing"]
        keys = [f"post: {k}" for k in steps]
        if label == 1:
            keys += [f"|alpha - 0.5| {0.05 * np.floor(abs(alpha - 0.5) / 0.05):.2f}+", f"cosine {0.1 * np.floor(cosine / 0.1):.1f}+"]
        for k in keys:
            groups.setdefault((label, k), []).append(s)
    for (label, k), s in sorted(groups.items()):
        s = np.array(s)
        rate = np.mean(s < t) if label else np.mean(s >= t)
        print(f"  {'morph    ' if label else 'bona fide'} {k:28} {100 * rate:5.1f} %  ({len(s)} images)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for a in ("--set", "--lfw-crops", "--set-crops", "--lfw-aligned", "--set-aligned", "--recognizer"):
        ap.add_argument(a, required=True)
    ap.add_argument("--embeddings", nargs=2, required=True, metavar="JSONL")
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[2] / "models/mad/facegate-mad-v8.onnx"))
    args = ap.parse_args()

    manifest = json.loads((Path(args.set) / "manifest.json").read_text())
    lfw, crops = Path(args.lfw_crops), Path(args.set_crops)
    items = crop_list(manifest, "val", lfw, crops)
    split = manifest["splits"]["val"]
    meta = {crops / Path(r["file"]).with_suffix(".png"): (0, r["post"], 0.0, 0.0) for r in split["bona_fide_post"]}
    meta |= {crops / Path(r["file"]).with_suffix(".png"): (1, r["post"], r["alpha"], r["cosine"]) for r in split["morphs"]}
    item_meta = [meta.get(i[0], (0, "", 0.0, 0.0)) for i in items]
    labels = np.array([i[1] for i in items])
    half = person_halves([i[3] for i in items])
    images = np.stack([load_crop(i[0]) for i in items])
    embeddings = embeddings_of(items, args.embeddings, [lfw, crops])

    model = onnx.load(args.model)
    parts = part_names(model)
    for p in parts + ["logit"]:
        model.graph.output.append(helper.make_tensor_value_info(p, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(with_weights(model, recognizer_weights(Path(args.recognizer))).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = distinct(view_feeds(model, {}, Path(args.recognizer), items, lfw, crops, args))
    x = run(session, images, parts + ["logit"], embeddings, feeds=feeds)
    x, joined = x[:, :-1], x[:, -1]
    if not np.allclose(x.sum(1), joined, atol=1e-3):
        raise SystemExit("the parts do not add up to the joined logit")

    def deer(z, sel=True):
        return 100 * d_eer(z[(labels == 0) & sel], z[(labels == 1) & sel])

    def halves(z):
        return " / ".join(f"{deer(z, half == h):.2f}" for h in (0, 1))

    print(f"{args.model}: validation D-EER {deer(joined):.2f} %, on the two halves of the people {halves(joined)} %")
    errors_by_processing(item_meta, labels, joined)

    bona = joined[labels == 0]
    shipped = threshold_at_bpcer(bona, 0.01)
    print(f"threshold at BPCER 1 % on everyone {shipped:.4g}: BPCER {100 * np.mean(bona >= shipped):.2f} %, APCER {100 * np.mean(joined[labels == 1] < shipped):.2f} %")
    for h in (0, 1):
        t = threshold_at_bpcer(joined[(labels == 0) & (half == h)], 0.01)
        other = half != h
        print(f"  set on half {h} ({t:.4g}), on the other half: BPCER {100 * np.mean(joined[(labels == 0) & other] >= t):.2f} %, APCER {100 * np.mean(joined[(labels == 1) & other] < t):.2f} %")

    def refit(z):
        """Cross-fitted D-EER of a logistic regression on the columns of `z`, per half."""
        out = []
        for h in (0, 1):
            reg = LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced").fit(z[half != h], labels[half != h])
            out.append(f"{deer(reg.decision_function(z), half == h):.2f}")
        return " / ".join(out)

    print("parts alone: " + ", ".join(f"{p} {deer(x[:, j]):.2f} %" for j, p in enumerate(parts)))
    print(f"parts refitted jointly, cross-fitted: {refit(x)} % (as shipped {halves(joined)} %)")

    m = run(session, images, parts, embeddings, feeds=[(Mirrored(taps), paths) for taps, paths in feeds])
    changed = [j for j in range(len(parts)) if not np.allclose(m[:, j], x[:, j], atol=1e-4)]
    both = x.copy()
    both[:, changed] = (x[:, changed] + m[:, changed]) / 2
    print("parts reading the recognizer's maps, alone on the face / averaged with the mirrored face: "
          + ", ".join(f"{parts[j]} {deer(x[:, j]):.2f} / {deer(both[:, j]):.2f} %" for j in changed))
    z = both.sum(1)
    t = threshold_at_bpcer(z[labels == 0], 0.01)
    print(f"joined with those averaged: D-EER {deer(z):.2f} % (halves {halves(z)} %), APCER at BPCER 1 % {100 * np.mean(z[labels == 1] < t):.2f} %; "
          f"refitted jointly, cross-fitted: {refit(both)} %")


if __name__ == "__main__":
    main()
