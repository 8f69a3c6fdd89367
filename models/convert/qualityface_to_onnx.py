#!/usr/bin/env python3
# Requires: numpy==2.4.6 onnx==1.23.2   (stdlib + these two only; no torch. Tested on Python 3.11.7,
# with protobuf 7.36.2 as pulled in by onnx 1.23.2, and checked with onnxruntime 1.31.1.)
"""Convert the qualityface 1.0.3 checkpoint (``last.pth``) to ONNX without torch.

Usage::

    python3 qualityface_to_onnx.py INPUT.pth OUTPUT.onnx

Why no torch
------------
The PyPI wheel ``qualityface==1.0.3`` (MIT, Sirius Demon 2020) ships only a
PyTorch checkpoint, ``qualityface/checkpoints/last.pth``.  Loading it the usual
way needs torch + torchvision (about 3 GB) just to read 14 MB of float32
weights.  But a ``.pth`` file is nothing more than Python pickles plus raw
little-endian tensor bytes, and the network is a stock torchvision
MobileNetV2 feature extractor, so we can

1. read the tensors with a restricted ``pickle.Unpickler`` (no torch code is
   imported or executed: every global the pickle names is either whitelisted
   or replaced by an inert stand-in), and
2. write the same computation as an ONNX graph with the ``onnx`` helpers.

The result is byte-for-byte reproducible, so ``models/manifest.toml`` can pin
its sha256.

What the checkpoint is
----------------------
``last.pth`` is torch's *legacy* (pre-1.6, non-zip) serialization of a
``state_dict`` taken from ``nn.DataParallel(QualityNet())`` on a GPU:

* pickle 1: magic number ``0x1950a86a20f9469cfc6c``
* pickle 2: protocol version ``1001``
* pickle 3: sys_info (``little_endian``, type sizes)
* pickle 4: the ``OrderedDict`` state dict.  Tensors appear as
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``
  where ``storage`` is a *persistent id*
  ``('storage', torch.FloatStorage, key, 'cuda:0', numel, view_metadata)``.
* pickle 5: the list of storage keys, in the order their bytes follow
* then, per key: an int64 element count followed by the raw elements.

The newer zip format (``archive/data.pkl`` + ``archive/data/<key>``) is also
handled, as is a pickled whole module (its ``_parameters``/``_buffers``/
``_modules`` are walked into a state dict), in case a different copy of the
checkpoint turns up.

Keys carry the ``module.`` prefix of ``DataParallel``.  ``QualityNet`` is::

    backbone = siriusbackbone.mobilenet_v2()   # BackBone(net=torchvision mobilenet_v2,
                                               #   backbone=IntermediateLayerGetter(net, {'features': ...}))
    x = backbone(x)[0]                         # torchvision MobileNetV2 .features output, [N,1280,4,4]
    x = mean(x, dim=(2, 3))                    # [N,1280]
    x = classify(x)                            # nn.Linear(1280, 1) -> [N,1]

``backbone.net.*`` and ``backbone.backbone.*`` are the same modules registered
twice (they share storages); ``backbone.net.classifier`` (the unused ImageNet
1000-way head) is ignored.  We read ``backbone.backbone.features.*`` (falling
back to ``backbone.net.features.*``).

The graph
---------
torchvision MobileNetV2 (width 1.0): ``features.0`` = Conv3x3/s2(3->32)+BN+ReLU6,
``features.1..17`` = inverted residual blocks with the standard settings
(t, c, n, s) = (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1)
(6,160,3,2) (6,320,1,1), ``features.18`` = Conv1x1(320->1280)+BN+ReLU6.  Each
block: [1x1 expand conv+BN+ReLU6 if t != 1] -> 3x3 depthwise conv (group =
channels, stride s, pad 1)+BN+ReLU6 -> 1x1 linear conv+BN, plus the input when
stride is 1 and in == out channels.  Strides are not stored in a state dict,
so they come from that table; channel counts are checked against the tensors.

Every BatchNorm (eval mode, eps 1e-5) is folded into the preceding bias-free
conv in float64 and stored as float32: ``W' = W * g/sqrt(v+eps)``,
``b' = beta - mean * g/sqrt(v+eps)``.  ReLU6 is ``Clip(0, 6)``; the spatial
mean is ``GlobalAveragePool`` + ``Flatten``; the head is ``Gemm`` (transB=1).

Interface: input ``input`` [1,3,128,128] float32 = the face box crop resized
to 128x128, RGB, ``(x/255 - 0.5) / 0.5`` (torchvision ToTensor + Normalize
with mean = std = 0.5, as ``qualityface/config.py`` test_transform).  Output
``quality`` [1,1] float32 is the *raw* Linear output: ``qualityface/api.py``
applies no sigmoid and no clamp (it only rounds to 2 decimals), so neither
does this graph.  Values are about 0..1 but may fall slightly outside; clamp
in the caller if a strict range is wanted.

Reproducibility: fixed producer name/version, opset 17, IR version 8, no
timestamps or paths, node/initializer names derived from the layer index,
initializers in graph order; protobuf serialization of the same message is
deterministic.  The source file's sha256 is recorded in metadata_props.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import struct
import sys
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; accepted by every onnxruntime >= 1.10
PRODUCER_NAME = "facegate-qualityface_to_onnx"
PRODUCER_VERSION = "1"
BN_EPS = 1e-5
INPUT_SIZE = 128

# torchvision MobileNetV2 inverted residual settings: expand t, out c, repeats n, first stride s
MOBILENET_V2_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# storage class name -> numpy dtype (little-endian)
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    # bfloat16 has no numpy dtype: read the raw 16-bit words, widened on use
    "BFloat16Storage": np.dtype("<u2"),
}


# --------------------------------------------------------------------------------------
# Reading the checkpoint without torch
# --------------------------------------------------------------------------------------

class _Global:
    """Inert stand-in for a global the pickle names (torch.FloatStorage, torch.float32, ...)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


