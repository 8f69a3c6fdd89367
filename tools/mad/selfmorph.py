#!/usr/bin/env python3
"""Self-morphs: morph.py's morphing applied to a photo and a slightly altered copy of itself.

A detector trained only on morph.py's morphs learns morph.py (BENCHMARKS.md: the MAD model
is far weaker on cruder blends than on morph.py's own). What every landmark morph has in common is not the tool but the
operation: two images whose contours do not quite agree, warped and averaged, the result
resampled twice and pasted back. A self-morph makes exactly those traces with no second
person, so no one tool's look: the copy B of photo A is
  - deformed by a smooth random displacement field (a few per cent of the face width, as two
    faces' shapes differ where no landmark pins them) and a small similarity,
  - changed in light and sharpness (gain, gamma, colour balance, blur or sharpening),
and its 68 landmarks are found anew on B by the same landmark model, so that their error is
a real detector's. Then `morph.morph_pair(A, B)` morphs them as morph.py morphs two people
(same variants, weights and post-processing). The identity does not change, so the
recognizer's embedding says nothing about these: they are for the image networks only.

Measured and not adopted (BENCHMARKS.md): a network trained on these alone separates morph.py's
morphs at 22 % D-EER but not crude whole-image blends (above 50 %), and added to morph.py's
morphs they make crude blends harder to catch, not easier: what they teach is the double
resampling of a warp, not the blend.

Only training-split photos are used (morph.py's manifest), so validation people stay unseen.
Writes OUT/morph/<variant>/NNNNN.(jpg|png) and OUT/manifest.json in crossgen.py's layout, for
`facegate-tools faces OUT --crops CROPS` and `train.py --extra-set OUT --extra-crops CROPS`.

Usage: selfmorph.py --set SET --faces lfw.jsonl --images lfw/images --landmarks fr_landmark.onnx --out DIR [--count 8000]
"""
import json
import random
from pathlib import Path

import cv2
import numpy as np

from morph import VARIANTS, Landmarks68, morph_pair, photo_arguments, post_process, save, write_morph_list


def deform(img: np.ndarray, eyes: float, rng: random.Random) -> np.ndarray:
    """A smooth random displacement field (4x4 control grid, cubic) plus a small similarity."""
    h, w = img.shape[:2]
    nr = np.random.default_rng(rng.randrange(2**32))
    amp = rng.uniform(0.02, 0.08) * eyes
    field = nr.normal(0, amp, (4, 4, 2)).astype(np.float32)
    field = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
    angle, scale = np.radians(rng.uniform(-2, 2)), rng.uniform(0.97, 1.03)
    shift = np.array([rng.uniform(-0.04, 0.04), rng.uniform(-0.04, 0.04)]) * eyes
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w / 2, h / 2
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    map_x = cx + c * (xs - cx) - s * (ys - cy) + shift[0] + field[..., 0]
    map_y = cy + s * (xs - cx) + c * (ys - cy) + shift[1] + field[..., 1]
    return cv2.remap(img, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def relight(img: np.ndarray, rng: random.Random) -> np.ndarray:
    """Another exposure of the same face: gain, gamma, colour balance, then blur or sharpening."""
    x = img.astype(np.float32) / 255.0
    x = np.clip(x * rng.uniform(0.9, 1.1) + rng.uniform(-0.04, 0.04), 0, 1) ** rng.uniform(0.85, 1.15)
    x *= np.array([rng.uniform(0.95, 1.05) for _ in range(3)], np.float32)
    x = np.clip(x * 255.0, 0, 255)
    r = rng.random()
    if r < 0.35:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.4, 1.2))
    elif r < 0.6:
        amount = rng.uniform(0.2, 0.6)
        x = cv2.addWeighted(x, 1 + amount, cv2.GaussianBlur(x, (0, 0), 1.0), -amount, 0)
    return np.clip(x, 0, 255).astype(np.uint8)


def main() -> None:
    ap = photo_arguments(__doc__)
    ap.add_argument("--set", required=True, help="morph.py's output folder (its manifest's training split)")
    ap.add_argument("--landmarks", required=True, help="fr_landmark.onnx")
    ap.add_argument("--count", type=int, default=8000, help="self-morphs, in equal numbers per variant")
    ap.add_argument("--min-quality", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=20261128)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    train = set(json.loads((Path(args.set) / "manifest.json").read_text())["splits"]["train"]["bona_fide"])
    faces = [r for r in map(json.loads, open(args.faces)) if r.get("face") and r["path"] in train and r["quality"] >= args.min_quality]
    faces.sort(key=lambda r: r["path"])
    landmarks = Landmarks68(args.landmarks)
    out = Path(args.out)
    listed, skipped = [], 0
    for k in range(args.count):
        r = rng.choice(faces)
        variant = VARIANTS[k % len(VARIANTS)]
        alpha = rng.uniform(0.3, 0.7)
        a = cv2.imread(str(Path(args.images) / r["path"]), cv2.IMREAD_COLOR)
        five = np.array(r["face"]["landmarks"], np.float32)
        b = relight(deform(a, float(np.linalg.norm(five[1] - five[0])), rng), rng)
        box = r["face"]["bbox"]
        img = morph_pair(a, landmarks(a, box), b, landmarks(b, box), alpha, variant, rng)
        if img is None:
            skipped += 1
            continue
        img, quality, post = post_process(img, rng)
        dest = save(img, out / "morph" / variant / f"{k:05d}", quality)
        listed.append({"file": str(dest.relative_to(out)), "a": r["path"], "b": r["path"], "alpha": round(alpha, 4),
                       "variant": f"self-{variant}", "post": post})
    write_morph_list(out, args.seed, "train", listed)
    print(f"wrote {len(listed)} self-morphs ({skipped} skipped) from {len(faces)} training photos to {out}")


if __name__ == "__main__":
    main()
