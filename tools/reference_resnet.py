#!/usr/bin/env python3
"""Independent reference forward pass for ceusd GGUF models (ONNX Runtime).

What this checks
----------------
ceusd stores its classifier (torchvision ResNet-50 v1.5 backbone plus a
two-layer head) in a GGUF file (version 2 as candle writes it; version 3 is
read as well). This tool reads that file with gguf-py, validates the metadata
and every tensor name and shape against the specification below, rebuilds the
network as an ONNX graph with ``onnx.helper`` (BatchNormalization kept as
separate nodes with the stored running statistics: nothing is folded) and runs
it with onnxruntime's CPUExecutionProvider. Its outputs are the reference the
Rust implementation is tested against.

Network: conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2 pad 1 -> layer1..layer4
(3, 4, 6, 3 bottlenecks, stride on the 3x3 conv, BN eps 1e-5) -> [layer4
output, N x 2048 x 7 x 7] -> global average pool -> fc1 (2048->512) ->
activation ("none" | "relu") -> fc2 (512->2) -> logits -> softmax.

Tensors (PyTorch shapes, torchvision state-dict names without
``num_batches_tracked``): ``conv1.weight`` [64,C,7,7], ``bn1.{weight,bias,
running_mean,running_var}``, ``layer{L}.{i}.conv{1,2,3}.weight``,
``layer{L}.{i}.bn{1,2,3}.*``, ``layer{L}.0.downsample.0.weight``,
``layer{L}.0.downsample.1.*``, ``fc1.weight`` [512,2048], ``fc1.bias`` [512],
``fc2.weight`` [2,512], ``fc2.bias`` [2]. F32 or F16 (converted to float32).
GGUF stores dimensions in reverse (ggml ``ne``) order; gguf-py reports the raw
``ne`` order in ``ReaderTensor.shape`` and reshapes ``ReaderTensor.data`` to the
reversed (PyTorch) order. Both are checked against each other here.

Metadata: ``general.architecture`` = "ceus-dlr-resnet50", ``ceusd.input.channels``
u32 (1 or 3), ``ceusd.input.size`` u32, ``ceusd.input.mean`` / ``ceusd.input.std``
f32 arrays (one value per input channel), ``ceusd.classes`` string array (order
of fc2's outputs), ``ceusd.head.activation`` string ("none" | "relu").

Input preprocessing (fixtures mode): 8-bit greyscale PNG of exactly
size x size pixels; x = float32(pixel) / 255; channel c = (x - mean[c]) / std[c];
the grey plane is replicated into all C channels; NCHW, batch 1.

How to run
----------
    pip install -r tools/requirements.txt

    # Print metadata and tensor shapes (raw ggml ne order and PyTorch order).
    python3 tools/reference_resnet.py info --model m.gguf

    # Reference outputs for the Rust tests: writes DIR/expected.json and one
    # DIR/<stem>.layer4.f32 (little-endian float32, NCHW, 2048*7*7) per input.
    python3 tools/reference_resnet.py fixtures --model m.gguf \\
        --inputs a.png b.png --out DIR [--crosscheck]

    # Latency of ORT fp32 (or its static int8 quantization), batch 1 (or --batch N).
    python3 tools/reference_resnet.py bench --model m.gguf --threads 2 \\
        --warmup 5 --runs 30 [--batch 8] [--int8-static] [--json]
    # The same session kept open: after the warm-up, each line "N" read from stdin
    # times N runs and answers one JSON line (for timing rounds interleaved with
    # another runtime's, so both see the same machine load); EOF ends it.
    python3 tools/reference_resnet.py bench --model m.gguf --serve [--int8-static]

    # Check the ONNX graph against a plain numpy float64 forward pass.
    python3 tools/reference_resnet.py check-graph --model m.gguf [--input a.png]

Every subcommand but ``info`` accepts ``--export-onnx PATH`` to save the graph
and ``--opt-level``: ``fixtures`` and ``check-graph`` default to ``disable``
(ORT runs the graph node by node, BatchNormalization is not fused into Conv),
``bench`` defaults to ``all`` (what a production ORT deployment would run).
Threads: ``--threads`` sets intra_op_num_threads; inter_op is 1, sequential.
A random test model can be made with ``tools/make_test_gguf.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ARCHITECTURE = "ceus-dlr-resnet50"
BN_EPS = 1e-5
OPSET = 17
# (layer index, number of bottleneck blocks, bottleneck width, stride of block 0)
LAYERS = [(1, 3, 64, 1), (2, 4, 128, 2), (3, 6, 256, 2), (4, 3, 512, 2)]
EXPANSION = 4
FEATURES = 2048
HEAD_HIDDEN = 512
NUM_CLASSES = 2
BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


# --------------------------------------------------------------------------
# Specification of the tensors
# --------------------------------------------------------------------------

def expected_shapes(channels: int) -> dict[str, tuple[int, ...]]:
    """Every tensor the GGUF file must hold, with its PyTorch shape."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, n: int) -> None:
        for p in BN_PARAMS:
            shapes[f"{prefix}.{p}"] = (n,)

    shapes["conv1.weight"] = (64, channels, 7, 7)
    bn("bn1", 64)
    in_ch = 64
    for li, blocks, width, _stride in LAYERS:
        out_ch = width * EXPANSION
        for b in range(blocks):
            p = f"layer{li}.{b}"
            shapes[f"{p}.conv1.weight"] = (width, in_ch, 1, 1)
            bn(f"{p}.bn1", width)
            shapes[f"{p}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{p}.bn2", width)
            shapes[f"{p}.conv3.weight"] = (out_ch, width, 1, 1)
            bn(f"{p}.bn3", out_ch)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (out_ch, in_ch, 1, 1)
                bn(f"{p}.downsample.1", out_ch)
            in_ch = out_ch
    shapes["fc1.weight"] = (HEAD_HIDDEN, FEATURES)
    shapes["fc1.bias"] = (HEAD_HIDDEN,)
    shapes["fc2.weight"] = (NUM_CLASSES, HEAD_HIDDEN)
    shapes["fc2.bias"] = (NUM_CLASSES,)
    return shapes