class _Storage:
    """A storage referenced by persistent id; its bytes are filled in later."""

    def __init__(self, key: str, dtype: np.dtype, numel: int | None):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.array: np.ndarray | None = None


class _Opaque:
    """Any other object in a full-module pickle: keeps its state for walking."""

    def __init__(self, *args, **kwargs):
        self._args = args
        self._state = None

    def __setstate__(self, state):
        self._state = state


class _TensorRef:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self) -> np.ndarray:
        st = self.storage
        if st.array is None:
            raise ValueError(f"storage {st.key} has no data")
        base = st.array
        if st.dtype == np.dtype("<u2") and base.dtype == np.dtype("<u2"):  # bfloat16
            base = (base.astype(np.uint32) << 16).view(np.float32)
        if len(self.size) == 0:
            return np.array(base[self.offset])
        need = self.offset + 1 + sum((n - 1) * s for n, s in zip(self.size, self.stride) if n > 0)
        if need > base.size:
            raise ValueError(f"tensor view exceeds storage {st.key}")
        view = np.lib.stride_tricks.as_strided(
            base[self.offset:],
            shape=self.size,
            strides=tuple(s * base.itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_rest):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_rest):
    return data


def _storage_dtype(storage_type) -> np.dtype:
    name = getattr(storage_type, "name", str(storage_type))
    if name not in STORAGE_DTYPES:
        raise ValueError(f"unsupported storage type {storage_type!r}")
    return STORAGE_DTYPES[name]


class _Unpickler(pickle.Unpickler):
    """Resolves only what a checkpoint needs; never imports or runs torch code."""

    def __init__(self, fh, storages: dict[str, _Storage]):
        super().__init__(fh)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch.nn.parameter" and name == "Parameter":
            return _rebuild_parameter
        if module.startswith("torch") and (name.endswith("Storage") or module == "torch"):
            return _Global(module, name)
        if module in ("builtins", "__builtin__") and name in ("set", "frozenset", "dict", "list", "tuple"):
            return {"set": set, "frozenset": frozenset, "dict": dict, "list": list, "tuple": tuple}[name]
        # a full-module pickle names the model's own classes: keep their state, run nothing
        return type(name, (_Opaque,), {"__module__": "pickled." + module})

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        # legacy: ('storage', type, key, location, numel, view_metadata)
        # zip:    ('storage', type, key, location, numel)
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (legacy view_metadata) are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(key, _storage_dtype(storage_type), int(numel))
        return self.storages[key]


def _read_legacy(data: bytes):
    fh = io.BytesIO(data)
    storages: dict[str, _Storage] = {}
    magic = _Unpickler(fh, storages).load()
    if magic != LEGACY_MAGIC:
        raise ValueError("not a torch checkpoint (bad magic number)")
    protocol = _Unpickler(fh, storages).load()
    if protocol != 1001:
        raise ValueError(f"unsupported legacy protocol version {protocol}")
    sys_info = _Unpickler(fh, storages).load()
    if not sys_info.get("little_endian", True):
        raise ValueError("big-endian checkpoints are not supported")
    obj = _Unpickler(fh, storages).load()
    keys = _Unpickler(fh, storages).load()
    for key in keys:
        st = storages[str(key)]
        (numel,) = struct.unpack("<q", fh.read(8))
        if st.numel is not None and numel != st.numel:
            raise ValueError(f"storage {key}: {numel} elements on disk, {st.numel} expected")
        nbytes = numel * st.dtype.itemsize
        raw = fh.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"storage {key}: truncated")
        st.array = np.frombuffer(raw, dtype=st.dtype)
    if fh.read(1):
        raise ValueError("trailing bytes after the last storage")
    return obj


