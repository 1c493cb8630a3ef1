#!/usr/bin/env python3
"""Generate (or verify) Pillow reference fixtures for the ceusd preprocessing.

What this checks
----------------
ceusd's preprocessing must reproduce, bit for bit, what this Pillow pipeline
produces for an RGB key frame and a region of interest (ROI) ``(x, y, w, h)``::

    Image.open(src).convert("RGB")
         .crop((x, y, x + w, y + h))
         .convert("L")                  # ITU-R 601-2 luma, Pillow integer rounding:
                                        # L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16
         .resize((224, 224), filter)    # BILINEAR or BICUBIC; reducing_gap=None (the
                                        # default), so Pillow runs its antialiasing
                                        # convolution resampler directly, with the
                                        # filter support scaled by the downscale factor

This script writes deterministic, ultrasound-like synthetic RGB source images
(speckle, smooth blobs, a dark lesion with a sharp rim, saturated lines,
text-like glyphs, colour overlays and a random-colour patch) and, for a set of
cases, Pillow's exact output. The Rust tests load ``manifest.json`` and compare
the Rust output with the expected PNG (exact equality is the goal; the
manifest does not prescribe a tolerance).

Cases cover: bilinear and bicubic, downscaling (integer and non-integer
factors), upscaling, non-square ROIs (aspect ratio changes), odd ROI sizes and
offsets, one axis down / other axis up, a ROI that is already 224x224 (no
resampling), the full frame, and tall ROIs for which Pillow 13 changed the
order of the two resampling passes (see below). The full-frame
``convert("L")`` result of each source image is written too, so the grey
conversion can be checked on its own.

Pillow versions
---------------
Pillow resamples in two separable passes, each rounded to uint8. Up to 12.x
it always runs the horizontal pass first (except for h > 100 w); Pillow 13 runs
the vertical pass first when (h - 224) > 0 and (h - 224) > 2 (w - 224), e.g. a
181x447 ROI. The two orders give different images (off by 1 for bilinear, up
to ~20 grey levels for bicubic near saturated edges). Each case records its
``pass_order`` under the Pillow that made the fixtures and, where the other
generation differs, an extra ``expected_pillow12`` image. All other cases are
identical for Pillow 12 and 13.

The script also contains a plain-numpy model of the pipeline (``luma_601``,
``precompute_coeffs``, ``resample_model``) written from Pillow's C sources. It
reproduces Pillow 12.3 and 13.0 exactly and ``--verify`` checks it on every
case, so it can serve as the specification for the Rust port (fixed-point
coefficients with 22 fractional bits, round-half-up, clip after each pass).

Output layout (default ``tests/data/pillow/``)::

    manifest.json
    src_*.png                 RGB sources (8-bit, no alpha)
    src_*_gray.png            Pillow convert("L") of the whole source
    <case>.png                expected 224x224 mode-L result for each case
    <case>.pillow12.png       Pillow 12.x result, only where it differs

``manifest.json``::

    {
      "pillow_version": "13.0.0",
      "numpy_version": "...",
      "output_size": [224, 224],
      "pipeline": "...",
      "gray_source": "src_us800.png", "gray_expected": "src_us800_gray.png",
      "gray": [{"gray_source": ..., "gray_expected": ...}, ...],   # every source
      "cases": [{"name", "source", "roi": [x, y, w, h],
                 "filter": "bilinear" | "bicubic", "expected",
                 "pass_order": "horizontal_first" | "vertical_first",
                 ["expected_pillow12"]}, ...],
      "sha256": {file: hex digest, ...}
    }

How to run
----------
    pip install -r tools/requirements.txt
    python3 tools/pillow_fixtures.py                 # (re)generate tests/data/pillow/
    python3 tools/pillow_fixtures.py --verify        # recompute every expected image
                                                     # from the stored sources with the
                                                     # installed Pillow and the numpy
                                                     # model, and compare

Regenerating with a different numpy may change the random source images (the
expected images are always recomputed from the sources, so fixtures stay
self-consistent). ``--verify`` does not depend on numpy's random streams.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "pillow"
OUT_SIZE = (224, 224)
FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

# Source images: name -> (width, height, seed). Small enough to keep the whole
# fixture directory around 2 MB.
SOURCES = {
    "us800": (800, 600, 800),  # downscaling source (largest)
    "us640": (640, 480, 640),  # odd ROIs, mixed up/down, identity size
    "us160": (160, 120, 160),  # upscaling source
}

# (name, source, (x, y, w, h), filter)
CASES = [
    # Downscale by exactly 2 in both axes (square ROI 448x448).
    ("down2_square_bilinear", "us800", (176, 76, 448, 448), "bilinear"),
    ("down2_square_bicubic", "us800", (176, 76, 448, 448), "bicubic"),
    # Non-square ROI: x scale 720/224 = 3.21, y scale 540/224 = 2.41.
    ("down_nonsquare_bilinear", "us800", (40, 30, 720, 540), "bilinear"),
    ("down_nonsquare_bicubic", "us800", (40, 30, 720, 540), "bicubic"),
    # Whole frame, 4:3 -> 1:1.
    ("down_fullframe_bilinear", "us800", (0, 0, 800, 600), "bilinear"),
    ("down_fullframe_bicubic", "us800", (0, 0, 800, 600), "bicubic"),
    # Odd sizes and odd offsets, non-integer factors (377/224 = 1.68, 301/224 = 1.34).
    ("down_odd_bilinear", "us640", (37, 51, 377, 301), "bilinear"),
    ("down_odd_bicubic", "us640", (37, 51, 377, 301), "bicubic"),
    # One axis downscaled (501 -> 224), the other upscaled (150 -> 224).
    ("mixed_wide_bilinear", "us640", (101, 203, 501, 150), "bilinear"),
    ("mixed_wide_bicubic", "us640", (101, 203, 501, 150), "bicubic"),
    # ROI already 224x224: Pillow returns a copy (no resampling at all).
    ("identity_224_bilinear", "us640", (211, 129, 224, 224), "bilinear"),
    ("identity_224_bicubic", "us640", (211, 129, 224, 224), "bicubic"),
    # Upscale the whole 160x120 frame (1.4x, 1.87x).
    ("up_full_bilinear", "us160", (0, 0, 160, 120), "bilinear"),
    ("up_full_bicubic", "us160", (0, 0, 160, 120), "bicubic"),
    # Upscale an odd-sized, odd-offset ROI (97x111 -> 224x224, 2.31x / 2.02x).
    ("up_odd_bilinear", "us160", (13, 7, 97, 111), "bilinear"),
    ("up_odd_bicubic", "us160", (13, 7, 97, 111), "bicubic"),
    # Tiny ROI, strong upscale (31x23 -> 224x224, 7.2x / 9.7x).
    ("up_tiny_bilinear", "us160", (101, 64, 31, 23), "bilinear"),
    ("up_tiny_bicubic", "us160", (101, 64, 31, 23), "bicubic"),
    # Tall ROIs: the height shrinks by more than twice as many pixels as the
    # width, so Pillow >= 13 runs the vertical pass first (Pillow 12 does not;
    # see horizontal_first()). Width upscaled / height downscaled:
    ("tall_vfirst_bilinear", "us800", (301, 21, 181, 447), "bilinear"),
    ("tall_vfirst_bicubic", "us800", (301, 21, 181, 447), "bicubic"),
    # Both axes downscaled (290 -> 224, 561 -> 224):
    ("portrait_vfirst_bilinear", "us800", (60, 30, 290, 561), "bilinear"),
    ("portrait_vfirst_bicubic", "us800", (60, 30, 290, 561), "bicubic"),
]

# Source whose grey conversion is named in the top-level gray_* keys.
PRIMARY_GRAY_SOURCE = "us800"

# 5x7 pseudo-glyph bitmaps for the text-like overlay (rows as bit strings).
GLYPHS = [
    ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],  # 0
    ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],  # 1
    ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],  # 2
    ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],  # 3
    ["10001", "11011", "10101", "10101", "10001", "10001", "10001"],  # M
    ["11111", "00100", "00100", "00100", "00100", "00100", "00100"],  # T
    ["10001", "10001", "10001", "11111", "10001", "10001", "10001"],  # H
    ["00000", "00000", "00000", "11111", "00000", "00000", "00000"],  # -
    ["00000", "00000", "00000", "00000", "00000", "01100", "01100"],  # .
]


def _gaussian_blobs(rng: np.random.Generator, h: int, w: int, n: int) -> np.ndarray:
    """Sum of n random anisotropic Gaussian blobs (positive and negative)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    field = np.zeros((h, w))
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        sy, sx = rng.uniform(0.03, 0.15) * h, rng.uniform(0.03, 0.15) * w
        amp = rng.uniform(-0.35, 0.5)
        field += amp * np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2) / 2)
    return field