# --------------------------------------------------------------------------
# GGUF loading and validation
# --------------------------------------------------------------------------

class ModelError(Exception):
    """The GGUF file does not follow the ceusd model specification."""


@dataclass
class Model:
    path: Path
    sha256: str
    gguf_version: int
    channels: int
    size: int
    mean: list[float]
    std: list[float]
    classes: list[str]
    activation: str
    weights: dict[str, np.ndarray]          # float32, PyTorch shapes
    dtypes: dict[str, str] = field(default_factory=dict)   # tensor name -> "F32"/"F16"
    raw_dims: dict[str, list[int]] = field(default_factory=dict)  # ggml ne order


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _field(reader, key: str, kind: str):
    """Read metadata `key`, insisting on the GGUF type the spec gives it.

    kind: "u32" | "str" | "f32[]" | "str[]".
    """
    from gguf import GGUFValueType as T

    f = reader.get_field(key)
    if f is None:
        raise ModelError(f"missing metadata key {key!r}")
    types = list(f.types)
    want = {"u32": [T.UINT32], "str": [T.STRING],
            "f32[]": [T.ARRAY, T.FLOAT32], "str[]": [T.ARRAY, T.STRING]}[kind]
    if types != want and not (types == [T.ARRAY] and kind.endswith("[]")):
        got = "/".join(t.name for t in types)
        raise ModelError(f"metadata {key!r} has type {got}, expected {kind}")
    if kind.endswith("[]"):
        return list(f.contents()) if len(types) > 1 else []
    return f.contents()