def _read_zip(path: str):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError("zip checkpoint without a single data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(io.BytesIO(zf.read(pkl[0])), storages).load()
        for key, st in storages.items():
            raw = zf.read(f"{prefix}data/{key}")
            arr = np.frombuffer(raw, dtype=st.dtype)
            if st.numel is not None and arr.size < st.numel:
                raise ValueError(f"storage {key}: truncated")
            st.array = arr
    return obj


def _flatten_module(obj, prefix: str, out: dict):
    """Walk a pickled nn.Module (an _Opaque with _parameters/_buffers/_modules)."""
    state = obj._state if isinstance(obj, _Opaque) else None
    if isinstance(state, tuple) and state and isinstance(state[0], dict):
        state = state[0]
    if not isinstance(state, dict):
        return
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if isinstance(value, _TensorRef):
                out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _flatten_module(child, f"{prefix}{name}.", out)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    if zipfile.is_zipfile(path):
        obj = _read_zip(path)
    else:
        with open(path, "rb") as fh:
            obj = _read_legacy(fh.read())
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict):
        refs = {str(k): v for k, v in obj.items() if isinstance(v, _TensorRef)}
    else:
        refs = {}
        _flatten_module(obj, "", refs)
    if not refs:
        raise ValueError("no tensors found in the checkpoint")
    return {k: v.materialize() for k, v in refs.items()}


# --------------------------------------------------------------------------------------
# Locating the network's tensors
# --------------------------------------------------------------------------------------

