#!/usr/bin/env python3
"""Morphs made by cruder methods than morph.py's, for a cross-generator check of the MAD model.

The model learns from morph.py's dense-landmark morphs (and one network also from
FaceMorpher's); real attackers also use simpler tools. This makes, from the same validation pairs (same people, same weights),
morphs the model never saw in training:
  average       the second photo brought into the first one's frame by a similarity on
                the service's 5 landmarks, and the two whole images blended (no warp:
                every contour that does not line up is doubled);
  average-face  the same blend inside a feathered ellipse around the face, pasted into the
                first photo (what an image editor and a soft brush make).
Validation (`--split val`, the default): each saved as JPEG quality 90; the bona fide
side is the validation split's own (linked from morph.py's eval folder), so
`facegate-tools eval mad --data OUT` measures the shipped threshold against these morphs and the
usual bona fide photos.
Training (`--split train`): each goes through morph.py's post-processing (seeded), and
OUT/manifest.json lists them as morph.py lists its own, for `train.py --extra-set`.

Usage: crossgen.py --set SET --faces lfw.jsonl --images lfw/images --out DIR [--split val] [--pairs 1000]
"""
import json
import random
from pathlib import Path

import cv2
import numpy as np

from morph import finish, link_validation_bona_fide, pair_arguments, photo_arguments, save, write_morph_list

KINDS = ("average", "average-face")


def blend(a, la, b, lb, alpha):
    """B moved onto A by a similarity on the 5 landmarks, blended with weight alpha."""
    m, _ = cv2.estimateAffinePartial2D(lb, la, method=cv2.LMEDS)
    if m is None:
        return None
    h, w = a.shape[:2]
    b = cv2.warpAffine(b, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return (1 - alpha) * a.astype(np.float32) + alpha * b.astype(np.float32)


def face_ellipse(la, w, h):
    """A soft mask over the face: an ellipse around the 5 landmarks, feathered."""
    centre = la.mean(axis=0)
    eyes = np.linalg.norm(la[1] - la[0])
    mask = np.zeros((h, w), np.float32)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1] - 0.1 * eyes)), (int(1.1 * eyes), int(1.5 * eyes)), 0, 0, 360, 1.0, -1)
    k = max(3, int(0.35 * eyes) | 1)
    return cv2.GaussianBlur(mask, (2 * k + 1, 2 * k + 1), 0)[..., None]


def main() -> None:
    args = pair_arguments(photo_arguments(__doc__)).parse_args()
    rng = random.Random(args.seed)
    manifest = json.loads((Path(args.set) / "manifest.json").read_text())
    landmarks = {}
    for line in open(args.faces):
        r = json.loads(line)
        if r.get("face"):
            landmarks[r["path"]] = np.array(r["face"]["landmarks"], np.float32)
    out = Path(args.out)
    if args.split == "val":
        link_validation_bona_fide(Path(args.set), out)
    made, listed = {k: 0 for k in KINDS}, []
    for i, m in enumerate(manifest["splits"][args.split]["morphs"][: args.pairs]):
        if m["a"] not in landmarks or m["b"] not in landmarks:
            continue
        a = cv2.imread(str(Path(args.images) / m["a"]), cv2.IMREAD_COLOR)
        b = cv2.imread(str(Path(args.images) / m["b"]), cv2.IMREAD_COLOR)
        mixed = blend(a, landmarks[m["a"]], b, landmarks[m["b"]], m["alpha"])
        if mixed is None:
            continue
        soft = face_ellipse(landmarks[m["a"]], a.shape[1], a.shape[0])
        images = {"average": mixed, "average-face": soft * mixed + (1 - soft) * a.astype(np.float32)}
        for kind, img in images.items():
            img, quality, post = finish(np.clip(img, 0, 255).astype(np.uint8), args.split, rng)
            dest = save(img, out / "morph" / kind / f"{i:05d}", quality)
            listed.append({"file": str(dest.relative_to(out)), "a": m["a"], "b": m["b"], "alpha": m["alpha"], "variant": kind, "post": post})
            made[kind] += 1
    write_morph_list(out, args.seed, args.split, listed)
    print(f"wrote {made} to {out}/morph and {out}/manifest.json")


if __name__ == "__main__":
    main()