def _speckle(rng: np.random.Generator, h: int, w: int, grain: int) -> np.ndarray:
    """Multiplicative Rayleigh speckle with a grain of roughly `grain` pixels.

    Generated at reduced resolution and box-upsampled, so that neighbouring
    pixels are correlated as in real B-mode speckle (and the PNG compresses).
    """
    hs, ws = -(-h // grain), -(-w // grain)
    sp = rng.rayleigh(scale=1.0 / np.sqrt(np.pi / 2), size=(hs, ws))  # mean 1
    sp = np.repeat(np.repeat(sp, grain, axis=0), grain, axis=1)[:h, :w]
    # Add a little full-resolution jitter so the texture is not blocky.
    return sp * rng.uniform(0.85, 1.15, size=(h, w))


def make_source(w: int, h: int, seed: int) -> np.ndarray:
    """Deterministic ultrasound-like RGB frame, uint8 array of shape (h, w, 3).

    Layout: a B-mode fan (grey) on the left ~55 % of the frame, a tinted
    "contrast mode" fan (amber palette, R != G != B) on the right, black
    background, plus overlays: white/yellow text-like glyphs, dashed calipers,
    a rainbow colour bar and a patch of uniformly random RGB colours.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3), dtype=np.float64)

    # Tissue echogenicity in [0, 1]: base level + blobs, times speckle.
    base = 0.45 + _gaussian_blobs(rng, h, w, 10)
    # Hypoechoic lesion with a sharp, bright rim (hard edges for the resamplers).
    cy, cx = 0.55 * h, 0.30 * w
    ry, rx = 0.14 * h, 0.10 * w
    r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    base = np.where(r < 1.0, 0.08, base)
    base = np.where((r >= 1.0) & (r < 1.12), 1.4, base)  # saturates after speckle
    # Bright echogenic band (e.g. a vessel wall) with hard edges.
    band = np.abs(yy - (0.3 * h + 0.05 * h * np.sin(xx / w * 7.0))) < max(1.5, h / 150)
    base = np.where(band, 1.3, base)
    tissue = np.clip(base, 0, None) * _speckle(rng, h, w, grain=max(1, w // 320))
    tissue = np.clip(tissue, 0.0, 1.0) * 255.0

    # Two fan-shaped sectors (apex above the frame).
    def sector(cx_frac: float, half_angle_deg: float) -> np.ndarray:
        ax, ay = cx_frac * w, -0.15 * h
        ang = np.degrees(np.arctan2(xx - ax, yy - ay))
        rad = np.hypot(xx - ax, yy - ay)
        return (np.abs(ang) < half_angle_deg) & (rad > 0.25 * h) & (rad < 1.05 * h)

    left, right = sector(0.28, 28.0), sector(0.76, 24.0)
    left &= xx < 0.53 * w
    right &= xx >= 0.53 * w
    img[left] = tissue[left, None]
    # Contrast mode: amber palette, from the same tissue map mirrored.
    cm = tissue[:, ::-1]
    amber = np.stack([cm, 0.78 * cm, 0.35 * cm + 10.0], axis=-1)
    img[right] = amber[right]

    # Faint noise floor in the background (never exactly black everywhere).
    bg = ~(left | right)
    img[bg] = rng.integers(0, 6, size=(int(bg.sum()), 1)).astype(np.float64)

    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    # Text-like overlay: rows of 5x7 glyphs at 1x or 2x scale, white or yellow.
    scale = 2 if w >= 400 else 1
    for row in range(3):
        y0 = 4 + row * (9 * scale)
        x0 = 4
        colour = (255, 255, 255) if row != 1 else (255, 230, 0)
        for _ in range(int(rng.integers(6, 14))):
            g = GLYPHS[int(rng.integers(len(GLYPHS)))]
            bits = np.array([[c == "1" for c in line] for line in g])
            bits = np.kron(bits, np.ones((scale, scale), dtype=bool))
            gh, gw = bits.shape
            if x0 + gw >= w or y0 + gh >= h:
                break
            img[y0:y0 + gh, x0:x0 + gw][bits] = colour
            x0 += gw + scale
    # Dashed 1-px calipers (horizontal and vertical) in the B-mode half.
    ly, lx = int(0.72 * h), int(0.18 * w)
    for x in range(int(0.12 * w), int(0.45 * w), 6):
        img[ly, x:x + 3] = (255, 255, 255)
    for y in range(int(0.40 * h), int(0.85 * h), 5):
        img[y:y + 2, lx] = (0, 255, 255)
    # Rainbow colour bar on the right edge (HSV hue sweep).
    bar_w = max(4, w // 60)
    hue = np.linspace(0.0, 1.0, h, endpoint=False)[:, None]
    rgb_bar = _hsv_to_rgb(hue, np.ones_like(hue), np.ones_like(hue))
    img[:, w - bar_w - 2:w - 2] = np.repeat(rgb_bar, bar_w, axis=1)
    # Random-colour patch (bottom-left): exercises the luma rounding over the
    # whole RGB range.
    ps = max(8, min(w, h) // 8)
    img[h - ps - 2:h - 2, 2:2 + ps] = rng.integers(0, 256, size=(ps, ps, 3), dtype=np.uint8)
    return img


def _hsv_to_rgb(hh: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB (uint8) for a column of hues; output (n, 1, 3)."""
    i = np.floor(hh * 6).astype(int) % 6
    f = hh * 6 - np.floor(hh * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(hh.shape + (3,))
    for k, (r, g, b) in enumerate(choices):
        m = i == k
        out[m] = np.stack([r[m], g[m], b[m]], axis=-1)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def pillow_pipeline(src: Image.Image, roi: tuple[int, int, int, int], filt: str) -> Image.Image:
    """The reference pipeline: crop -> convert("L") -> resize(224x224, filter)."""
    x, y, w, h = roi
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > src.width or y + h > src.height:
        raise ValueError(f"ROI {roi} outside the {src.width}x{src.height} source")
    cropped = src.convert("RGB").crop((x, y, x + w, y + h))
    gray = cropped.convert("L")
    # reducing_gap=None is Image.resize's default; spelled out for clarity.
    return gray.resize(OUT_SIZE, FILTERS[filt], reducing_gap=None)


# --------------------------------------------------------------------------
# A plain-numpy model of the same pipeline, written from Pillow's C sources
# (libImaging/Convert.c and libImaging/Resample.c). It is checked against
# Pillow on every fixture by --verify, so it doubles as an exact, readable
# specification for the Rust port.
# --------------------------------------------------------------------------

PRECISION_BITS = 32 - 8 - 2  # fixed-point coefficient precision for 8-bit images


def luma_601(rgb: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L: (R*19595 + G*38470 + B*7471 + 0x8000) >> 16."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1,
                    np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * a, 0.0))


FILTER_FUNCS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}