def _strip(sd: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Return (features.* tensors without prefix, classify weight, classify bias)."""
    keys = list(sd)
    prefix = "module." if all(k.startswith("module.") for k in keys) else ""
    for fprefix in ("backbone.backbone.features.", "backbone.net.features.", "backbone.features.", "features."):
        full = prefix + fprefix
        feats = {k[len(full):]: v for k, v in sd.items() if k.startswith(full)}
        if feats:
            break
    else:
        raise ValueError("no MobileNetV2 features.* tensors in the checkpoint")
    try:
        w = sd[prefix + "classify.weight"]
        b = sd[prefix + "classify.bias"]
    except KeyError as exc:
        raise ValueError(f"missing the classify head: {exc}") from None
    return feats, w, b


def _fold(feats: dict[str, np.ndarray], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """Fold eval-mode BatchNorm `bn` into bias-free conv `conv` (float64 math, float32 out)."""
    w = feats[conv + ".weight"].astype(np.float64)
    if conv + ".bias" in feats:
        raise ValueError(f"{conv}: unexpected conv bias")
    gamma = feats[bn + ".weight"].astype(np.float64)
    beta = feats[bn + ".bias"].astype(np.float64)
    mean = feats[bn + ".running_mean"].astype(np.float64)
    var = feats[bn + ".running_var"].astype(np.float64)
    if not (gamma.shape == beta.shape == mean.shape == var.shape == (w.shape[0],)):
        raise ValueError(f"{bn}: shape mismatch with {conv}")
    scale = gamma / np.sqrt(var + BN_EPS)
    wf = w * scale[:, None, None, None]
    bf = beta - mean * scale
    return wf.astype(np.float32), bf.astype(np.float32)


# --------------------------------------------------------------------------------------
# Building the ONNX graph
# --------------------------------------------------------------------------------------

class _Graph:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def conv(self, name, x, w, b, stride, group, relu6):
        k = w.shape[2]
        pad = (k - 1) // 2
        wn = self.init(f"{name}.weight", w)
        bn = self.init(f"{name}.bias", b)
        y = f"{name}.conv"
        self.nodes.append(helper.make_node(
            "Conv", [x, wn, bn], [y], name=f"{name}/Conv",
            kernel_shape=[k, k], strides=[stride, stride], pads=[pad, pad, pad, pad],
            dilations=[1, 1], group=group,
        ))
        if relu6:
            out = f"{name}.relu6"
            self.nodes.append(helper.make_node("Clip", [y, "relu6.min", "relu6.max"], [out], name=f"{name}/Clip"))
            return out
        return y


def build_model(sd: dict[str, np.ndarray], source_sha256: str) -> onnx.ModelProto:
    feats, cw, cb = _strip(sd)
    g = _Graph()
    g.init("relu6.min", np.array(0.0, dtype=np.float32))
    g.init("relu6.max", np.array(6.0, dtype=np.float32))

    # features.0: ConvBNReLU(3, 32, stride 2)
    w, b = _fold(feats, "0.0", "0.1")
    if w.shape != (32, 3, 3, 3):
        raise ValueError(f"features.0 weight {w.shape}, expected (32,3,3,3)")
    x = g.conv("features.0", "input", w, b, stride=2, group=1, relu6=True)
    cin = 32

    idx = 1
    for t, c, n, s in MOBILENET_V2_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"{idx}.conv"
            block_in = x
            hidden = cin * t
            j = 0
            if t != 1:
                w, b = _fold(feats, f"{p}.{j}.0", f"{p}.{j}.1")
                if w.shape != (hidden, cin, 1, 1):
                    raise ValueError(f"features.{idx} expand weight {w.shape}")
                x = g.conv(f"features.{idx}.expand", x, w, b, stride=1, group=1, relu6=True)
                j += 1
            w, b = _fold(feats, f"{p}.{j}.0", f"{p}.{j}.1")
            if w.shape != (hidden, 1, 3, 3):
                raise ValueError(f"features.{idx} depthwise weight {w.shape}")
            x = g.conv(f"features.{idx}.dw", x, w, b, stride=stride, group=hidden, relu6=True)
            j += 1
            w, b = _fold(feats, f"{p}.{j}", f"{p}.{j + 1}")
            if w.shape != (c, hidden, 1, 1):
                raise ValueError(f"features.{idx} project weight {w.shape}")
            x = g.conv(f"features.{idx}.project", x, w, b, stride=1, group=1, relu6=False)
            if stride == 1 and cin == c:
                out = f"features.{idx}.add"
                g.nodes.append(helper.make_node("Add", [block_in, x], [out], name=f"features.{idx}/Add"))
                x = out
            cin = c
            idx += 1

    # features.18: ConvBNReLU(320, 1280, 1x1)
    w, b = _fold(feats, f"{idx}.0", f"{idx}.1")
    if w.shape != (1280, cin, 1, 1):
        raise ValueError(f"features.{idx} weight {w.shape}")
    x = g.conv(f"features.{idx}", x, w, b, stride=1, group=1, relu6=True)
    if f"{idx + 1}.0.weight" in feats:
        raise ValueError("checkpoint has more feature layers than MobileNetV2 (width 1.0)")

    # torch.mean(x, dim=(2, 3)) -> Linear(1280, 1)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool/GlobalAveragePool"))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["pooled.flat"], name="pool/Flatten", axis=1))
    cw = np.asarray(cw, dtype=np.float32)
    cb = np.asarray(cb, dtype=np.float32)
    if cw.shape != (1, 1280) or cb.shape != (1,):
        raise ValueError(f"classify shapes {cw.shape} {cb.shape}, expected (1,1280) (1,)")
    g.init("classify.weight", cw)
    g.init("classify.bias", cb)
    g.nodes.append(helper.make_node(
        "Gemm", ["pooled.flat", "classify.weight", "classify.bias"], ["quality"],
        name="classify/Gemm", transB=1,
    ))

    graph = helper.make_graph(
        g.nodes,
        "qualityface_mobilenetv2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("quality", TensorProto.FLOAT, [1, 1])],
        initializer=g.inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER_NAME,
        producer_version=PRODUCER_VERSION,
        doc_string=(
            "qualityface 1.0.3 (MIT, Sirius Demon) face quality net: torchvision MobileNetV2 features, "
            "spatial mean, Linear(1280,1); BatchNorm folded. Input: face box crop 128x128 RGB, "
            "(x/255-0.5)/0.5, NCHW. Output: raw score about 0..1 (no sigmoid/clamp, as qualityface.api)."
        ),
    )
    model.ir_version = IR_VERSION
    model.model_version = 1
    for key, value in (
        ("source", "pypi qualityface==1.0.3 qualityface/checkpoints/last.pth"),
        ("source_sha256", source_sha256),
        ("licence", "MIT"),
        ("preprocessing", "RGB face box crop resized to 128x128, (x/255 - 0.5) / 0.5, NCHW"),
    ):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} INPUT.pth OUTPUT.onnx", file=sys.stderr)
        return 2
    src, dst = argv[1], argv[2]
    with open(src, "rb") as fh:
        source_sha256 = hashlib.sha256(fh.read()).hexdigest()
    sd = load_state_dict(src)
    model = build_model(sd, source_sha256)
    data = model.SerializeToString(deterministic=True)
    with open(dst, "wb") as fh:
        fh.write(data)
    print(f"qualityface_to_onnx: wrote {dst} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
