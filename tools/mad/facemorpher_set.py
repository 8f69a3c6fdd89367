#!/usr/bin/env python3
"""Morphs made by another tool, FaceMorpher, for a cross-tool check of the MAD model.

morph.py, crossgen.py and selfmorph.py are facegate's own code; real attackers use tools
like FaceMorpher (PyPI `facemorpher`, MIT), one of the landmark morphers behind public
MAD benchmarks. It finds 77 points with Stasm (PyPI `stasm`, Stasm's BSD-style licence;
an active shape model, not the neural 68-point model morph.py uses), scales and crops both
photos around the face (`aligner.resize_align`), warps them triangle by triangle with its
own bilinear sampler (`warper.warp_image`) and blends them (`blender`). Everything below is
the package's own code; this script only feeds it facegate's pairs and saves the results:
  average   FaceMorpher's command line with --background=average: the blended face
            (inside the landmarks' eroded hull, hard-edged) over the blend of the two
            aligned photos;
  feather   the same blended face over the first aligned photo through FaceMorpher's
            alpha_feathering (what a user of its API does to keep one background).
The bona fide side is the validation split's own (linked from morph.py's eval folder) plus
`aligned`: the first photo of each pair through FaceMorpher's scale-and-crop alone, so a
score is not the tool's resampling being caught.

Stasm's face detector finds no face in most of LFW's 150x150 photos, so its points are found
on a copy scaled up twice (bicubic) and halved; the morph itself is made at the photos' size.
FaceMorpher's `percent` is the first photo's weight: 1 - the manifest's alpha.

Validation (`--split val`, the default): saved as JPEG quality 90, like crossgen.py's, for
`facegate-tools eval mad --data OUT`. Training (`--split train`): the morphs and the `aligned`
bona fide copies (OUT/bona_fide_post/aligned, so that the tool's scaling is not what tells a
morph) each through morph.py's post-processing (seeded), listed in OUT/manifest.json, for `train.py --extra-set OUT --extra-crops C` after `facegate-tools faces OUT --crops C`.

Needs `requirements-facemorpher.txt` (Stasm compiles against the system's OpenCV:
Debian `libopencv-dev`; see tools/mad/README).

Usage: facemorpher_set.py --set SET --images lfw/images --out DIR [--split val] [--pairs 1000]
"""
import argparse
import json
import random
from pathlib import Path

import cv2
import numpy as np
from facemorpher import aligner, blender, locator, warper

from morph import finish, link_validation_bona_fide, pair_arguments, save, write_morph_list

KINDS = ("average", "feather")
# Stasm's detector needs faces larger than LFW's; the points are found at this scale.
UPSCALE = 2


def points(img):
    """Stasm's 77 points plus FaceMorpher's two boundary points, at the photo's scale, or None."""
    up = cv2.resize(img, None, fx=UPSCALE, fy=UPSCALE, interpolation=cv2.INTER_CUBIC)
    found = locator.face_points(up)
    if len(found) == 0:
        return None
    return np.round(found / UPSCALE).astype(np.int32)


def facemorph(a, pa, b, pb, percent):
    """FaceMorpher's morph of A and B at weight `percent` on A: the aligned A, and both kinds."""
    size = a.shape[:2]
    a, pa = aligner.resize_align(a, pa.copy(), size)
    b, pb = aligner.resize_align(b, pb.copy(), size)
    mean = locator.weighted_average_points(pa, pb, percent)
    face = blender.weighted_average(warper.warp_image(a, pa, mean, size), warper.warp_image(b, pb, mean, size), percent)
    mask = blender.mask_from_points(size, mean)
    background = blender.weighted_average(a, b, percent)
    return a, {"average": blender.overlay_image(face, mask, background), "feather": blender.alpha_feathering(face, a, mask)}


def main() -> None:
    ap = pair_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--images", required=True, help="the photos the manifest names")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    manifest = json.loads((Path(args.set) / "manifest.json").read_text())
    out = Path(args.out)
    if args.split == "val":
        link_validation_bona_fide(Path(args.set), out)
    made, listed, bona_post, no_points, found = {k: 0 for k in KINDS}, [], [], set(), {}
    for i, m in enumerate(manifest["splits"][args.split]["morphs"][: args.pairs]):
        a, b = (cv2.imread(str(Path(args.images) / name), cv2.IMREAD_COLOR) for name in (m["a"], m["b"]))
        # Photos recur across pairs; Stasm is the slow part, so its points are kept.
        for name, img in ((m["a"], a), (m["b"], b)):
            if name not in found:
                found[name] = points(img)
        pa, pb = found[m["a"]], found[m["b"]]
        if pa is None or pb is None:
            no_points.update(n for n in (m["a"], m["b"]) if found[n] is None)
            continue
        aligned, images = facemorph(a, pa, b, pb, 1.0 - m["alpha"])
        img, quality, post = finish(aligned, args.split, rng)
        if args.split == "val":
            save(img, out / "bona_fide" / "aligned" / f"{i:05d}", quality)
        else:
            dest = save(img, out / "bona_fide_post" / "aligned" / f"{i:05d}", quality)
            bona_post.append({"file": str(dest.relative_to(out)), "source": m["a"], "post": post})
        for kind, img in images.items():
            img, quality, post = finish(img, args.split, rng)
            dest = save(img, out / "morph" / kind / f"{i:05d}", quality)
            listed.append({"file": str(dest.relative_to(out)), "a": m["a"], "b": m["b"], "alpha": m["alpha"], "variant": f"fm-{kind}", "post": post})
            made[kind] += 1
    write_morph_list(out, args.seed, args.split, listed, bona_post)
    print(f"wrote {made} to {out}/morph and {out}/manifest.json; Stasm found no face in {len(no_points)} photos")


if __name__ == "__main__":
    main()