def precompute_coeffs(in_size: int, out_size: int, filt: str):
    """Per output pixel: first input index, tap count and int32 fixed-point
    weights (Resample.c precompute_coeffs + normalize_coeffs_8bpc, box = the
    whole input). All intermediate maths is in float64, as in C."""
    func, support0 = FILTER_FUNCS[filt]
    scale = in_size / out_size                    # (in1 - in0) / outSize
    filterscale = max(scale, 1.0)                 # antialias only when downscaling
    support = support0 * filterscale
    bounds, weights = [], []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)        # C (int) truncates
        xmax = min(int(center + support + 0.5), in_size) - xmin
        w = func((np.arange(xmax) + xmin - center + 0.5) * ss)
        ww = w.sum()
        if ww != 0.0:
            w = w / ww
        scaled = w * (1 << PRECISION_BITS)
        fixed = np.where(w < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled)).astype(np.int64)
        bounds.append((xmin, xmax))
        weights.append(fixed)
    return bounds, weights


def _clip8(acc: np.ndarray) -> np.ndarray:
    """Resample.c clip8: round-half-up was folded into the accumulator start."""
    return np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)


def horizontal_first(in_w: int, in_h: int, out_w: int, out_h: int, pillow_major: int) -> bool:
    """Order of the two passes.

    Pillow 13 runs the vertical pass first when the height shrinks by more
    than twice as many pixels as the width does (Resample.c,
    ImagingResampleInner). Pillow 12.x resamples horizontally first except
    for extreme portrait images (height > 100 x width, height shrinking), for
    which Image.resize does a vertical-only resize and then a horizontal-only
    one. Because each pass rounds to uint8, the order changes results (by 1
    for smooth images, more at saturated edges with bicubic).
    """
    if pillow_major < 13:
        return not (in_h > in_w * 100 and out_h < in_h)
    return not ((in_h - out_h) > 0 and (in_h - out_h) > (in_w - out_w) * 2)