def load_model(path: Path) -> Model:
    """Read and validate a ceusd GGUF model; tensors come back as float32."""
    from gguf import GGMLQuantizationType, GGUFReader

    reader = GGUFReader(path)
    version = int(reader.fields["GGUF.version"].parts[0][0])

    arch = _field(reader, "general.architecture", "str")
    if arch != ARCHITECTURE:
        raise ModelError(f"general.architecture is {arch!r}, expected {ARCHITECTURE!r}")
    channels = int(_field(reader, "ceusd.input.channels", "u32"))
    if channels not in (1, 3):
        raise ModelError(f"ceusd.input.channels must be 1 or 3, got {channels}")
    size = int(_field(reader, "ceusd.input.size", "u32"))
    if size % 32 != 0 or size <= 0:
        raise ModelError(f"ceusd.input.size must be a positive multiple of 32, got {size}")
    mean = [float(v) for v in _field(reader, "ceusd.input.mean", "f32[]")]
    std = [float(v) for v in _field(reader, "ceusd.input.std", "f32[]")]
    if len(mean) != channels or len(std) != channels:
        raise ModelError(f"ceusd.input.mean/std need {channels} values, "
                         f"got {len(mean)}/{len(std)}")
    if any(s <= 0 for s in std):
        raise ModelError(f"ceusd.input.std must be positive, got {std}")
    classes = [str(c) for c in _field(reader, "ceusd.classes", "str[]")]
    if len(classes) != NUM_CLASSES:
        raise ModelError(f"ceusd.classes must list {NUM_CLASSES} classes, got {classes}")
    activation = _field(reader, "ceusd.head.activation", "str")
    if activation not in ("none", "relu"):
        raise ModelError(f"ceusd.head.activation must be 'none' or 'relu', got {activation!r}")

    spec = expected_shapes(channels)
    weights: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    raw_dims: dict[str, list[int]] = {}
    for t in reader.tensors:
        if t.name not in spec:
            continue  # reported below
        if t.tensor_type not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            raise ModelError(f"{t.name}: dtype {t.tensor_type.name}, only F32/F16 supported")
        ne = [int(d) for d in t.shape]           # raw ggml order, innermost first
        data = np.asarray(t.data)
        # gguf-py reshapes the data to reversed(ne); make sure that is the case
        # and that it equals the PyTorch shape of the spec.
        if tuple(reversed(ne)) != data.shape:
            raise ModelError(f"{t.name}: gguf-py data shape {data.shape} is not reversed(ne={ne})")
        if data.shape != spec[t.name]:
            raise ModelError(f"{t.name}: shape {data.shape} (ggml ne {ne}), "
                             f"expected {spec[t.name]}")
        arr = data.astype(np.float32)             # copies out of the memory map
        if not np.all(np.isfinite(arr)):
            raise ModelError(f"{t.name}: non-finite values")
        weights[t.name] = arr
        dtypes[t.name] = t.tensor_type.name
        raw_dims[t.name] = ne
    names = {t.name for t in reader.tensors}
    missing = [n for n in spec if n not in names]
    extra = sorted(names - set(spec))
    if missing or extra:
        raise ModelError(f"tensor set mismatch: missing {missing[:8]}{'...' if len(missing) > 8 else ''}"
                         f" ({len(missing)}), unexpected {extra[:8]} ({len(extra)})")
    for k, v in weights.items():
        if k.endswith("running_var") and np.any(v < 0):
            raise ModelError(f"{k}: negative variance")

    return Model(path=path, sha256=sha256_file(path), gguf_version=version,
                 channels=channels, size=size, mean=mean, std=std, classes=classes,
                 activation=activation, weights=weights, dtypes=dtypes, raw_dims=raw_dims)


# --------------------------------------------------------------------------
# ONNX graph
# --------------------------------------------------------------------------

