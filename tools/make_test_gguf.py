#!/usr/bin/env python3
"""Write a random-weight ceusd test model in GGUF, for testing without a real model.

What it makes
-------------
A GGUF file with exactly the tensor names, shapes and metadata that
``tools/reference_resnet.py`` documents and checks (torchvision ResNet-50
state-dict names minus ``num_batches_tracked``, plus ``fc1.*`` / ``fc2.*``).
Weights are random but well scaled, so activations look like those of a
trained network rather than exploding or vanishing:

* convolutions: Kaiming-uniform (bound sqrt(6 / fan_in));
* BatchNormalization: weight U(0.5, 1.5) (U(0.2, 0.6) for the last BN of each
  bottleneck, which keeps the residual stream tame), bias N(0, 0.1); the running
  statistics are *calibrated*: a float64 numpy forward pass over a few synthetic
  inputs sets running_mean / running_var to the observed per-channel statistics,
  then they are perturbed slightly (so BN is not an exact whitening);
* fc1 / fc2: Kaiming-uniform, biases small.

The file is written with gguf-py's GGUFWriter, which emits GGUF version 3.
``--gguf-version 2`` patches the version field to 2 afterwards, which is what
candle writes: the v2 and v3 layouts are identical for little-endian files (v3
only added the big-endian variant), so the patched file is a valid v2 file.

How to run
----------
    python3 tools/make_test_gguf.py --out /tmp/test_c3.gguf --channels 3
    python3 tools/make_test_gguf.py --out /tmp/test_c1_f16.gguf --channels 1 \\
        --dtype f16 --activation none --gguf-version 2

A 3-channel F32 model is about 106 MB (F16: 53 MB); keep it out of the repository.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_resnet as ref  # noqa: E402


def random_weights(channels: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random, un-calibrated weights in float64, keyed by tensor name."""
    w: dict[str, np.ndarray] = {}
    for name, shape in ref.expected_shapes(channels).items():
        if len(shape) == 4 or name.endswith("fc1.weight") or name.endswith("fc2.weight"):
            fan_in = int(np.prod(shape[1:]))
            bound = np.sqrt(6.0 / fan_in)
            w[name] = rng.uniform(-bound, bound, size=shape)
        elif name in ("fc1.bias", "fc2.bias"):
            w[name] = rng.normal(0.0, 0.05, size=shape)
        elif name.endswith(".weight"):  # BN gamma
            last_bn = name.endswith("bn3.weight")
            w[name] = rng.uniform(0.2, 0.6, size=shape) if last_bn else rng.uniform(0.5, 1.5, size=shape)
        elif name.endswith(".bias"):  # BN beta
            w[name] = rng.normal(0.0, 0.1, size=shape)
        elif name.endswith("running_mean"):
            w[name] = np.zeros(shape)
        elif name.endswith("running_var"):
            w[name] = np.ones(shape)
        else:
            raise AssertionError(name)
    return w


def calibrate_bn(w: dict[str, np.ndarray], channels: int, size: int, activation: str,
                 mean: list[float], std: list[float], rng: np.random.Generator) -> None:
    """Set every BN's running statistics from a forward pass over synthetic inputs."""
    # A few smooth-plus-speckle grey images, preprocessed as ceusd would.
    yy, xx = np.mgrid[0:size, 0:size] / size
    batch = []
    for i in range(3):
        smooth = 0.5 + 0.3 * np.sin(6 * xx + i) * np.cos(4 * yy - i)
        img = np.clip(smooth * rng.rayleigh(0.8, size=(size, size)), 0, 1)
        gray = np.rint(img * 255).astype(np.uint8)
        x = gray.astype(np.float64) / 255.0
        batch.append(np.stack([(x - m) / s for m, s in zip(mean, std)]))
    x = np.stack(batch)

    def hook(prefix: str, y: np.ndarray) -> None:
        mu = y.mean(axis=(0, 2, 3))
        var = y.var(axis=(0, 2, 3))
        sd = np.sqrt(var + ref.BN_EPS)
        w[f"{prefix}.running_mean"] = mu + 0.1 * sd * rng.standard_normal(mu.shape)
        w[f"{prefix}.running_var"] = var * rng.uniform(0.8, 1.25, size=var.shape)

    ref.numpy_forward(w, activation, x, bn_hook=hook)


def write_gguf(path: Path, w: dict[str, np.ndarray], channels: int, size: int,
               mean: list[float], std: list[float], classes: list[str], activation: str,
               dtype: str, version: int) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), ref.ARCHITECTURE)  # writes general.architecture
    writer.add_string("general.name", "ceusd random test model")
    writer.add_uint32("ceusd.input.channels", channels)
    writer.add_uint32("ceusd.input.size", size)
    writer.add_array("ceusd.input.mean", [float(v) for v in mean])   # -> f32 array
    writer.add_array("ceusd.input.std", [float(v) for v in std])
    writer.add_array("ceusd.classes", list(classes))                  # -> string array
    writer.add_string("ceusd.head.activation", activation)
    np_dtype = np.float16 if dtype == "f16" else np.float32
    for name in ref.expected_shapes(channels):
        # add_tensor takes the numpy (PyTorch) shape and writes it reversed
        # (ggml ne order), as candle does.
        writer.add_tensor(name, np.ascontiguousarray(w[name], dtype=np_dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if version == 2:
        with open(path, "r+b") as f:
            f.seek(4)
            assert struct.unpack("<I", f.read(4))[0] == 3
            f.seek(4)
            f.write(struct.pack("<I", 2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output .gguf path")
    ap.add_argument("--channels", type=int, choices=(1, 3), default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--dtype", choices=("f32", "f16"), default="f32")
    ap.add_argument("--activation", choices=("none", "relu"), default="relu")
    ap.add_argument("--classes", nargs=2, default=["CP", "PDAC"])
    ap.add_argument("--mean", type=float, nargs="+",
                    help="per-channel mean (default ImageNet RGB, or 0.449 for 1 channel)")
    ap.add_argument("--std", type=float, nargs="+",
                    help="per-channel std (default ImageNet RGB, or 0.226 for 1 channel)")
    ap.add_argument("--gguf-version", type=int, choices=(2, 3), default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    mean = args.mean or ([0.485, 0.456, 0.406] if args.channels == 3 else [0.449])
    std = args.std or ([0.229, 0.224, 0.225] if args.channels == 3 else [0.226])
    if len(mean) != args.channels or len(std) != args.channels:
        ap.error("--mean/--std need one value per channel")

    rng = np.random.default_rng(args.seed)
    w = random_weights(args.channels, rng)
    calibrate_bn(w, args.channels, args.size, args.activation, mean, std, rng)
    write_gguf(args.out, w, args.channels, args.size, mean, std, args.classes,
               args.activation, args.dtype, args.gguf_version)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, GGUF v{args.gguf_version}, "
          f"C={args.channels}, {args.dtype}, head activation {args.activation})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