def _pass_h(img: np.ndarray, out_w: int, filt: str) -> np.ndarray:
    """Horizontal pass over every row of img (int64 values 0..255)."""
    hb, hw = precompute_coeffs(img.shape[1], out_w, filt)
    out = np.empty((img.shape[0], out_w), dtype=np.int64)
    for xx, ((xmin, n), k) in enumerate(zip(hb, hw)):
        out[:, xx] = _clip8((1 << (PRECISION_BITS - 1)) + img[:, xmin:xmin + n] @ k)
    return out


def _pass_v(img: np.ndarray, bounds, weights) -> np.ndarray:
    """Vertical pass over every column of img, with precomputed coefficients."""
    out = np.empty((len(bounds), img.shape[1]), dtype=np.int64)
    for yy, ((ymin, n), k) in enumerate(zip(bounds, weights)):
        out[yy] = _clip8((1 << (PRECISION_BITS - 1)) + k @ img[ymin:ymin + n])
    return out


def resample_model(gray: np.ndarray, out_w: int, out_h: int, filt: str,
                   pillow_major: int = 13) -> np.ndarray:
    """Pillow's ImagingResample for a mode-L image (box = whole image).

    Two separable passes, each rounded and clipped to uint8. A pass is skipped
    when its axis keeps its size (and Image.resize copies the image when both
    do). When the horizontal pass runs first it only covers the rows that the
    vertical pass will read (bounds of the first and last output row).
    """
    in_h, in_w = gray.shape
    img = gray.astype(np.int64)
    need_h, need_v = out_w != in_w, out_h != in_h
    vb, vw = precompute_coeffs(in_h, out_h, filt)
    if horizontal_first(in_w, in_h, out_w, out_h, pillow_major):
        if need_h:
            ybox_first, ybox_last = vb[0][0], vb[-1][0] + vb[-1][1]
            img = _pass_h(img[ybox_first:ybox_last], out_w, filt)
            vb = [(ymin - ybox_first, n) for ymin, n in vb]
        if need_v:
            img = _pass_v(img, vb, vw)
    else:
        if need_v:
            img = _pass_v(img, vb, vw)
        if need_h:
            img = _pass_h(img, out_w, filt)
    return img.astype(np.uint8)