class _GraphBuilder:
    """Tiny helper around onnx.helper that names nodes and collects initializers."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights
        self.nodes = []
        self.inits = {}
        self.counter = 0

    def _init(self, name: str) -> str:
        from onnx import numpy_helper
        if name not in self.inits:
            self.inits[name] = numpy_helper.from_array(self.weights[name], name)
        return name

    def _node(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        from onnx import helper
        self.counter += 1
        out = out or f"{op.lower()}_{self.counter}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.counter}", **attrs))
        return out

    def conv(self, x: str, w: str, stride: int, pad: int, out: str | None = None) -> str:
        k = self.weights[w].shape[-1]
        return self._node("Conv", [x, self._init(w)], out, kernel_shape=[k, k],
                          strides=[stride, stride], pads=[pad] * 4, dilations=[1, 1], group=1)

    def bn(self, x: str, prefix: str) -> str:
        ins = [x] + [self._init(f"{prefix}.{p}") for p in BN_PARAMS]
        # Inference mode (training_mode=0): y = (x - running_mean) /
        # sqrt(running_var + eps) * weight + bias.
        return self._node("BatchNormalization", ins, epsilon=BN_EPS)

    def relu(self, x: str, out: str | None = None) -> str:
        return self._node("Relu", [x], out)

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b])


def build_onnx(model: Model):
    """The ResNet-50 + head graph with outputs layer4, logits and probs."""
    import onnx
    from onnx import TensorProto, helper

    g = _GraphBuilder(model.weights)
    x = g.conv("input", "conv1.weight", 2, 3)
    x = g.relu(g.bn(x, "bn1"))
    x = g._node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for li, blocks, _width, stride in LAYERS:
        for b in range(blocks):
            p = f"layer{li}.{b}"
            s = stride if b == 0 else 1
            y = g.relu(g.bn(g.conv(x, f"{p}.conv1.weight", 1, 0), f"{p}.bn1"))
            y = g.relu(g.bn(g.conv(y, f"{p}.conv2.weight", s, 1), f"{p}.bn2"))  # v1.5
            y = g.bn(g.conv(y, f"{p}.conv3.weight", 1, 0), f"{p}.bn3")
            if b == 0:
                idn = g.bn(g.conv(x, f"{p}.downsample.0.weight", s, 0), f"{p}.downsample.1")
            else:
                idn = x
            last = li == LAYERS[-1][0] and b == blocks - 1
            x = g.relu(g.add(y, idn), out="layer4" if last else None)
    pooled = g._node("GlobalAveragePool", [x])
    flat = g._node("Flatten", [pooled], axis=1)
    h = g._node("Gemm", [flat, g._init("fc1.weight"), g._init("fc1.bias")], transB=1)
    if model.activation == "relu":
        h = g.relu(h)
    # (Dropout, if the training graph had one, is the identity at inference.)
    g._node("Gemm", [h, g._init("fc2.weight"), g._init("fc2.bias")], "logits", transB=1)
    g._node("Softmax", ["logits"], "probs", axis=1)

    s = model.size
    graph = helper.make_graph(
        g.nodes, "ceus_dlr_resnet50",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", model.channels, s, s])],
        outputs=[
            helper.make_tensor_value_info("layer4", TensorProto.FLOAT, ["N", FEATURES, s // 32, s // 32]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", NUM_CLASSES]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", NUM_CLASSES]),
        ],
        initializer=list(g.inits.values()),
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="ceusd-tools-reference_resnet")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


OPT_LEVELS = ("disable", "basic", "extended", "all")


def make_session(onnx_model, threads: int, opt_level: str):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    return ort.InferenceSession(onnx_model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------

def load_gray_png(path: Path, size: int) -> np.ndarray:
    """An 8-bit greyscale PNG of exactly size x size pixels, as uint8 (H, W)."""
    from PIL import Image
    with Image.open(path) as im:
        if im.format != "PNG":
            raise ValueError(f"{path}: not a PNG (format {im.format})")
        if im.mode != "L":
            raise ValueError(f"{path}: mode {im.mode}, expected 8-bit greyscale (L)")
        if im.size != (size, size):
            raise ValueError(f"{path}: {im.size[0]}x{im.size[1]}, expected {size}x{size}")
        return np.asarray(im, dtype=np.uint8).copy()


def preprocess(gray: np.ndarray, model: Model) -> np.ndarray:
    """uint8 (H, W) -> float32 (1, C, H, W), normalised per channel."""
    x = gray.astype(np.float32) / np.float32(255.0)
    planes = [(x - np.float32(m)) / np.float32(s) for m, s in zip(model.mean, model.std)]
    return np.stack(planes)[None].astype(np.float32)


# --------------------------------------------------------------------------
# Plain numpy float64 forward pass (graph check and test-model calibration)
# --------------------------------------------------------------------------

def _conv_np(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Cross-correlation as in PyTorch/ONNX Conv. x (N,C,H,W), w (O,C,k,k)."""
    from numpy.lib.stride_tricks import sliding_window_view
    n, c, _, _ = x.shape
    o, _, k, _ = w.shape
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    ho, wo = win.shape[2], win.shape[3]
    cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * k * k, ho * wo)
    return (w.reshape(o, -1) @ cols).reshape(n, o, ho, wo)


