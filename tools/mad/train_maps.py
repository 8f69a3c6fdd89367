#!/usr/bin/env python3
"""Train a MAD network on the recognizer's own feature maps and export it as ONNX.

The residual-energy networks of train.py see hand-designed filters. This one reads what a
network trained on millions of faces computes in its middle layers: the activations of
the recognizer (w600k_mbf) at three depths (nodes `397`, 28x28x128; `473`, 14x14x256;
`505`, 7x7x256), the recognizer's own input size and normalisation, on one of two views of
the face (`--view`): `centre`, the centre 112x112 of the MAD crop (the face at 0.76 times
the recognizer's scale, with some of its surroundings), or `aligned`, the face
as the recognizer sees it for the embedding (`facegate-tools faces --aligned`, the service's own
alignment). Those layers describe skin, edges and facial parts at the scales where
a blend of two faces leaves doubled contours and averaged texture. The recognizer is not
retrained and its weights are not part of the model: the service runs the recognizer
file it already has, with those nodes exposed as outputs, and feeds them to the model's
inputs `recognizer:397`, `recognizer:473` and `recognizer:505` (centre view) or
`recognizer_aligned:NODE` (aligned view). The model names the
recognizer by sha256 (`facegate.embedding_sha256`), and the service refuses it next to
any other.

The network: per depth a 1x1 convolution to 48 channels (the 28x28 maps averaged to
14x14 first, the 7x7 ones repeated to 14x14), concatenated, two 3x3 convolutions (64
with stride 2, then 96), global mean, dropout, a logistic output; trained with JAX on
the CPU for 5 epochs (read off validation: epoch 5 was the best of 8 in the first run,
the loss fell below 0.1 after it). On validation, alone: D-EER 8.57 % on the centre view
(seed 20261127), 8.39 % on the aligned view (seed 20261128), against 11.7 and 12.0 % for
train.py's networks; ensemble.py joins them (`--maps`, once per view). The two views see
the face at two scales and make different errors: in scratch runs on the same maps, the
aligned one added to a model that has the centre one lowers validation D-EER by about half
a point whichever of two seeds, and APCER at BPCER 1 % by three to four.

Usage: train_maps.py --set DIR --lfw-crops DIR --set-crops DIR [--view aligned --lfw-aligned DIR --set-aligned DIR]
                     [--extra-set DIR --extra-crops DIR (or --extra-aligned DIR on the aligned view)]
                     --recognizer w600k_mbf.onnx --out model.onnx --report report.json
"""
import hashlib
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

from train import OPSET, SIZE, by_source, channel_stats, check_export, crop_list, d_eer, data_arguments, extra_items, summary, threshold_at_bpcer

# (recognizer node, channels, side of its map, how the network brings it to 14x14)
NODES = [("397", 128, 28, "pool"), ("473", 256, 14, "keep"), ("505", 256, 7, "repeat")]
WIDTH = 48
MEAN, STD = 127.5, 127.5  # the recognizer's input normalisation (config/default.toml)
# Per view: the prefix of the model inputs the service fills from the recognizer (models/src/mad.rs)
# and what they are.
VIEWS = {
    "centre": ("recognizer:", "the recognizer's activation on the centre of the MAD crop", "the MAD crop's centre"),
    "aligned": ("recognizer_aligned:", "the recognizer's activation on the face aligned for it", "the aligned face"),
}