def pipeline_model(rgb: np.ndarray, roi: tuple[int, int, int, int], filt: str,
                   pillow_major: int = 13) -> np.ndarray:
    x, y, w, h = roi
    return resample_model(luma_601(rgb[y:y + h, x:x + w]), OUT_SIZE[0], OUT_SIZE[1], filt,
                          pillow_major)


def pillow_major() -> int:
    return int(PIL.__version__.split(".")[0])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(out: Path) -> dict:
    """Write sources, grey conversions, expected outputs and the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    gray_entries = []
    for name, (w, h, seed) in SOURCES.items():
        arr = make_source(w, h, seed)
        src = Image.fromarray(arr, mode="RGB")
        src_file = f"src_{name}.png"
        src.save(out / src_file, optimize=True)
        gray_file = f"src_{name}_gray.png"
        # Use the image as read back from disk, exactly as the Rust test will.
        with Image.open(out / src_file) as reread:
            reread.convert("RGB").convert("L").save(out / gray_file, optimize=True)
        gray_entries.append({"gray_source": src_file, "gray_expected": gray_file})

    major = pillow_major()
    other = 12 if major >= 13 else 13
    cases = []
    for name, source, roi, filt in CASES:
        with Image.open(out / f"src_{source}.png") as src:
            result = pillow_pipeline(src, roi, filt)
            rgb = np.asarray(src.convert("RGB"))
        assert result.mode == "L" and result.size == OUT_SIZE
        # The numpy model must agree with the installed Pillow before we trust
        # it for the other Pillow generation's pass order.
        if not np.array_equal(np.asarray(result), pipeline_model(rgb, roi, filt, major)):
            raise SystemExit(f"{name}: numpy model disagrees with Pillow {PIL.__version__}")
        result.save(out / f"{name}.png", optimize=True)
        w, h = roi[2], roi[3]
        case = {
            "name": name,
            "source": f"src_{source}.png",
            "roi": list(roi),
            "filter": filt,
            "expected": f"{name}.png",
            "pass_order": "horizontal_first"
            if horizontal_first(w, h, *OUT_SIZE, major) else "vertical_first",
        }
        alt = pipeline_model(rgb, roi, filt, other)
        if not np.array_equal(np.asarray(result), alt):
            alt_file = f"{name}.pillow{other}.png"
            Image.fromarray(alt, mode="L").save(out / alt_file, optimize=True)
            case[f"expected_pillow{other}"] = alt_file
        cases.append(case)

    primary = next(g for g in gray_entries if g["gray_source"] == f"src_{PRIMARY_GRAY_SOURCE}.png")
    manifest = {
        "pillow_version": PIL.__version__,
        "numpy_version": np.__version__,
        "generator": "tools/pillow_fixtures.py",
        "output_size": list(OUT_SIZE),
        "pipeline": ('Image.open(source).convert("RGB").crop((x, y, x+w, y+h))'
                     '.convert("L").resize((224, 224), filter, reducing_gap=None)'),
        "pass_order_note": (
            f"'expected' is Pillow {PIL.__version__}. pass_order is the order of the two "
            "separable passes it used (each pass rounds to uint8). Pillow >= 13 runs the "
            "vertical pass first when (h - 224) > 0 and (h - 224) > 2 * (w - 224); Pillow 12 "
            "runs the horizontal pass first (unless h > 100 * w). Where the other generation "
            f"gives a different image, it is in 'expected_pillow{other}' (made with the "
            "numpy model in tools/pillow_fixtures.py, which reproduces both exactly)."),
        "gray_source": primary["gray_source"],
        "gray_expected": primary["gray_expected"],
        "gray": gray_entries,
        "cases": cases,
        "sha256": {p.name: _sha256(p) for p in sorted(out.glob("*.png"))},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verify(out: Path) -> int:
    """Recompute every expected image from the stored sources; count mismatches."""
    manifest = json.loads((out / "manifest.json").read_text())
    if manifest.get("pillow_version") != PIL.__version__:
        print(f"note: fixtures made with Pillow {manifest.get('pillow_version')}, "
              f"verifying with {PIL.__version__}")
    failures = 0

    def compare(label: str, got, expected_file: str) -> None:
        nonlocal failures
        with Image.open(out / expected_file) as exp:
            a = np.asarray(got, dtype=np.int16)
            b = np.asarray(exp, dtype=np.int16)
            mode = exp.mode
        if mode != "L" or a.shape != b.shape or not np.array_equal(a, b):
            diff = np.abs(a - b).max() if a.shape == b.shape else "shape"
            print(f"FAIL {label}: max abs diff {diff}")
            failures += 1
        else:
            print(f"ok   {label}")

    for g in manifest["gray"]:
        with Image.open(out / g["gray_source"]) as src:
            if src.mode != "RGB":
                print(f"FAIL {g['gray_source']}: mode {src.mode}, expected RGB")
                failures += 1
            rgb = np.asarray(src.convert("RGB"))
            compare(f"gray {g['gray_source']} (Pillow)", src.convert("RGB").convert("L"),
                    g["gray_expected"])
        compare(f"gray {g['gray_source']} (numpy model)", luma_601(rgb), g["gray_expected"])
    made_with = int(manifest["pillow_version"].split(".")[0])
    for c in manifest["cases"]:
        roi = tuple(c["roi"])
        with Image.open(out / c["source"]) as src:
            rgb = np.asarray(src.convert("RGB"))
            # Only meaningful with the same Pillow generation as the fixtures.
            if pillow_major() == made_with:
                compare(f"{c['name']} (Pillow)", pillow_pipeline(src, roi, c["filter"]),
                        c["expected"])
        compare(f"{c['name']} (numpy model, Pillow {made_with})",
                pipeline_model(rgb, roi, c["filter"], made_with), c["expected"])
        for key, file in c.items():
            if key.startswith("expected_pillow"):
                major = int(key.removeprefix("expected_pillow"))
                compare(f"{c['name']} (numpy model, Pillow {major})",
                        pipeline_model(rgb, roi, c["filter"], major), file)
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"fixture directory (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    ap.add_argument("--verify", action="store_true",
                    help="do not write anything; recompute the expected images from the "
                         "stored sources and compare them with the stored ones")
    args = ap.parse_args()

    if args.verify:
        failures = verify(args.out)
        print("all fixtures reproduce" if failures == 0 else f"{failures} mismatches")
        return 1 if failures else 0

    manifest = generate(args.out)
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"wrote {len(manifest['cases'])} cases and {len(manifest['gray'])} grey conversions "
          f"to {args.out} ({total / 1e6:.2f} MB, Pillow {PIL.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