def _maxpool_np(x: np.ndarray) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view
    x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    return sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max(axis=(-1, -2))


BnHook = Callable[[str, np.ndarray], None]


def numpy_forward(weights: dict[str, np.ndarray], activation: str, x: np.ndarray,
                  bn_hook: BnHook | None = None) -> dict[str, np.ndarray]:
    """float64 forward pass. `bn_hook(prefix, pre_bn_activations)` is called
    before each BatchNormalization (used to calibrate random test models; it
    may update the running statistics in `weights`)."""
    def get(name: str) -> np.ndarray:
        # Looked up on every use, so that a bn_hook may replace running stats.
        return np.asarray(weights[name], dtype=np.float64)

    def bn(y: np.ndarray, prefix: str) -> np.ndarray:
        if bn_hook:
            bn_hook(prefix, y)
        sh = (1, -1, 1, 1)
        mean, var = get(f"{prefix}.running_mean"), get(f"{prefix}.running_var")
        gamma, beta = get(f"{prefix}.weight"), get(f"{prefix}.bias")
        return (y - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + BN_EPS) * gamma.reshape(sh) \
            + beta.reshape(sh)

    relu = lambda t: np.maximum(t, 0.0)  # noqa: E731
    h = relu(bn(_conv_np(np.asarray(x, np.float64), get("conv1.weight"), 2, 3), "bn1"))
    h = _maxpool_np(h)
    for li, blocks, _width, stride in LAYERS:
        for b in range(blocks):
            p = f"layer{li}.{b}"
            s = stride if b == 0 else 1
            y = relu(bn(_conv_np(h, get(f"{p}.conv1.weight"), 1, 0), f"{p}.bn1"))
            y = relu(bn(_conv_np(y, get(f"{p}.conv2.weight"), s, 1), f"{p}.bn2"))
            y = bn(_conv_np(y, get(f"{p}.conv3.weight"), 1, 0), f"{p}.bn3")
            idn = bn(_conv_np(h, get(f"{p}.downsample.0.weight"), s, 0),
                     f"{p}.downsample.1") if b == 0 else h
            h = relu(y + idn)
    layer4 = h
    pooled = layer4.mean(axis=(2, 3))
    f1 = pooled @ get("fc1.weight").T + get("fc1.bias")
    if activation == "relu":
        f1 = relu(f1)
    logits = f1 @ get("fc2.weight").T + get("fc2.bias")
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"layer4": layer4, "logits": logits, "probs": e / e.sum(axis=1, keepdims=True)}


