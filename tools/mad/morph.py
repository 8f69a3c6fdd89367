#!/usr/bin/env python3
"""Generate face morphs the way an attacker would, reproducibly, for training and
measuring facegate's MAD model.

Input is what `facegate-tools faces DIR --out FILE` wrote (face box, 5 landmarks and the
service's own embedding per image). The people are split by identity into train and
validation (never one person in both); within each split every morph is made from two
different people chosen among each other's most similar faces (by the recognizer), as
an attacker picks an accomplice who already looks alike.

A morph: 68 landmarks per face (faceplugin's fr_landmark.onnx) plus the image border,
the second face brought into the first one's frame by a similarity transform, both
warped triangle by triangle (Delaunay) to the weighted average shape, blended with a
weight drawn from 0.3-0.7, and then, by variant:
  splice   the morphed face region pasted into the first source's (warped) photo
           through a feathered mask after matching its colour to the surroundings;
  poisson  the same region pasted with Poisson (seamless) cloning;
  full     the whole blended image (hair and background ghosted as well).
Every morph then goes through the post-processing real morphs see: resizing, JPEG
recompression, mild sharpening, print-and-scan-like blur and noise, or denoising /
retouching. The same
post-processing is applied to a set of bona fide copies, so that the detector cannot
learn "post-processed" for "morph".

Usage: morph.py --faces lfw.jsonl --images DIR --landmarks fr_landmark.onnx --out DIR
Writes OUT/{train,val}/{bona_fide,morph}/<source>/..., OUT/manifest.json (the split,
every pair with its weight, variant and post-processing, the seed), and OUT/eval/, the
validation split as links laid out for `facegate-tools eval mad --data OUT/eval`.
The pair choice uses the people's mean embeddings; each morph takes a random good photo
(quality >= --min-quality) of each, so one person appears under several poses and lights.
"""
import argparse
import hashlib
import json
import random
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from scipy.spatial import Delaunay

VARIANTS = ("splice", "poisson", "full")


def person_of(path: str) -> str:
    return Path(path).parent.name or Path(path).stem


def split_of(person: str, seed: int, val_share: float) -> str:
    """Stable identity split: a keyed hash of the name, independent of file order."""
    h = hashlib.sha256(f"{seed}:{person}".encode()).digest()
    return "val" if int.from_bytes(h[:8], "big") / 2**64 < val_share else "train"


class Landmarks68:
    """faceplugin's 68-point model: the face box crop, 64x64 grey / 256, output in box units."""

    def __init__(self, path: str):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def __call__(self, bgr: np.ndarray, box) -> np.ndarray:
        h, w = bgr.shape[:2]
        x1, y1, x2, y2 = [int(round(v)) for v in box]
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = min(x2, w - 1), min(y2, h - 1)
        bw, bh = max(x2 - x1, 1), max(y2 - y1, 1)
        crop = cv2.cvtColor(cv2.resize(bgr[y1:y2, x1:x2], (64, 64)), cv2.COLOR_BGR2GRAY)
        x = (crop.astype(np.float32) / 256.0)[None, None]
        out = self.session.run(None, {"input": x})[0].reshape(68, 2)
        return np.stack([out[:, 0] * bw + x1, out[:, 1] * bh + y1], axis=1).astype(np.float32)