class RecognizerTaps:
    """The recognizer with `nodes` (NODES unless told) exposed as outputs, run on one view of
    the faces: the centre of their MAD crops or their aligned faces."""

    def __init__(self, recognizer: Path, view: str = "centre", nodes=NODES):
        data = Path(recognizer).read_bytes()
        model = onnx.load_from_string(data)
        self.nodes = nodes
        for name, _, _, _ in nodes:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        opts.log_severity_level = 3  # the added outputs have no declared shape: ORT warns on every run
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.side = self.session.get_inputs()[0].shape[2]
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.view, self.prefix = view, VIEWS[view][0]

    def faces(self, paths, process=None, start=0) -> np.ndarray:
        """The recognizer's input: the MAD crops' centre squares or the aligned faces, RGB,
        normalised, NCHW; `process(k, rgb)`, if given, changes face number `start + k` first."""
        m = (SIZE - self.side) // 2 if self.view == "centre" else 0
        rgb = [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)[m : m + self.side, m : m + self.side] for p in paths]
        rgb = np.stack([process(start + k, f) for k, f in enumerate(rgb)] if process else rgb)
        if rgb.shape[1:3] != (self.side, self.side):
            raise SystemExit(f"{paths[0]}: smaller than the recognizer's {self.side}x{self.side}: not a {VIEWS[self.view][2]}")
        return ((rgb.astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2)

    def maps(self, paths, batch=64, process=None) -> dict:
        """{node: float16 array}, the 28x28 maps stored averaged to 14x14 (as the network
        does first) so that a training set's maps fit in memory."""
        out = {}
        for i in range(0, len(paths), batch):
            got = self.session.run([n for n, _, _, _ in self.nodes], {self.input: self.faces(paths[i : i + batch], process, i)})
            for (name, c, side, how), a in zip(self.nodes, got):
                if how == "pool":
                    a = a.reshape(len(a), c, side // 2, 2, side // 2, 2).mean(axis=(3, 5))
                if name not in out:
                    out[name] = np.empty((len(paths),) + a.shape[1:], np.float16)
                out[name][i : i + len(a)] = a
        return out

    def feed(self, paths, process=None) -> dict:
        """The model inputs of these crops, as the service feeds them (full-size maps);
        `process` as for `faces`."""
        got = self.session.run([n for n, _, _, _ in self.nodes], {self.input: self.faces(paths, process)})
        return {self.prefix + n: a for (n, _, _, _), a in zip(self.nodes, got)}


def init(key):
    keys = jax.random.split(key, len(NODES) + 3)
    he = lambda k, shape: jax.random.normal(k, shape) * np.sqrt(2.0 / np.prod(shape[1:]))  # noqa: E731
    p = {f"r{name}": (he(k, (WIDTH, c, 1, 1)), jnp.zeros(WIDTH)) for (name, c, _, _), k in zip(NODES, keys)}
    p["c1"] = (he(keys[-3], (64, WIDTH * len(NODES), 3, 3)), jnp.zeros(64))
    p["c2"] = (he(keys[-2], (96, 64, 3, 3)), jnp.zeros(96))
    p["fc"] = (jax.random.normal(keys[-1], (96, 1)) * 0.1, jnp.zeros(1))
    return p


def forward(p, stats, xs, key=None):
    """Logits of stored maps (`xs` in NODES order, 28x28 ones already averaged)."""
    conv = lambda h, wb, stride=1, pad=0: jax.lax.conv_general_dilated(h, wb[0], (stride, stride), ((pad, pad), (pad, pad))) + wb[1][None, :, None, None]  # noqa: E731
    hs = []
    for (name, _, _, how), x in zip(NODES, xs):
        mu, sd = stats[name]
        h = jax.nn.relu(conv((x - mu[None, :, None, None]) / sd[None, :, None, None], p[f"r{name}"]))
        if how == "repeat":
            h = jnp.repeat(jnp.repeat(h, 2, axis=2), 2, axis=3)
        hs.append(h)
    h = jax.nn.relu(conv(jnp.concatenate(hs, 1), p["c1"], 2, 1))
    h = jax.nn.relu(conv(h, p["c2"], 1, 1)).mean(axis=(2, 3))
    if key is not None:
        h = h * jax.random.bernoulli(key, 0.7, h.shape) / 0.7
    return (h @ p["fc"][0] + p["fc"][1])[:, 0]


def export(p, stats, path, doc, sha256, prefix):
    """The network as ONNX: inputs `{prefix}NODE` at the recognizer's full map sizes,
    outputs `logit` and `morph`."""
    nodes, inits, inputs, hs = [], [], [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    for name, c, side, how in NODES:
        x = prefix + name
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", c, side, side]))
        if how == "pool":
            nodes.append(helper.make_node("AveragePool", [x], [f"{name}_pooled"], kernel_shape=[2, 2], strides=[2, 2]))
            x = f"{name}_pooled"
        mu, sd = stats[name]
        w, b = p[f"r{name}"]
        # The normalisation folded into the 1x1 convolution: w (x - mu) / sd + b.
        wf = np.asarray(w)[:, :, 0, 0] / sd[None, :]
        bf = np.asarray(b) - wf @ mu
        nodes.append(helper.make_node("Conv", [x, const(f"r{name}_w", wf[:, :, None, None]), const(f"r{name}_b", bf)], [f"r{name}"]))
        nodes.append(helper.make_node("Relu", [f"r{name}"], [f"r{name}_relu"]))
        h = f"r{name}_relu"
        if how == "repeat":
            nodes.append(helper.make_node("Resize", [h, "", const("twice", [1, 1, 2, 2])], [f"r{name}_up"], mode="nearest"))
            h = f"r{name}_up"
        hs.append(h)
    nodes.append(helper.make_node("Concat", hs, ["joined"], axis=1))
    for name, stride, src in (("c1", 2, "joined"), ("c2", 1, "c1_relu")):
        w, b = p[name]
        nodes.append(helper.make_node("Conv", [src, const(f"{name}_w", w), const(f"{name}_b", b)], [name], pads=[1, 1, 1, 1], strides=[stride, stride]))
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["c2_relu"], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", const("fc_w", p["fc"][0]), const("fc_b", p["fc"][1])], ["logit"]))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["morph"]))
    outputs = [helper.make_tensor_value_info("morph", TensorProto.FLOAT, ["N", 1])]
    graph = helper.make_graph(nodes, "facegate_mad_maps", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facegate tools/mad/train_maps.py")
    model.ir_version = 8
    model.doc_string = doc
    onnx.helper.set_model_props(model, {"facegate.embedding_sha256": sha256})
    onnx.checker.check_model(model)
    Path(path).write_bytes(model.SerializeToString())


def view_arguments(doc: str, seed: int, epochs: int, view: str):
    """The arguments of a network trained on the recognizer's activations of one view
    (this script and train_tail.py)."""
    ap = data_arguments(doc)
    ap.add_argument("--recognizer", required=True, help="the recognizer ONNX file (w600k_mbf.onnx) the service runs")
    ap.add_argument("--view", choices=sorted(VIEWS), default=view, help="the face the recognizer reads: the MAD crop's centre or the aligned face (needs --lfw-aligned, --set-aligned)")
    ap.add_argument("--seed", type=int, default=seed)
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--batch", type=int, default=128)
    return ap


def view_data(args, nodes=NODES, process=None):
    """The recognizer taps of args.view, the training and validation items, and their
    stored maps of `nodes`; `process(item, rgb)`, if given, changes each training face
    before the recognizer reads it (validation is read as it is)."""
    manifest = json.loads((Path(args.set) / "manifest.json").read_text())
    if args.view == "aligned" and not (args.lfw_aligned and args.set_aligned):
        raise SystemExit("--view aligned reads the aligned faces: --lfw-aligned and --set-aligned (facegate-tools faces --aligned)")
    option, extra = ("--extra-aligned", args.extra_aligned) if args.view == "aligned" else ("--extra-crops", args.extra_crops)
    if args.extra_set and not extra:
        raise SystemExit(f"--extra-set on the {args.view} view reads its faces from {option}")
    lfw, crops = (Path(args.lfw_aligned), Path(args.set_aligned)) if args.view == "aligned" else (Path(args.lfw_crops), Path(args.set_crops))
    taps = RecognizerTaps(Path(args.recognizer), args.view, nodes)

    train_items = crop_list(manifest, "train", lfw, crops) + extra_items(args, lfw, extra and Path(extra))
    val_items = crop_list(manifest, "val", lfw, crops)
    t0 = time.time()
    x = taps.maps([i[0] for i in train_items], process=process and (lambda k, rgb: process(train_items[k], rgb)))
    xv = taps.maps([i[0] for i in val_items])
    print(f"recognizer maps of {len(train_items) + len(val_items)} crops in {time.time() - t0:.0f} s", flush=True)
    return taps, train_items, val_items, x, xv


def fit(opt, logits, params, key, rng, batch_of, y, yv, predict, args):
    """args.epochs epochs of `opt` on the class-weighted cross-entropy of `logits(params,
    inputs, dropout key)` over batches (`batch_of(indices)`: their inputs), printing the
    validation D-EER after each; the trained parameters."""
    state = opt.init(params)

    @jax.jit
    def step(p, s, xs, yb, wb, k):
        lossf = lambda p: jnp.mean(wb * optax.sigmoid_binary_cross_entropy(logits(p, xs, k), yb))  # noqa: E731
        loss, grads = jax.value_and_grad(lossf)(p)
        u, s = opt.update(grads, s, p)
        return optax.apply_updates(p, u), s, loss

    cw = np.array([len(y) / (2 * np.sum(y == 0)), len(y) / (2 * np.sum(y == 1))], np.float32)
    for epoch in range(args.epochs):
        t0, losses = time.time(), []
        order = rng.permutation(len(y))
        for i in range(0, len(order) - args.batch + 1, args.batch):
            idx = np.sort(order[i : i + args.batch])
            key, k = jax.random.split(key)
            params, state, loss = step(params, state, batch_of(idx), y[idx].astype(np.float32), cw[y[idx]], k)
            losses.append(float(loss))
        z = predict(params)
        print(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}, val D-EER {100 * d_eer(z[yv == 0], z[yv == 1]):.2f} % ({time.time() - t0:.0f} s)", flush=True)
    return params


def finish(args, taps, inputs, y, yv, pv, val_items, what, export_as):
    """The report of a trained network (validation probabilities `pv`), its threshold at
    validation BPCER 1 %, its export (`export_as(doc)` writes args.out) checked against JAX on
    the full-size maps the service feeds, and the report written."""
    threshold = threshold_at_bpcer(pv[yv == 0], 0.01)
    report = {
        "seed": args.seed,
        "network": what,
        "inputs": {taps.prefix + n: VIEWS[args.view][1] for n in inputs},
        "recognizer_sha256": taps.sha256,
        "epochs": args.epochs,
        "train": {"bona_fide": int((y == 0).sum()), "morphs": int((y == 1).sum())},
        **({"extra_set": Path(args.extra_set).name} if args.extra_set else {}),
        "threshold_at_val_bpcer1": round(threshold, 4),
        "val": summary(pv[yv == 0], pv[yv == 1], threshold),
        "val_by_source": by_source(pv[yv == 0], pv, yv, np.array([i[2] for i in val_items]), threshold),
    }
    print(json.dumps(report, indent=1))
    export_as(f"facegate MAD: {what}. Seed {args.seed}; validation threshold at BPCER 1 %: {threshold:.4f}")
    paths = [i[0] for i in val_items]
    check_export(args.out, lambda i: taps.feed(paths[i : i + 1]), pv, paths)
    Path(args.report).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes) and {args.report}")


def main() -> None:
    args = view_arguments(__doc__, 20261127, 5, "centre").parse_args()
    taps, train_items, val_items, x, xv = view_data(args)
    y, yv = np.array([i[1] for i in train_items]), np.array([i[1] for i in val_items])
    order_names = [n for n, _, _, _ in NODES]
    stats = {name: channel_stats(a) for name, a in x.items()}
    jstats = {k: (jnp.array(m), jnp.array(s)) for k, (m, s) in stats.items()}

    rng = np.random.default_rng(args.seed)
    key = jax.random.PRNGKey(args.seed)
    key, k = jax.random.split(key)
    params = init(k)
    steps = args.epochs * (len(y) // args.batch)
    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 2e-3, min(300, steps // 2), steps), weight_decay=1e-2)
    logit = jax.jit(lambda p, xs: forward(p, jstats, xs))

    def predict(p):
        return np.concatenate([np.asarray(logit(p, [xv[n][i : i + 512].astype(np.float32) for n in order_names])) for i in range(0, len(yv), 512)])

    batch_of = lambda idx: [x[n][idx].astype(np.float32) for n in order_names]  # noqa: E731
    params = fit(opt, lambda p, xs, k: forward(p, jstats, xs, k), params, key, rng, batch_of, y, yv, predict, args)
    pv = 1 / (1 + np.exp(-predict(params)))
    what = f"a CNN on the recognizer's feature maps of {VIEWS[args.view][2]}"
    finish(args, taps, order_names, y, yv, pv, val_items, what, lambda doc: export(params, stats, args.out, doc, taps.sha256, taps.prefix))


if __name__ == "__main__":
    main()