def compare_outputs(ort_out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Max abs error of each output, relative to that output's max abs value."""
    rel = {}
    for k in ("layer4", "logits", "probs"):
        a, b = np.asarray(ort_out[k], np.float64), ref[k]
        rel[k] = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
    return rel


def run_ort(sess, x: np.ndarray) -> dict[str, np.ndarray]:
    names = ["layer4", "logits", "probs"]
    return dict(zip(names, sess.run(names, {"input": x})))


# --------------------------------------------------------------------------
# Subcommands
# --------------------------------------------------------------------------

def _f9(v) -> float:
    """float32 value as a JSON float with 9 significant digits (exact for f32)."""
    return float(f"{float(v):.9g}")


def _compact_json(obj, indent: int = 0, width: int = 100) -> str:
    """JSON with short objects/arrays kept on one line (compact but diffable)."""
    flat = json.dumps(obj)
    if len(flat) + indent <= width or not isinstance(obj, (dict, list)) or not obj:
        return flat
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {_compact_json(v, indent + 1, width)}"
                 for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    items = [f"{inner}{_compact_json(v, indent + 1, width)}" for v in obj]
    return "[\n" + ",\n".join(items) + f"\n{pad}]"


def _maybe_export(onnx_model, path: Path | None) -> None:
    if path:
        import onnx
        onnx.save(onnx_model, str(path))
        print(f"saved ONNX graph to {path}", file=sys.stderr)


def cmd_info(args) -> int:
    from gguf import GGUFReader
    reader = GGUFReader(args.model)
    print(f"GGUF version {int(reader.fields['GGUF.version'].parts[0][0])}, "
          f"{len(reader.tensors)} tensors, data offset {reader.data_offset}, "
          f"alignment {reader.alignment}")
    for k, f in reader.fields.items():
        if k.startswith("GGUF."):
            continue
        print(f"  {k} [{'/'.join(t.name for t in f.types)}] = {f.contents()!r}")
    print("tensors: name, dtype, ggml ne (file order), numpy/PyTorch shape")
    for t in reader.tensors:
        print(f"  {t.name:40s} {t.tensor_type.name:4s} ne={[int(d) for d in t.shape]} "
              f"-> {tuple(np.asarray(t.data).shape)}")
    try:
        m = load_model(args.model)
        print(f"valid ceusd model: C={m.channels} size={m.size} classes={m.classes} "
              f"activation={m.activation} dtypes={sorted(set(m.dtypes.values()))}")
        return 0
    except ModelError as e:
        print(f"INVALID: {e}")
        return 1


def cmd_fixtures(args) -> int:
    import onnxruntime as ort

    model = load_model(args.model)
    onnx_model = build_onnx(model)
    _maybe_export(onnx_model, args.export_onnx)
    sess = make_session(onnx_model, args.threads, args.opt_level)

    stems = [Path(p).stem for p in args.inputs]
    if len(set(stems)) != len(stems):
        raise SystemExit("input file names must be unique (their stems name the output files)")
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in args.inputs:
        path = Path(path)
        x = preprocess(load_gray_png(path, model.size), model)
        out = run_ort(sess, x)
        l4 = np.ascontiguousarray(out["layer4"][0], dtype="<f4")
        l4_file = f"{path.stem}.layer4.f32"
        l4.tofile(args.out / l4_file)
        rec = {
            "file": path.name,
            "input_sha256": sha256_file(path),
            "logits": [_f9(v) for v in out["logits"][0]],
            "probabilities": [_f9(v) for v in out["probs"][0]],
            "predicted": model.classes[int(np.argmax(out["probs"][0]))],
            "layer4_file": l4_file,
            "layer4_max_abs": _f9(np.abs(l4).max()),
            "layer4_mean": _f9(l4.astype(np.float64).mean()),
        }
        if args.crosscheck:
            ref = numpy_forward(model.weights, model.activation, x)
            rec["crosscheck_rel_err_vs_numpy_f64"] = {k: float(f"{v:.3g}") for k, v in
                                                      compare_outputs(out, ref).items()}
        records.append(rec)
        print(f"{path.name}: probs {rec['probabilities']} -> {rec['predicted']}")

    expected = {
        "model": {
            "path": str(args.model),
            "sha256": model.sha256,
            "gguf_version": model.gguf_version,
            "tensor_dtypes": sorted(set(model.dtypes.values())),
            "channels": model.channels,
            "size": model.size,
            "mean": model.mean,
            "std": model.std,
            "classes": model.classes,
            "head_activation": model.activation,
        },
        "runtime": {
            "onnxruntime": ort.__version__,
            "provider": "CPUExecutionProvider",
            "opset": OPSET,
            "graph_optimization": args.opt_level,
        },
        "preprocessing": "x = u8/255 (f32); (x - mean[c]) / std[c]; grey replicated to C channels",
        "layer4": {"shape": [1, FEATURES, model.size // 32, model.size // 32],
                   "dtype": "float32", "byte_order": "little", "layout": "NCHW",
                   "after": "final ReLU of layer4 (before global average pooling)"},
        "inputs": records,
    }
    (args.out / "expected.json").write_text(_compact_json(expected, width=160) + "\n")
    print(f"wrote {args.out / 'expected.json'} and {len(records)} layer4 files")
    return 0


def quantize_int8_static(onnx_model, channels: int, size: int, calibration: int):
    """ONNX Runtime's static int8 quantization of the graph, as its documentation recommends
    for CNNs on x86: QDQ format, per-channel s8 weights, u8 activations (reduce_range keeps
    AVX2's vpmaddubsw from saturating), MinMax calibration on `calibration` inputs."""
    import tempfile
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.items = iter([{"input": rng.standard_normal((1, channels, size, size),
                                                            dtype=np.float32)}
                               for _ in range(calibration)])

        def get_next(self):
            return next(self.items, None)

    import onnx
    with tempfile.TemporaryDirectory() as d:
        src, pre, dst = Path(d, "f32.onnx"), Path(d, "pre.onnx"), Path(d, "int8.onnx")
        onnx.save(onnx_model, src)
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        return onnx.load(str(dst))


def cmd_bench(args) -> int:
    import onnxruntime as ort

    model = load_model(args.model)
    onnx_model = build_onnx(model)
    precision = "fp32"
    if args.int8_static:
        onnx_model = quantize_int8_static(onnx_model, model.channels, model.size, args.calibration)
        precision = "int8 static (QDQ, per-channel s8 weights, u8 activations)"
    _maybe_export(onnx_model, args.export_onnx)
    sess = make_session(onnx_model, args.threads, args.opt_level)
    x = np.random.default_rng(0).standard_normal(
        (args.batch, model.channels, model.size, model.size), dtype=np.float32)
    for _ in range(args.warmup):
        sess.run(["probs"], {"input": x})
    if args.serve:
        print(json.dumps({"ready": True, "ort_version": ort.__version__}), flush=True)
        for line in sys.stdin:
            runs = int(line)
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                sess.run(["probs"], {"input": x})
                times.append((time.perf_counter() - t0) * 1e3)
            print(json.dumps({"median_ms": round(statistics.median(times), 3),
                              "runs": runs}), flush=True)
        return 0
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        sess.run(["probs"], {"input": x})
        times.append((time.perf_counter() - t0) * 1e3)
    med, mean, mn = statistics.median(times), statistics.fmean(times), min(times)
    if args.json:
        print(json.dumps({"runtime": "onnxruntime", "ort_version": ort.__version__,
                          "precision": "int8" if args.int8_static else "fp32",
                          "threads": args.threads, "median_ms": round(med, 3),
                          "min_ms": round(mn, 3), "mean_ms": round(mean, 3),
                          "runs": args.runs, "warmup": args.warmup, "batch": args.batch,
                          "graph_optimization": args.opt_level}))
    else:
        print(f"onnxruntime {ort.__version__} {precision} CPU, batch {args.batch}, "
              f"{model.size}x{model.size}, C={model.channels}, threads={args.threads}, "
              f"opt={args.opt_level}, {args.runs} runs after {args.warmup} warm-up")
        print(f"median {med:.2f} ms   mean {mean:.2f} ms   min {mn:.2f} ms")
    return 0


def cmd_check_graph(args) -> int:
    model = load_model(args.model)
    onnx_model = build_onnx(model)
    _maybe_export(onnx_model, args.export_onnx)
    sess = make_session(onnx_model, args.threads, args.opt_level)
    if args.input:
        x = preprocess(load_gray_png(args.input, model.size), model)
    else:
        rng = np.random.default_rng(1)
        x = preprocess(rng.integers(0, 256, (model.size, model.size), dtype=np.uint8), model)
    t0 = time.perf_counter()
    ref = numpy_forward(model.weights, model.activation, x)
    t_np = time.perf_counter() - t0
    out = run_ort(sess, x)
    rel = compare_outputs(out, ref)
    for k in ("layer4", "logits", "probs"):
        assert out[k].shape == ref[k].shape, (k, out[k].shape, ref[k].shape)
    print(f"shapes: layer4 {out['layer4'].shape}, logits {out['logits'].shape}, "
          f"probs {out['probs'].shape}")
    print(f"numpy f64 logits {ref['logits'][0]}, ORT f32 logits {out['logits'][0]}")
    print(f"max abs error / max abs value: " + ", ".join(f"{k} {v:.2e}" for k, v in rel.items()))
    print(f"(numpy float64 forward took {t_np:.1f} s)")
    ok = all(v <= args.tolerance for v in rel.values())
    print("graph OK" if ok else f"graph MISMATCH (tolerance {args.tolerance:g})")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Run '<subcommand> --help' for the options of each mode.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser, threads: int, opt: str) -> None:
        p.add_argument("--model", type=Path, required=True, help="ceusd GGUF model file")
        p.add_argument("--threads", type=int, default=threads,
                       help=f"ORT intra-op threads (default {threads})")
        p.add_argument("--opt-level", choices=OPT_LEVELS, default=opt,
                       help=f"ORT graph optimisation level (default {opt}; 'disable' runs the "
                            "graph node by node, e.g. BatchNormalization is not fused into Conv)")
        p.add_argument("--export-onnx", type=Path, metavar="PATH",
                       help="also save the ONNX graph to PATH")

    p = sub.add_parser("info", help="print metadata and tensor shapes, validate the model")
    p.add_argument("--model", type=Path, required=True)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("fixtures", help="write expected.json + layer4 activations for PNG inputs")
    common(p, threads=2, opt="disable")
    p.add_argument("--inputs", nargs="+", required=True,
                   help="8-bit greyscale PNGs, each exactly size x size (224x224)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--crosscheck", action="store_true",
                   help="also run the numpy float64 forward pass and record the relative error")
    p.set_defaults(func=cmd_fixtures)

    p = sub.add_parser("bench", help="time ORT fp32 (or int8 static) inference")
    common(p, threads=2, opt="all")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--int8-static", action="store_true",
                   help="time ONNX Runtime's static int8 quantization of the same graph")
    p.add_argument("--calibration", type=int, default=16,
                   help="calibration inputs for --int8-static (default 16)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    p.add_argument("--serve", action="store_true",
                   help="keep the session: time N runs per stdin line, answer a JSON line each")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("check-graph", help="compare the ONNX graph with a numpy float64 forward")
    common(p, threads=2, opt="disable")
    p.add_argument("--input", type=Path, help="224x224 greyscale PNG (default: random pixels)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="max allowed error relative to each output's max abs value")
    p.set_defaults(func=cmd_check_graph)

    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except ModelError as e:
        print(f"error: {args.model}: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
