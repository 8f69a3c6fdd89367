#!/usr/bin/env python3
"""Train facegate's single-image MAD model and export it as one ONNX file.

The model has two parts, in one graph:
  maps      fixed, hand-designed: the 128x128 MAD crop (the service's own, written by
            `facegate-tools faces --crops`) in luma and two chroma channels, filtered by nine
            residual filters from image forensics (SRM "KV" 5x5 and "KB" 3x3, second-order
            and diagonal differences, Sobel gradients, a difference of Gaussians), at full
            and half resolution; the log of the mean absolute response over 4x4-pixel
            cells (2x2 at half resolution), optionally also the log of the mean square
            (`--moments abs,sq`), and the colour image itself at that scale: 57 (or 111)
            maps of 32x32. A blend of two faces averages two textures and two noise
            patterns and leaves double contours where the landmarks disagreed; the maps
            keep where that happens, next to the untouched hair and background.
  network   a small CNN on those maps (four 3x3 convolutions with batch norm, folded at
            export; global mean; dropout; a logistic output), trained with JAX on the CPU
            for 6 epochs with mirrored crops as augmentation. The epoch count was read
            off validation: a wider network without mirroring, run for 14 epochs, was best
            at epoch 4-5 and then overfit (train loss 0.16, validation D-EER rising).
Why this and not another: on the same identity split, the same features with a logistic
regression reached 14 % validation D-EER, deep features of the quality and PAD networks
17-21 %, recognizer embeddings 18 %, and a CNN on the raw crop 19 % after three epochs
(at five minutes an epoch); this one learns fastest and best (figures in report.json).

`ensemble.py` then joins one or more of these networks into the shipped model (each on
the crop and its mirror image) and sets the threshold.

The maps are computed by running their ONNX graph with ONNX Runtime, and the exported
model is checked against the JAX network on validation crops before it is saved, so the
service computes what training saw. Every random choice is seeded.

Usage: train.py --set DIR --lfw-crops DIR --set-crops DIR --out model.onnx --report report.json
"""
import argparse
import json
import time
from pathlib import Path

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import optax
from onnx import TensorProto, helper, numpy_helper

SIZE = 128
OPSET = 17
# (output channels, stride) of the trained 3x3 convolutions on the 32x32 maps.
LAYERS = [(48, 1), (64, 2), (96, 2), (128, 2)]
BN_EPS, BN_MOMENTUM = 1e-3, 0.9
DROPOUT = 0.3


def residual_kernels() -> np.ndarray:
    """The residual filter bank, 5x5 each."""
    k = []
    k.append(np.array([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]) / 12)
    h2 = np.zeros((5, 5))
    h2[2, 1:4] = [1, -2, 1]
    k += [h2 / 2, h2.T / 2]
    kb = np.zeros((5, 5))
    kb[1:4, 1:4] = np.array([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]]) / 4
    k.append(kb)
    sx = np.zeros((5, 5))
    sx[1:4, 1:4] = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    k += [sx, sx.T]
    ax = np.arange(5) - 2

    def gauss(s):
        g = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * s * s))
        return g / g.sum()

    k.append(gauss(0.8) - gauss(1.6))
    d1, d2 = np.zeros((5, 5)), np.zeros((5, 5))
    d1[1, 1], d1[3, 3] = -1, 1
    d2[1, 3], d2[3, 1] = -1, 1
    k += [d1 / 2, d2 / 2]
    return np.stack(k).astype(np.float32)