def border_points(w: int, h: int) -> np.ndarray:
    xs, ys = [0, w // 2, w - 1], [0, h // 2, h - 1]
    return np.array([(x, y) for x in xs for y in ys if (x, y) != (w // 2, h // 2)], np.float32)


def warp_to(img: np.ndarray, src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Piecewise-affine warp moving points `src` of `img` onto `dst`."""
    out = np.zeros_like(img, dtype=np.float32)
    h, w = img.shape[:2]
    for t in tris:
        s, d = src[t], dst[t]
        x, y, bw, bh = cv2.boundingRect(d.astype(np.float32))
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + bw, w), min(y + bh, h)
        if x1 <= x0 or y1 <= y0:
            continue
        m = cv2.getAffineTransform(s.astype(np.float32), (d - [x0, y0]).astype(np.float32))
        patch = cv2.warpAffine(img, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(mask, np.round(d - [x0, y0]).astype(np.int32), 1, lineType=cv2.LINE_8)
        region = out[y0:y1, x0:x1]
        region[mask > 0] = patch[mask > 0]
    return out


def face_mask(shape: np.ndarray, w: int, h: int) -> np.ndarray:
    """The face region: hull of the 68 points, raised over the forehead (the model's
    points stop at the eyebrows)."""
    brows = shape[17:27].copy()
    chin = shape[8]
    lift = 0.25 * (chin[1] - brows[:, 1].mean())
    brows[:, 1] -= lift
    pts = np.concatenate([shape[0:17], brows])
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 255)
    return mask


def morph_pair(a: np.ndarray, la: np.ndarray, b: np.ndarray, lb: np.ndarray, alpha: float, variant: str, rng: random.Random):
    h, w = a.shape[:2]
    # Bring B into A's frame: a similarity on the 68 points.
    m, _ = cv2.estimateAffinePartial2D(lb, la, method=cv2.LMEDS)
    if m is None:
        return None
    b = cv2.warpAffine(b, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    lb = (np.c_[lb, np.ones(len(lb))] @ m.T).astype(np.float32)
    border = border_points(w, h)
    pa, pb = np.concatenate([la, border]), np.concatenate([lb, border])
    avg = (1 - alpha) * pa + alpha * pb
    tris = Delaunay(avg).simplices
    wa = warp_to(a, pa, avg, tris)
    wb = warp_to(b, pb, avg, tris)
    blend = (1 - alpha) * wa + alpha * wb
    if variant == "full":
        return np.clip(blend, 0, 255).astype(np.uint8)
    mask = face_mask(avg[:68], w, h)
    if variant == "poisson":
        x, y, bw, bh = cv2.boundingRect(mask)
        centre = (x + bw // 2, y + bh // 2)
        try:
            return cv2.seamlessClone(np.clip(blend, 0, 255).astype(np.uint8), np.clip(wa, 0, 255).astype(np.uint8), mask, centre, cv2.NORMAL_CLONE)
        except cv2.error:
            return None
    # splice: match the morph's colour to A inside the mask, then feather the seam.
    inside = mask > 0
    for c in range(3):
        ms, ss = blend[..., c][inside].mean(), blend[..., c][inside].std() + 1e-3
        mt, st = wa[..., c][inside].mean(), wa[..., c][inside].std() + 1e-3
        blend[..., c] = (blend[..., c] - ms) * (st / ss) + mt
    k = max(3, int(0.06 * w) | 1)
    soft = cv2.GaussianBlur(cv2.erode(mask, np.ones((k, k), np.uint8)), (2 * k + 1, 2 * k + 1), 0).astype(np.float32)[..., None] / 255.0
    return np.clip(soft * blend + (1 - soft) * wa, 0, 255).astype(np.uint8)


def post_process(img: np.ndarray, rng: random.Random):
    """What a morph goes through before it is submitted: returns (image, JPEG quality or
    None for PNG, description)."""
    steps = []
    h, w = img.shape[:2]
    if rng.random() < 0.6:
        f = rng.uniform(0.55, 0.95)
        img = cv2.resize(img, (max(32, round(w * f)), max(32, round(h * f))), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
            steps.append(f"resize {f:.2f} and back")
        else:
            steps.append(f"resize {f:.2f}")
    r = rng.random()
    if r < 0.3:
        amount = rng.uniform(0.3, 0.8)
        blur = cv2.GaussianBlur(img, (0, 0), 1.0)
        img = cv2.addWeighted(img, 1 + amount, blur, -amount, 0)
        steps.append(f"sharpen {amount:.2f}")
    elif r < 0.5:
        sigma = rng.uniform(0.4, 0.9)
        noise = rng.uniform(1.0, 4.0)
        img = cv2.GaussianBlur(img, (0, 0), sigma).astype(np.float32)
        img += np.random.default_rng(rng.randrange(2**32)).normal(0, noise, img.shape)
        img = np.clip(img, 0, 255).astype(np.uint8)
        steps.append(f"print-scan blur {sigma:.2f} noise {noise:.1f}")
    elif r < 0.7:
        # Denoising or skin retouching, as photo studios and phones do: a smooth face
        # alone must not read as a morph.
        strength = rng.uniform(15, 45)
        img = cv2.bilateralFilter(img, 5, strength, 3)
        steps.append(f"smooth {strength:.0f}")
    quality = rng.randint(60, 95) if rng.random() < 0.85 else None
    steps.append(f"jpeg {quality}" if quality else "png")
    return img, quality, ", ".join(steps)


def save(img: np.ndarray, dest: Path, quality) -> Path:
    dest = dest.with_suffix(".jpg" if quality else ".png")
    dest.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if quality else []
    if not cv2.imwrite(str(dest), img, params):
        raise SystemExit(f"cannot write {dest}")
    return dest


def write_morph_list(out: Path, seed: int, split: str, morphs: list, bona_fide_post: list = ()) -> None:
    """OUT/manifest.json of a folder of extra morphs (crossgen.py, selfmorph.py, facemorpher_set.py):
    this script's manifest layout with only one split's `morphs` (and bona fide copies, if any),
    as `train.py --extra-set OUT --extra-crops C` reads it. Every `file` is relative to OUT, so
    `facegate-tools faces OUT --crops C` makes the crops, whatever the folders inside."""
    entry = {"bona_fide": [], "bona_fide_post": list(bona_fide_post), "morphs": morphs}
    (out / "manifest.json").write_text(json.dumps({"seed": seed, "splits": {split: entry}}, indent=1) + "\n")


def finish(img: np.ndarray, split: str, rng: random.Random):
    """A remade morph (or bona fide copy) as written: for validation as a tool leaves it, JPEG
    quality 90; for training through post_process, like this script's own. (image, quality, description)"""
    if split == "train":
        return post_process(img, rng)
    return img, 90, "jpeg 90"


def pair_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of the scripts that remake this script's pairs another way (crossgen.py,
    facemorpher_set.py): which set, which split, how many pairs, the post-processing seed."""
    ap.add_argument("--set", required=True, help="morph.py's output folder (manifest.json, eval/)")
    ap.add_argument("--split", default="val", choices=["train", "val"])
    ap.add_argument("--pairs", type=int, default=1000, help="the first N pairs of the split")
    ap.add_argument("--seed", type=int, default=20261126, help="of the post-processing (train)")
    return ap


def link_validation_bona_fide(set_dir: Path, out: Path) -> None:
    """OUT/bona_fide/<source>: links to this script's validation bona fide folders, so that
    `facegate-tools eval mad --data OUT` scores another generator's morphs against the same photos."""
    bona = out / "bona_fide"
    bona.mkdir(parents=True, exist_ok=True)
    for source in (set_dir / "eval" / "bona_fide").iterdir():
        link = bona / source.name
        if not link.exists():
            link.symlink_to(source.resolve())


def photo_arguments(doc: str) -> argparse.ArgumentParser:
    """The arguments morph.py and crossgen.py share: the photos, what `facegate-tools faces` saw in them, where to write."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--faces", required=True, help="JSON lines from `facegate-tools faces`")
    ap.add_argument("--images", required=True, help="the folder `facegate-tools faces` read")
    ap.add_argument("--out", required=True)
    return ap


def main() -> None:
    ap = photo_arguments(__doc__)
    ap.add_argument("--landmarks", required=True, help="fr_landmark.onnx")
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--val-share", type=float, default=0.25)
    ap.add_argument("--morphs", type=int, default=3000, help="morphs per variant in train (val gets val-share/(1-val-share) of it)")
    ap.add_argument("--bona-post", type=int, default=4000, help="post-processed bona fide copies in train (val likewise scaled)")
    ap.add_argument("--val-morphs", type=int, help="morphs per variant in val (default: scaled from --morphs); the val split's "
                    "random stream is its own, so a larger train set leaves val byte-identical")
    ap.add_argument("--val-bona-post", type=int, help="post-processed bona fide copies in val (default: scaled from --bona-post)")
    ap.add_argument("--min-quality", type=float, default=0.3, help="attackers start from good photos")
    ap.add_argument("--top", type=int, default=5, help="the accomplice is one of the N most similar people")
    args = ap.parse_args()

    root, out = Path(args.images), Path(args.out)
    rows = [json.loads(l) for l in open(args.faces)]
    faces = [r for r in rows if r.get("face")]
    landmarks = Landmarks68(args.landmarks)
    manifest = {"seed": args.seed, "val_share": args.val_share, "faces": args.faces, "splits": {}}
    for split in ("train", "val"):
        rng = random.Random(f"{args.seed}:{split}")
        mine = [r for r in faces if split_of(person_of(r["path"]), args.seed, args.val_share) == split]
        people = sorted({person_of(r["path"]) for r in mine})
        scale = 1.0 if split == "train" else args.val_share / (1 - args.val_share)
        # The attacker's candidate photos of each person: the good ones; similarity of two
        # people is that of their mean embeddings.
        good = {}
        for r in mine:
            if r["quality"] >= args.min_quality:
                good.setdefault(person_of(r["path"]), []).append(r)
        names = sorted(good)
        emb = np.array([np.mean([r["embedding"] for r in good[p]], axis=0) for p in names], np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        sim = emb @ emb.T
        np.fill_diagonal(sim, -1)
        pairs, cosines = [], []
        order = list(range(len(names)))
        n_morphs = round(args.morphs * scale) if split == "train" or args.val_morphs is None else args.val_morphs
        while len(pairs) < n_morphs * len(VARIANTS):
            rng.shuffle(order)
            for i in order:
                j = int(rng.choice(np.argsort(-sim[i])[: args.top]))
                pairs.append((rng.choice(good[names[i]]), rng.choice(good[names[j]])))
                cosines.append(float(np.dot(pairs[-1][0]["embedding"], pairs[-1][1]["embedding"])))
                if len(pairs) >= n_morphs * len(VARIANTS):
                    break
        records = []
        cache = {}

        def load(r):
            if r["path"] not in cache:
                img = cv2.imread(str(root / r["path"]), cv2.IMREAD_COLOR)
                cache[r["path"]] = (img, landmarks(img, r["face"]["bbox"]))
            return cache[r["path"]]

        for k, (ra, rb) in enumerate(pairs):
            variant = VARIANTS[k % len(VARIANTS)]
            alpha = rng.uniform(0.3, 0.7)
            (a, la), (b, lb) = load(ra), load(rb)
            img = morph_pair(a, la, b, lb, alpha, variant, rng)
            if img is None:
                continue
            img, q, post = post_process(img, rng)
            dest = save(img, out / split / "morph" / variant / f"{k:05d}_{person_of(ra['path'])}__{person_of(rb['path'])}", q)
            records.append({"file": str(dest.relative_to(out)), "a": ra["path"], "b": rb["path"],
                            "alpha": round(alpha, 4), "variant": variant, "cosine": round(cosines[k], 4), "post": post})
        # Bona fide: every photo of the split's people as it is (listed, not copied) and
        # post-processed copies of a sample, so post-processing alone is not a morph sign.
        bona = sorted(r["path"] for r in mine)
        n_post = round(args.bona_post * scale) if split == "train" or args.val_bona_post is None else args.val_bona_post
        post_records = []
        # More copies than photos: whole rounds over every photo (each copy processed anew), then a sample.
        sources = bona * (n_post // len(bona)) + rng.sample(bona, n_post % len(bona))
        for k, rel in enumerate(sources):
            img = cv2.imread(str(root / rel), cv2.IMREAD_COLOR)
            img, q, post = post_process(img, rng)
            dest = save(img, out / split / "bona_fide" / "post" / f"{k:05d}_{Path(rel).stem}", q)
            post_records.append({"file": str(dest.relative_to(out)), "source": rel, "post": post})
        manifest["splits"][split] = {"people": people, "bona_fide": bona, "bona_fide_post": post_records, "morphs": records}
        print(f"{split}: {len(people)} people, {len(bona)} bona fide photos, {len(post_records)} post-processed copies, "
              f"{len(records)} morphs (median cosine of the two source photos {np.median(cosines):.3f})")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    # The validation split laid out for `facegate-tools eval mad --data OUT/eval` (links, no copies).
    val = manifest["splits"]["val"]
    links = [(root / rel, Path("bona_fide/lfw") / Path(rel).name) for rel in val["bona_fide"]]
    links += [(out / r["file"], Path("bona_fide/post") / Path(r["file"]).name) for r in val["bona_fide_post"]]
    links += [(out / r["file"], Path("morph") / r["variant"] / Path(r["file"]).name) for r in val["morphs"]]
    for target, link in links:
        dest = out / "eval" / link
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.is_symlink():
            dest.symlink_to(target.resolve())


if __name__ == "__main__":
    main()