class Graph:
    """ONNX nodes and initialisers under construction."""

    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def model(self, output, shape, doc):
        graph = helper.make_graph(
            self.nodes,
            "facegate_mad",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facegate tools/mad/train.py")
        model.ir_version = 8
        model.doc_string = doc
        onnx.checker.check_model(model)
        return model


def n_maps(moments) -> int:
    return 6 * len(residual_kernels()) * len(moments) + 3


def maps(g: Graph, moments) -> str:
    """`image` [N,3,128,128] RGB 0..1 -> `maps` [N,n_maps(moments),32,32]. `moments`:
    "abs", the log of the mean absolute residual per cell, and optionally "sq", the log of
    its mean square; their difference tells how heavy-tailed the residual is, which a
    blend of two noise patterns changes."""
    ycc = np.array([[0.299, 0.587, 0.114], [-0.1687, -0.3313, 0.5], [0.5, -0.4187, -0.0813]]) * 255
    g.node("Conv", ["image", g.const("ycc_w", ycc.reshape(3, 3, 1, 1))], "ycc")
    bank = residual_kernels()
    g.const("bank", np.concatenate([bank[:, None]] * 3))  # the same filters on Y, Cb and Cr
    g.node("AveragePool", ["ycc"], "ycc_half", kernel_shape=[2, 2], strides=[2, 2])
    outs = []
    for scale, src, cell in (("full", "ycc", 4), ("half", "ycc_half", 2)):
        r = g.node("Conv", [src, "bank"], f"res_{scale}", group=3, pads=[2, 2, 2, 2])
        a = g.node("Abs", [r], f"{r}_abs")
        m = g.node("AveragePool", [a], f"{r}_mean", kernel_shape=[cell, cell], strides=[cell, cell])
        e = g.node("Add", [m, g.const(f"eps_{scale}", [0.01])], f"{r}_eps")
        outs.append(g.node("Log", [e], f"{r}_log"))
        if "sq" in moments:
            q = g.node("Mul", [r, r], f"{r}_sq")
            mq = g.node("AveragePool", [q], f"{r}_msq", kernel_shape=[cell, cell], strides=[cell, cell])
            eq = g.node("Add", [mq, g.const(f"eps2_{scale}", [1e-4])], f"{r}_eps2")
            outs.append(g.node("Log", [eq], f"{r}_log2"))
    small = g.node("AveragePool", ["image"], "colour", kernel_shape=[4, 4], strides=[4, 4])
    centred = g.node("Sub", [small, g.const("half", [0.5])], "colour_c")
    outs.append(g.node("Div", [centred, g.const("quarter", [0.25])], "colour_n"))
    return g.node("Concat", outs, "maps", axis=1)


def load_crop(path) -> np.ndarray:
    """A MAD crop as the model's input: [3,128,128] RGB 0..1, as the service feeds it."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (SIZE, SIZE):
        raise SystemExit(f"{path}: not a {SIZE}x{SIZE} crop")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1).astype(np.float32) / 255.0


def compute_maps(paths, moments, batch=128):
    g = Graph()
    maps(g, moments)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(g.model("maps", ["N", n_maps(moments), 32, 32], "maps only").SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out = np.empty((len(paths), n_maps(moments), SIZE // 4, SIZE // 4), np.float16)  # filled in place: no second copy
    for i in range(0, len(paths), batch):
        imgs = np.stack([load_crop(p) for p in paths[i : i + batch]])
        out[i : i + len(imgs)] = sess.run(["maps"], {"image": imgs})[0]
    return out


def channel_stats(x):
    """Per-map mean and standard deviation, a chunk at a time: a float32 copy of all the
    maps would not fit in memory once the training set grows."""
    s, s2 = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for i in range(0, len(x), 1024):
        c = x[i : i + 1024].astype(np.float64)
        s += c.sum(axis=(0, 2, 3))
        s2 += (c * c).sum(axis=(0, 2, 3))
    n = len(x) * x.shape[2] * x.shape[3]
    mean = s / n
    return mean.astype(np.float32), (np.sqrt(np.maximum(s2 / n - mean * mean, 0)) + 1e-3).astype(np.float32)


def mirror_channels(moments) -> np.ndarray:
    """Channel order of the maps of the mirrored crop: the maps mirrored, with the two
    diagonal filters (the last two of the bank) swapped; every other filter's absolute
    response is mirror-symmetric."""
    n = len(residual_kernels())
    order = []
    for group in range(6 * len(moments)):  # Y, Cb, Cr per moment, at full then at half resolution
        idx = list(range(group * n, (group + 1) * n))
        idx[-2], idx[-1] = idx[-1], idx[-2]
        order += idx
    colour = 6 * n * len(moments)
    return np.array(order + [colour, colour + 1, colour + 2])


def init(key, cin):
    """Conv weights with batch-norm scale and shift per layer, and the final linear layer;
    `stats` holds the running mean and variance that inference (and the export) uses."""
    params, stats = [], []
    for cout, _ in LAYERS:
        key, k = jax.random.split(key)
        params.append((jax.random.normal(k, (cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9)), jnp.ones(cout), jnp.zeros(cout)))
        stats.append((jnp.zeros(cout), jnp.ones(cout)))
        cin = cout
    key, k = jax.random.split(key)
    params.append((jax.random.normal(k, (cin, 1)) * np.sqrt(1.0 / cin), jnp.zeros(1)))
    return params, stats


def forward(params, stats, norm, x, key=None):
    """Logits, and the batch statistics when training (`key` given: dropout on)."""
    mu, sd = norm
    h = (x - mu[None, :, None, None]) / sd[None, :, None, None]
    batch_stats = []
    for (w, gamma, beta), (mean, var), (_, stride) in zip(params[:-1], stats, LAYERS):
        h = jax.lax.conv_general_dilated(h, w, (stride, stride), ((1, 1), (1, 1)))
        if key is not None:
            mean, var = h.mean(axis=(0, 2, 3)), h.var(axis=(0, 2, 3))
            batch_stats.append((mean, var))
        h = (h - mean[None, :, None, None]) * (gamma / jnp.sqrt(var + BN_EPS))[None, :, None, None] + beta[None, :, None, None]
        h = jax.nn.relu(h)
    h = h.mean(axis=(2, 3))
    if key is not None:
        h = h * jax.random.bernoulli(key, 1 - DROPOUT, h.shape) / (1 - DROPOUT)
    w, b = params[-1]
    return (h @ w + b)[:, 0], batch_stats


def export(params, stats, norm, moments, path, doc):
    g = Graph()
    h = maps(g, moments)
    h = g.node("Sub", [h, g.const("maps_mean", np.asarray(norm[0]).reshape(1, -1, 1, 1))], "maps_c")
    h = g.node("Div", [h, g.const("maps_std", np.asarray(norm[1]).reshape(1, -1, 1, 1))], "maps_n")
    for i, ((w, gamma, beta), (mean, var), (_, stride)) in enumerate(zip(params[:-1], stats, LAYERS)):
        # Batch norm folded into the convolution.
        k = np.asarray(gamma) / np.sqrt(np.asarray(var) + BN_EPS)
        wf, bf = np.asarray(w) * k[:, None, None, None], np.asarray(beta) - np.asarray(mean) * k
        c = g.node("Conv", [h, g.const(f"w{i}", wf), g.const(f"b{i}", bf)], f"conv{i}", pads=[1, 1, 1, 1], strides=[stride, stride])
        h = g.node("Relu", [c], f"relu{i}")
    h = g.node("GlobalAveragePool", [h], "gap")
    h = g.node("Flatten", [h], "flat", axis=1)
    w, b = params[-1]
    h = g.node("Gemm", [h, g.const("fc_w", w), g.const("fc_b", b)], "logit")
    g.node("Sigmoid", [h], "morph")
    Path(path).write_bytes(g.model("morph", ["N", 1], doc).SerializeToString())


def threshold_at_bpcer(bona, bpcer):
    desc = np.sort(bona)[::-1]
    allowed = int(np.floor(bpcer * len(desc)))
    return float(np.nextafter(np.float32(desc[allowed]), np.float32(np.inf)))


def eer_point(bona, morph):
    """(score, rate): the first score at which BPCER and APCER are closest, and their mean there."""
    best = (2.0, 0.0, 0.0)
    for t in np.unique(np.concatenate([bona, morph])):
        b, a = float(np.mean(bona >= t)), float(np.mean(morph < t))
        if abs(b - a) < best[0]:
            best = (abs(b - a), float(t), (a + b) / 2)
    return best[1], best[2]


def d_eer(bona, morph):
    return eer_point(bona, morph)[1]


def summary(bona, morph, t):
    t1, t5 = threshold_at_bpcer(bona, 0.01), threshold_at_bpcer(bona, 0.05)
    pct = lambda v: round(float(v) * 100, 2)  # noqa: E731
    return {
        "n": int(len(morph)),
        "d_eer": pct(d_eer(bona, morph)),
        "apcer_at_bpcer1": pct(np.mean(morph < t1)),
        "apcer_at_bpcer5": pct(np.mean(morph < t5)),
        "apcer_at_threshold": pct(np.mean(morph < t)),
    }


def check_export(path, feed, scores, paths):
    """The exported model against JAX's validation `scores`, on 40 of `paths` (`feed(i)`:
    the model's inputs for paths[i]). Training stores its inputs as float16, the exported
    graph computes in float32: a difference above 0.02 is a bug, not rounding."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for i in range(0, len(paths), max(1, len(paths) // 40)):
        got = sess.run(["morph"], feed(i))[0].item()
        if abs(got - scores[i]) > 2e-2:
            raise SystemExit(f"exported model scores {got} where JAX scored {scores[i]} ({paths[i]})")


def crop_list(manifest, split, lfw: Path, crops: Path):
    """(crop, label 0 bona fide / 1 morph, source, person: a morph's first one) of one
    split; images in which the service found no face have no crop and are left out, as the
    service would refuse them."""
    s = manifest["splits"][split]
    items = [(lfw / Path(r).with_suffix(".png"), 0, "lfw", Path(r).parts[0]) for r in s["bona_fide"]]
    items += [(crops / Path(r["file"]).with_suffix(".png"), 0, "post", Path(r["source"]).parts[0]) for r in s["bona_fide_post"]]
    items += [(crops / Path(r["file"]).with_suffix(".png"), 1, r["variant"], Path(r["a"]).parts[0]) for r in s["morphs"]]
    found = [i for i in items if i[0].exists()]
    print(f"{split}: {len(found)} crops ({len(items) - len(found)} images without a detected face left out)", flush=True)
    return found


def by_source(bona, scores, labels, sources, threshold):
    """The summary per morph kind, and the BPCER per bona fide kind."""
    out = {}
    for s in sorted(set(sources)):
        sel = sources == s
        if (labels[sel] == 1).all():
            out[s] = summary(bona, scores[sel], threshold)
        else:
            out[s] = {"n": int(sel.sum()), "bpcer_at_threshold": round(float(np.mean(scores[sel] >= threshold)) * 100, 2)}
    return out


def data_arguments(doc: str) -> argparse.ArgumentParser:
    """The arguments train.py and ensemble.py share: where the set and its crops are, where to write."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--set", required=True, help="morph.py's output folder (manifest.json)")
    ap.add_argument("--lfw-crops", required=True, help="crops of the bona fide originals (facegate-tools faces --crops)")
    ap.add_argument("--set-crops", required=True, help="crops of the morph set (facegate-tools faces --crops on --set)")
    ap.add_argument("--extra-set", help="more training images: crossgen.py --split train's, selfmorph.py's or facemorpher_set.py --split train's output folder (manifest.json)")
    ap.add_argument("--extra-crops", help="their crops (facegate-tools faces --crops on EXTRA_SET)")
    ap.add_argument("--extra-aligned", help="their aligned faces (facegate-tools faces --aligned on EXTRA_SET), for train_maps.py and train_tail.py --view aligned")
    ap.add_argument("--lfw-aligned", help="the photos' faces aligned for the recognizer (facegate-tools faces --aligned), for train_maps.py and ensemble.py --maps")
    ap.add_argument("--set-aligned", help="the same of the morph set")
    ap.add_argument("--out", required=True)
    ap.add_argument("--report", required=True)
    return ap


def extra_items(args, lfw: Path | None = None, images: Path | None = None):
    """The extra set's training morphs and bona fide copies (none without --extra-set), as
    MAD crops or, given `lfw` and `images`, as that view of the faces."""
    if not args.extra_set:
        return []
    extra = json.loads((Path(args.extra_set) / "manifest.json").read_text())
    return crop_list(extra, "train", lfw or Path(args.lfw_crops), images or Path(args.extra_crops))


def main() -> None:
    ap = data_arguments(__doc__)
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--moments", default="abs", choices=["abs", "abs,sq"], help="residual statistics per cell: abs, or abs,sq")
    ap.add_argument("--holdout", default="", help="leave these morph variants (comma-separated) out of training (a generalisation check)")
    args = ap.parse_args()
    manifest = json.loads((Path(args.set) / "manifest.json").read_text())
    lfw, crops = Path(args.lfw_crops), Path(args.set_crops)
    moments = args.moments.split(",")

    data = {}
    for split in manifest["splits"]:
        items = crop_list(manifest, split, lfw, crops)
        if split == "train":
            extra = extra_items(args)
            items += extra
        data[split] = (compute_maps([i[0] for i in items], moments), np.array([i[1] for i in items]), np.array([i[2] for i in items]), [i[0] for i in items])

    x, y, src, _ = data["train"]
    if args.holdout:
        keep = ~np.isin(src, args.holdout.split(","))
        x, y = x[keep], y[keep]
    del data["train"]  # one copy of the training maps in memory, not two
    norm = channel_stats(x)
    rng = np.random.default_rng(args.seed)
    key = jax.random.PRNGKey(args.seed)
    key, k = jax.random.split(key)
    params, stats = init(k, x.shape[1])
    steps = args.epochs * (len(x) // args.batch)
    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 300, steps), weight_decay=1e-3)
    state = opt.init(params)
    # Balanced classes: each class weighs half of the loss.
    cw = np.array([len(y) / (2 * np.sum(y == 0)), len(y) / (2 * np.sum(y == 1))], np.float32)

    def loss(p, st, xb, yb, wb, k):
        z, batch_stats = forward(p, st, norm, xb, k)
        return jnp.mean(wb * optax.sigmoid_binary_cross_entropy(z, yb)), batch_stats

    @jax.jit
    def step(p, st, s, xb, yb, wb, k):
        (l, batch_stats), grads = jax.value_and_grad(loss, has_aux=True)(p, st, xb, yb, wb, k)
        u, s = opt.update(grads, s, p)
        st = [(BN_MOMENTUM * m + (1 - BN_MOMENTUM) * bm, BN_MOMENTUM * v + (1 - BN_MOMENTUM) * bv) for (m, v), (bm, bv) in zip(st, batch_stats)]
        return optax.apply_updates(p, u), st, s, l

    score = jax.jit(lambda p, st, xb: jax.nn.sigmoid(forward(p, st, norm, xb)[0]))

    def predict(p, st, xs):
        return np.concatenate([np.asarray(score(p, st, xs[i : i + 512].astype(np.float32))) for i in range(0, len(xs), 512)])

    xv, yv, srcv, pathsv = data["val"]
    mirror = mirror_channels(moments)
    for epoch in range(args.epochs):
        t0, losses = time.time(), []
        order = rng.permutation(len(x))
        for i in range(0, len(order) - args.batch + 1, args.batch):
            idx = order[i : i + args.batch]
            key, k = jax.random.split(key)
            xb = x[idx].astype(np.float32)
            flip = rng.random(len(idx)) < 0.5
            xb[flip] = xb[flip][:, mirror, :, ::-1]
            params, stats, state, l = step(params, stats, state, xb, y[idx].astype(np.float32), cw[y[idx]], k)
            losses.append(float(l))
        pv = predict(params, stats, xv)
        print(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}, val D-EER {100 * d_eer(pv[yv == 0], pv[yv == 1]):.2f} % ({time.time() - t0:.0f} s)", flush=True)

    pv = predict(params, stats, xv)
    bona_v = pv[yv == 0]
    threshold = threshold_at_bpcer(bona_v, 0.01)
    report = {
        "seed": args.seed,
        "moments": args.moments,
        "epochs": args.epochs,
        "holdout": args.holdout,
        "train": {"bona_fide": int((y == 0).sum()), "morphs": int((y == 1).sum())},
        "threshold_at_val_bpcer1": round(threshold, 4),
        "val": summary(bona_v, pv[yv == 1], threshold),
        "val_by_source": by_source(bona_v, pv, yv, srcv, threshold),
    }
    if args.extra_set:
        labels = [i[1] for i in extra]
        report["extra_set"] = {"folder": Path(args.extra_set).name, "morphs": labels.count(1), "bona_fide": labels.count(0)}
    print(json.dumps(report, indent=1))

    doc = f"facegate MAD: residual-energy maps + CNN on the {SIZE}x{SIZE} MAD crop, RGB 0..1 -> morph probability. " \
          f"Seed {args.seed}; validation threshold at BPCER 1 %: {threshold:.4f}"
    export(params, stats, norm, moments, args.out, doc)
    check_export(args.out, lambda i: {"image": load_crop(pathsv[i])[None]}, pv, pathsv)
    Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes) and {args.report}")


if __name__ == "__main__":
    main()
