#!/usr/bin/env python3
"""Build the DICOM test corpus in tests/data/dicom/ and its reference values.

What this script does
---------------------
1. Copies a handful of real ultrasound DICOM files, byte for byte, from
   pydicom's test data (``pydicom`` and ``pydicom-data`` packages).
2. Derives a few small files that the samples do not cover (YBR_FULL
   uncompressed, MONOCHROME2 uncompressed, RLE-compressed RGB, an uncompressed
   MONOCHROME2 cine with Frame Time, a 30-frame subset of the 120-frame JPEG
   baseline cine, a truncated file and a non-DICOM file).  The derivation is
   deterministic: integer arithmetic only, UIDs derived from fixed strings.
3. Decodes every valid file with pydicom + numpy, independently of the Rust
   code under test, and writes ``reference.json`` with, per file, the header
   facts (transfer syntax, photometric interpretation, geometry, frames, frame
   time) and, for frame 0 and (multi-frame files) the middle and last frame,
   a summary of the 8-bit gray image:

   * gray rule (Pillow ``Image.convert("L")`` on the RGB image)::

         L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16

     cross-checked here against Pillow itself when Pillow is installed;
   * RGB source: pydicom's decoded RGB.  YBR_FULL / YBR_FULL_422 data is
     converted with ``pydicom.pixels.convert_color_space`` unless the decoder
     plugin already returned RGB (JPEG decoders do the YCbCr->RGB transform
     themselves); PALETTE COLOR goes through ``pydicom.pixels.apply_color_lut``
     and 16-bit LUT entries are reduced to 8 bits with ``v >> 8`` (the high
     byte); MONOCHROME2 8-bit uses the stored value unchanged;
   * summary: mean gray, min/max, SHA-256 of the row-major gray bytes
     (rows*columns bytes) and 20 sample pixels ``[x, y, gray]`` at positions
     drawn from SHA-256 of ``"<file>:<frame>:<k>"`` (so the positions do not
     depend on any RNG implementation).

   For lossy JPEG, decoders legitimately differ by a few gray levels, so the
   file entry records which pydicom plugin produced the primary values and the
   same summary for every other available plugin, with the maximum and mean
   absolute gray difference against the primary decode.

Usage
-----
    pip install "pydicom>=3" pydicom-data pylibjpeg pylibjpeg-libjpeg pillow numpy
    python tools/dicom_reference.py              # (re)write files + reference.json
    python tools/dicom_reference.py --check      # regenerate in a temp dir, compare

``--check`` exits non-zero if any stored file or reference.json differs from a
fresh regeneration (the derived files embed pydicom's implementation UID and
version name, so they are byte-stable for a given pydicom version).
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import importlib.metadata
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import apply_color_lut, convert_color_space, get_decoder
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    RLELossless,
    UID,
    generate_uid,
)

try:  # only used to cross-check the gray rule
    from PIL import Image
except ImportError:  # pragma: no cover
    Image = None

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "dicom"

UID_ENTROPY = "ceusd tests/data/dicom"
US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"
N_SAMPLES = 20
COLOR3D_SUBSET_FRAMES = 30

# Real files copied unchanged: (name in pydicom test data, note)
COPIED = [
    ("US1_UNCR.dcm", "RGB, uncompressed, single frame"),
    ("OBXXXX1A.dcm", "PALETTE COLOR (16-bit LUT entries), uncompressed"),
    ("OBXXXX1A_rle.dcm", "PALETTE COLOR, RLE Lossless"),
    ("OBXXXX1A_rle_2frame.dcm", "PALETTE COLOR, RLE Lossless, 2 frames"),
    ("examples_ybr_color.dcm", "YBR_FULL_422 JPEG baseline cine, 30 frames"),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "MONOCHROME2 ultrasound, JPEG Lossless SV1, has Window Center/Width"),
    ("SC_ybr_full_422_uncompressed.dcm",
     "not ultrasound (secondary capture test pattern); uncompressed YBR_FULL_422, "
     "i.e. chroma subsampled in the stored bytes (Y1 Y2 Cb Cr per pixel pair)"),
]

# Referenced but not stored (too large): reference values are written under
# "external_files" so a test can use the file when it is provided.
EXTERNAL = [("color3d_jpeg_baseline.dcm", "YBR_FULL_422 JPEG baseline cine, 120 frames")]


# --------------------------------------------------------------------------
# pixel helpers
# --------------------------------------------------------------------------

def gray_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L conversion, bit exact."""
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    c = rgb.astype(np.uint32)
    g = (c[..., 0] * 19595 + c[..., 1] * 38470 + c[..., 2] * 7471 + 0x8000) >> 16
    gray = g.astype(np.uint8)
    if Image is not None:
        pil = np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
        if not np.array_equal(pil, gray):
            raise AssertionError("gray rule disagrees with Pillow convert('L')")
    return gray


def downscale_mean(arr: np.ndarray, f: int) -> np.ndarray:
    """Block-mean downscale by integer factor f, rounding half up (uint8)."""
    h, w = arr.shape[:2]
    h2, w2 = h // f, w // f
    a = arr[: h2 * f, : w2 * f].astype(np.uint32)
    if a.ndim == 2:
        s = a.reshape(h2, f, w2, f).sum(axis=(1, 3))
    else:
        s = a.reshape(h2, f, w2, f, a.shape[2]).sum(axis=(1, 3))
    n = f * f
    return ((s + n // 2) // n).astype(np.uint8)


def dicom_rs_ybr_to_rgb(ybr: np.ndarray) -> np.ndarray:
    """The YBR_FULL -> RGB formula of dicom-pixeldata 0.10 (convert_colorspace_u8),
    evaluated in f32 term by term.  Only used as a cross-check."""
    f = np.float32
    y = ybr[..., 0].astype(f)
    b = ybr[..., 1].astype(f) - f(128)
    r = ybr[..., 2].astype(f) - f(128)
    kg_b = f(f(f(0.114) * f(1.772)) / f(0.587))
    kg_r = f(f(f(-0.299) * f(1.402)) / f(0.587))
    cr = (y + f(1.402) * r) + f(0.5)
    cg = (y + kg_b * b + kg_r * r) + f(0.5)
    cb = (y + f(1.772) * b) + f(0.5)
    out = np.stack([cr, cg, cb], axis=-1)
    return np.clip(np.floor(out), 0, 255).astype(np.uint8)


def sample_positions(name: str, frame: int, gray: np.ndarray) -> list[list[int]]:
    """20 positions: 4 corners, centre, 10 anywhere, 5 among non-zero pixels."""
    h, w = gray.shape

    def h64(k: int) -> int:
        d = hashlib.sha256(f"{name}:{frame}:{k}".encode()).digest()
        return int.from_bytes(d[:8], "little")

    pts = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w // 2, h // 2)]
    for k in range(10):
        v = h64(k)
        pts.append((v % w, (v >> 32) % h))
    nz = np.flatnonzero(gray.ravel())
    for k in range(10, 10 + (N_SAMPLES - len(pts))):
        if nz.size:
            i = int(nz[h64(k) % nz.size])
            pts.append((i % w, i // w))
        else:
            v = h64(k)
            pts.append((v % w, (v >> 32) % h))
    return [[int(x), int(y), int(gray[y, x])] for x, y in pts]


def summarize(name: str, frame: int, gray: np.ndarray, rgb: np.ndarray | None) -> dict:
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    out = {
        "index": frame,
        "mean_gray": round(float(gray.astype(np.float64).mean()), 6),
        "min_gray": int(gray.min()),
        "max_gray": int(gray.max()),
        "sha256_gray": hashlib.sha256(gray.tobytes()).hexdigest(),
        "samples": sample_positions(name, frame, gray),
    }
    if rgb is not None:
        out["mean_rgb"] = [round(float(rgb[..., c].astype(np.float64).mean()), 6) for c in range(3)]
    return out


# --------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------

def plugin_order(ts: UID) -> list[str]:
    """Available decoding plugins for `ts`, in the order pydicom tries them."""
    dec = get_decoder(ts)
    if not dec.is_encapsulated:
        return [""]
    avail = getattr(dec, "_available", None)
    if isinstance(avail, dict) and avail:
        return list(avail)
    return sorted(dec.available_plugins)


def decode_gray(path: Path, ds, index: int, plugin: str) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Return (gray, rgb or None, notes) for one frame."""
    ts = ds.file_meta.TransferSyntaxUID
    dec = get_decoder(ts)
    pi_in = str(ds.PhotometricInterpretation)
    # Encapsulated YBR: the JPEG decoder does the YCbCr->RGB transform itself
    # (as dicom-rs's does).  Native YBR: take the stored YBR values and convert
    # them here with pydicom's convert_color_space.
    as_rgb = dec.is_encapsulated or not pi_in.startswith("YBR")
    kwargs = {"index": index, "as_rgb": as_rgb}
    if plugin:
        kwargs["decoding_plugin"] = plugin
    arr, meta = dec.as_array(ds, **kwargs)
    pi_out = str(meta.get("photometric_interpretation", pi_in))
    notes: dict = {}
    if pi_in == "MONOCHROME2":
        if arr.dtype != np.uint8:
            raise ValueError(f"{path.name}: expected 8-bit MONOCHROME2, got {arr.dtype}")
        return arr, None, {"rgb_source": "stored value (MONOCHROME2)"}
    if pi_in == "PALETTE COLOR":
        rgb16 = apply_color_lut(arr, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        if bits == 16:
            rgb = (rgb16 >> 8).astype(np.uint8)
            notes["rgb_source"] = "pydicom.pixels.apply_color_lut, 16-bit entries >> 8"
            alt = np.clip(np.floor(rgb16.astype(np.float64) * 255.0 / 65535.0 + 0.5), 0, 255).astype(np.uint8)
            notes["alt_scaling_round_v_255_65535"] = alt
        else:
            rgb = rgb16.astype(np.uint8)
            notes["rgb_source"] = "pydicom.pixels.apply_color_lut, 8-bit entries"
        return gray_from_rgb(rgb), rgb, notes
    if pi_out in ("YBR_FULL", "YBR_FULL_422"):
        notes["ybr"] = arr
        rgb = convert_color_space(arr, pi_out, "RGB")
        if pi_in == "YBR_FULL_422":
            notes["rgb_source"] = (
                "stored YBR_FULL_422 (Y1 Y2 Cb Cr per horizontal pixel pair) expanded by "
                "pydicom with Cb/Cr repeated for both pixels, then "
                "pydicom.pixels.convert_color_space(YBR_FULL -> RGB)")
        else:
            notes["rgb_source"] = f"stored {pi_out}, pydicom.pixels.convert_color_space({pi_out} -> RGB)"
        check, _ = dec.as_array(ds, index=index, as_rgb=True)
        if not np.array_equal(check, rgb):
            raise AssertionError(f"{path.name}: convert_color_space differs from as_rgb=True")
    elif pi_out == "RGB":
        rgb = arr
        if pi_in != "RGB":
            notes["rgb_source"] = f"decoder plugin output ({pi_in} -> RGB done by the decoder)"
        else:
            notes["rgb_source"] = "stored RGB"
    else:
        raise ValueError(f"{path.name}: unsupported photometric interpretation {pi_out}")
    return gray_from_rgb(np.ascontiguousarray(rgb, dtype=np.uint8)), rgb, notes


def jpeg_frame_info(bs: bytes) -> dict:
    """Markers of one JPEG bitstream: SOF type, components and sampling, APPn."""
    info: dict = {"app_markers": []}
    i = 2
    while i + 4 <= len(bs):
        if bs[i] != 0xFF:
            break
        m = bs[i + 1]
        seg_len = int.from_bytes(bs[i + 2: i + 4], "big")
        seg = bs[i + 4: i + 2 + seg_len]
        if 0xE0 <= m <= 0xEF:
            ident = seg[:5].split(b"\0")[0].decode("latin-1")
            info["app_markers"].append(f"APP{m - 0xE0}:{ident}")
            if ident == "Adobe" and len(seg) >= 12:
                info["adobe_transform"] = seg[11]
        elif m in (0xC0, 0xC1, 0xC2, 0xC3):
            info["sof"] = f"SOF{m - 0xC0}"
            info["precision"] = seg[0]
            n = seg[5]
            info["components"] = [
                {"id": seg[6 + 3 * k], "h": seg[7 + 3 * k] >> 4, "v": seg[7 + 3 * k] & 15}
                for k in range(n)
            ]
        elif m == 0xDA:
            break
        i += 2 + seg_len
    comps = info.get("components", [])
    if len(comps) == 3:
        h, v = comps[0]["h"], comps[0]["v"]
        info["chroma_subsampling"] = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0"}.get(
            (h, v), f"h{h}v{v}")
    return info


def encapsulation_info(ds, nframes: int) -> dict:
    """Fragment / offset-table layout of encapsulated Pixel Data."""
    from pydicom.encaps import generate_fragments, parse_basic_offsets

    pd = ds.PixelData
    import io

    fp = io.BytesIO(pd)
    bot = parse_basic_offsets(fp)
    n_frag = sum(1 for _ in generate_fragments(fp))
    out = {
        "basic_offset_table_entries": len(bot),
        "fragments": n_frag,
        "extended_offset_table": "ExtendedOffsetTable" in ds,
    }
    ts = ds.file_meta.TransferSyntaxUID
    if ts.is_encapsulated and str(ts).startswith("1.2.840.10008.1.2.4."):
        first = next(generate_frames(pd, number_of_frames=nframes))
        out["first_frame_jpeg"] = jpeg_frame_info(first)
    return out


def frame_indices(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1})


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def describe(path: Path, origin: str) -> dict:
    ds = dcmread(path)
    ts = ds.file_meta.TransferSyntaxUID
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    ft = ds.get("FrameTime")
    entry = {
        "file": path.name,
        "origin": origin,
        "file_size": path.stat().st_size,
        "sha256_file": sha256_file(path),
        "transfer_syntax_uid": str(ts),
        "transfer_syntax_name": ts.name,
        "sop_class_uid": str(ds.SOPClassUID),
        "photometric_interpretation": str(ds.PhotometricInterpretation),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "number_of_frames": nframes,
        "samples_per_pixel": int(ds.SamplesPerPixel),
        "bits_allocated": int(ds.BitsAllocated),
        "bits_stored": int(ds.BitsStored),
        "planar_configuration": int(ds.PlanarConfiguration) if "PlanarConfiguration" in ds else None,
        "frame_time_ms": float(ft) if ft is not None else None,
        "window_center": float(ds.WindowCenter) if "WindowCenter" in ds else None,
        "window_width": float(ds.WindowWidth) if "WindowWidth" in ds else None,
        "pixel_data_length": len(ds.PixelData) if not ts.is_encapsulated else None,
    }
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        lut = {}
        for c in ("Red", "Green", "Blue"):
            desc = [int(v) for v in ds[f"{c}PaletteColorLookupTableDescriptor"].value]
            data = np.frombuffer(ds[f"{c}PaletteColorLookupTableData"].value, dtype="<u2")
            lut[c.lower()] = {
                "descriptor": desc,
                "entries": int(data.size),
                "max_entry": int(data.max()),
                "all_entries_multiple_of_256": bool((data % 256 == 0).all()),
            }
        entry["palette"] = {
            **lut,
            "bits_per_entry": lut["red"]["descriptor"][2],
            "to_8bit_rule": "v >> 8" if lut["red"]["descriptor"][2] == 16 else "identity",
        }

    plugins = plugin_order(ts)
    primary = plugins[0]
    entry["decoder"] = {
        "plugin": primary or "native (uncompressed)",
        "available_plugins": [p for p in plugins if p],
    }
    if get_decoder(ts).is_encapsulated:
        entry["encapsulation"] = encapsulation_info(ds, nframes)
    frames = []
    alt = {p: [] for p in plugins[1:]}
    for i in frame_indices(nframes):
        gray, rgb, notes = decode_gray(path, ds, i, primary)
        # the default decode (no plugin named) must be what we call primary
        if primary:
            gdef, _, _ = decode_gray(path, ds, i, "")
            if not np.array_equal(gdef, gray):
                raise AssertionError(f"{path.name}: default plugin is not {primary}")
        fr = summarize(path.name, i, gray, rgb)
        entry["decoder"]["rgb_source"] = notes["rgb_source"]
        if "alt_scaling_round_v_255_65535" in notes:
            g2 = gray_from_rgb(notes["alt_scaling_round_v_255_65535"])
            d = np.abs(g2.astype(int) - gray.astype(int))
            fr["if_lut_scaled_by_round_v_times_255_over_65535"] = {
                "mean_gray": round(float(g2.mean()), 6),
                "max_abs_diff": int(d.max()),
                "pixels_differing": int((d > 0).sum()),
            }
        if ds.PhotometricInterpretation == "MONOCHROME2" and "WindowCenter" in ds:
            from pydicom.pixels import apply_voi_lut

            w = np.clip(np.floor(apply_voi_lut(gray, ds).astype(np.float64) + 0.5), 0, 255)
            d = np.abs(w.astype(int) - gray.astype(int))
            fr["if_voi_window_applied"] = {
                "rule": "pydicom.pixels.apply_voi_lut (linear window), floor(x+0.5)",
                "mean_gray": round(float(w.mean()), 6),
                "max_abs_diff": int(d.max()),
                "pixels_differing": int((d > 0).sum()),
            }
        if "ybr" in notes:
            g3 = gray_from_rgb(dicom_rs_ybr_to_rgb(notes["ybr"]))
            d = np.abs(g3.astype(int) - gray.astype(int))
            fr["cross_check_dicom_rs_ybr_formula"] = {
                "max_abs_diff": int(d.max()),
                "pixels_differing": int((d > 0).sum()),
            }
        frames.append(fr)
        for p in plugins[1:]:
            g_alt, rgb_alt, _ = decode_gray(path, ds, i, p)
            d = np.abs(g_alt.astype(int) - gray.astype(int))
            s = summarize(path.name, i, g_alt, rgb_alt)
            s["max_abs_diff_vs_primary"] = int(d.max())
            s["mean_abs_diff_vs_primary"] = round(float(d.mean()), 6)
            s["pixels_differing_vs_primary"] = int((d > 0).sum())
            alt[p].append(s)
    entry["frames"] = frames
    if alt:
        entry["alt_decoders"] = alt
    return entry


# --------------------------------------------------------------------------
# derived files
# --------------------------------------------------------------------------

def derived_uid(name: str) -> UID:
    return generate_uid(entropy_srcs=[UID_ENTROPY, name])


def finish_and_save(ds, out: Path, description: str) -> None:
    uid = derived_uid(out.name)
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
    if "SourceApplicationEntityTitle" in ds.file_meta:
        del ds.file_meta.SourceApplicationEntityTitle
    prev = str(ds.get("DerivationDescription", "") or "")
    ds.DerivationDescription = (f"{prev}; {description}" if prev else description)[:1024]
    ds.ImageComments = f"Test file for ceusd: {description}"[:10240]
    ds.save_as(out, enforce_file_format=True)


def from_us1(pixels: np.ndarray, pi: str, out: Path, description: str, *,
             rle: bool = False, frames: int | None = None, frame_time_ms: str | None = None) -> None:
    ds = dcmread(get_testdata_file("US1_UNCR.dcm"))
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.ImageType = ["DERIVED", "SECONDARY", "SMALL PARTS"]
    if frames is None:
        rows, cols = pixels.shape[0], pixels.shape[1]
    else:
        rows, cols = pixels.shape[1], pixels.shape[2]
        ds.SOPClassUID = US_MULTIFRAME_STORAGE
        ds.NumberOfFrames = frames
        ds.FrameTime = frame_time_ms
        ds.FrameIncrementPointer = 0x00181063
    spp = 1 if pi == "MONOCHROME2" else 3
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = pi
    if spp == 1 and "PlanarConfiguration" in ds:
        del ds.PlanarConfiguration
    elif spp == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds["PixelData"].VR = "OB"
    if rle:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    finish_and_save(ds, out, description)


def make_color3d_subset(out: Path, n: int) -> None:
    ds = dcmread(get_testdata_file("color3d_jpeg_baseline.dcm"))
    total = int(ds.NumberOfFrames)
    frames = list(generate_frames(ds.PixelData, number_of_frames=total))[:n]
    ds.PixelData = encapsulate(frames, has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.NumberOfFrames = n
    finish_and_save(
        ds, out,
        f"first {n} of {total} frames of color3d_jpeg_baseline.dcm; "
        "JPEG baseline frame bitstreams copied unchanged",
    )


def build(out_dir: Path, with_external: bool) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []

    for name, note in COPIED:
        src = Path(get_testdata_file(name))
        dst = out_dir / name
        shutil.copyfile(src, dst)
        pkg = "pydicom-data" if "data_store" in src.parts else "pydicom"
        entries.append((dst, f"pydicom test file {name} from the {pkg} package (unchanged copy)", note))

    # Base image for the derived files: US1_UNCR.dcm RGB, 640x480.
    us1 = dcmread(get_testdata_file("US1_UNCR.dcm")).pixel_array  # (480, 640, 3) uint8
    half = downscale_mean(us1, 2)  # (240, 320, 3)
    origin = "derived from US1_UNCR.dcm by tools/dicom_reference.py"

    ybr = convert_color_space(half, "RGB", "YBR_FULL")
    p = out_dir / "US1_ybr_full.dcm"
    from_us1(ybr, "YBR_FULL", p, "US1_UNCR 2x2 block-mean to 320x240, RGB -> YBR_FULL "
             "(pydicom convert_color_space), uncompressed")
    entries.append((p, origin, "YBR_FULL, uncompressed"))

    gray_half = gray_from_rgb(half)
    p = out_dir / "US1_mono2.dcm"
    from_us1(gray_half, "MONOCHROME2", p, "US1_UNCR 2x2 block-mean to 320x240, "
             "gray by (R*19595+G*38470+B*7471+0x8000)>>16, uncompressed")
    entries.append((p, origin, "MONOCHROME2 8-bit, uncompressed"))

    p = out_dir / "US1_rgb_rle.dcm"
    from_us1(half, "RGB", p, "US1_UNCR 2x2 block-mean to 320x240, RLE Lossless (pydicom encoder)",
             rle=True)
    entries.append((p, origin, "RGB, RLE Lossless"))

    base = gray_from_rgb(downscale_mean(us1, 10))  # (48, 64)
    # frame k = base * (4 + k) / 4, rounded, clipped: a brightening "wash-in"
    stack = np.stack([
        np.minimum(255, (base.astype(np.uint32) * (4 + k) + 2) // 4).astype(np.uint8)
        for k in range(5)
    ])
    p = out_dir / "mono2_multiframe.dcm"
    from_us1(stack, "MONOCHROME2", p, "US1_UNCR 10x10 block-mean to 64x48 gray, 5 frames, "
             "frame k = min(255, (g*(4+k)+2) div 4), Frame Time 40 ms",
             frames=5, frame_time_ms="40")
    entries.append((p, origin, "MONOCHROME2 8-bit, uncompressed, 5 frames"))

    p = out_dir / f"color3d_jpeg_baseline_{COLOR3D_SUBSET_FRAMES}f.dcm"
    make_color3d_subset(p, COLOR3D_SUBSET_FRAMES)
    entries.append((p, "derived from color3d_jpeg_baseline.dcm (pydicom-data) by "
                    "tools/dicom_reference.py: first 30 frames, compressed frames unchanged",
                    "YBR_FULL_422 JPEG baseline cine, 640x480"))

    # Invalid files.
    src = out_dir / "US1_mono2.dcm"
    raw = src.read_bytes()
    tag = b"\xe0\x7f\x10\x00OB\x00\x00"
    pos = raw.rfind(tag)
    assert pos > 0
    vlen = int.from_bytes(raw[pos + 8: pos + 12], "little")
    value_start = pos + 12
    cut = value_start + vlen // 2
    trunc = out_dir / "truncated_pixel_data.dcm"
    trunc.write_bytes(raw[:cut])
    not_dicom = out_dir / "not_dicom.dcm"
    not_dicom.write_text(
        "This is not a DICOM file. It is a plain text file with a .dcm extension,\n"
        "used to check that `ceusd analyze` reports a clean error for input that\n"
        "has no 128-byte preamble and no 'DICM' magic.\n" * 2,
        encoding="ascii",
    )
    invalid = [
        {
            "file": trunc.name,
            "origin": "US1_mono2.dcm cut in the middle of the Pixel Data value by tools/dicom_reference.py",
            "file_size": trunc.stat().st_size,
            "sha256_file": sha256_file(trunc),
            "truncated_at_byte": cut,
            "pixel_data_value_offset": value_start,
            "pixel_data_declared_length": vlen,
            "pixel_data_bytes_present": cut - value_start,
            "expect": "error",
            "pydicom_behaviour": probe_pydicom(trunc),
        },
        {
            "file": not_dicom.name,
            "origin": "plain text written by tools/dicom_reference.py",
            "file_size": not_dicom.stat().st_size,
            "sha256_file": sha256_file(not_dicom),
            "expect": "error",
            "pydicom_behaviour": probe_pydicom(not_dicom),
        },
    ]

    files = []
    for path, origin, note in entries:
        e = describe(path, origin)
        e["note"] = note
        files.append(e)

    external = []
    if with_external:
        for name, note in EXTERNAL:
            src = Path(get_testdata_file(name))
            e = describe(src, f"pydicom-data test file {name} (not stored here: {src.stat().st_size} bytes)")
            e["note"] = note
            e["stored"] = False
            external.append(e)

    return {
        "schema_version": 1,
        "generator": "tools/dicom_reference.py",
        "gray_rule": "L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 (Pillow convert('L'))",
        "palette_rule": "pydicom.pixels.apply_color_lut, then 16-bit entries >> 8 (high byte)",
        "ybr_rule": "pydicom.pixels.convert_color_space(YBR_FULL[_422] -> RGB): float32 "
                    "R=Y+1.402(Cr-128), G=Y-0.114*1.772/0.587(Cb-128)-0.299*1.402/0.587(Cr-128), "
                    "B=Y+1.772(Cb-128), floor(x+0.5), clip 0..255; JPEG plugins convert "
                    "YCbCr->RGB themselves",
        "sample_rule": "[x, y, gray]: 4 corners, centre, 10 positions from "
                       "sha256('<file>:<frame>:<k>') k=0..9 (x = v mod cols, y = (v>>32) mod rows, "
                       "v = first 8 digest bytes little-endian), 5 among non-zero pixels (k=10..14)",
        "sha256_gray_rule": "SHA-256 of the gray frame, row-major, 1 byte per pixel",
        "frames_rule": "frame indices sorted({0, n // 2, n - 1}), 0-based",
        "cross_check_rules": {
            "cross_check_dicom_rs_ybr_formula":
                "gray from the YBR->RGB formula of dicom-pixeldata 0.10.1 (convert_colorspace_u8), "
                "which adds +0.114*1.772/0.587*(Cb-128) to G where pydicom and the DICOM "
                "standard subtract it; non-zero differences mean that path gives wrong colours",
            "if_lut_scaled_by_round_v_times_255_over_65535":
                "gray if 16-bit palette entries were scaled by round(v*255/65535) instead of v>>8",
            "if_voi_window_applied":
                "gray if the file's Window Center/Width were applied (pydicom apply_voi_lut); "
                "the reference itself uses the stored value",
            "alt_decoders":
                "same frames decoded by the other available pydicom plugins; "
                "*_vs_primary compare their gray with the primary decode",
        },
        "versions": versions(),
        "files": files,
        "invalid_files": invalid,
        "external_files": external,
    }


def probe_pydicom(path: Path) -> str:
    try:
        ds = dcmread(path)
    except Exception as exc:  # noqa: BLE001
        return f"dcmread raises {type(exc).__name__}: {exc}"[:300]
    try:
        ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        return f"dcmread succeeds; pixel_array raises {type(exc).__name__}: {exc}"[:300]
    return "dcmread and pixel_array succeed"


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in ("pydicom", "pydicom-data", "numpy", "pillow", "pylibjpeg", "pylibjpeg-libjpeg"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    if Image is not None:
        from PIL import features
        out["pillow_libjpeg"] = features.version("jpg")
        out["pillow_libjpeg_turbo"] = bool(features.check_feature("libjpeg_turbo"))
    return out


def write_json(ref: dict, path: Path) -> None:
    path.write_text(json.dumps(ref, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT,
                    help=f"output directory (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    ap.add_argument("--no-external", action="store_true",
                    help="skip reference values for files that are not stored "
                         "(color3d_jpeg_baseline.dcm, 120 frames)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary directory and compare with --out-dir")
    args = ap.parse_args(argv)

    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            ref = build(tmp, not args.no_external)
            write_json(ref, tmp / "reference.json")
            bad = []
            for p in sorted(tmp.iterdir()):
                q = args.out_dir / p.name
                if not q.exists() or not filecmp.cmp(p, q, shallow=False):
                    bad.append(p.name)
            if bad:
                print("differs from a fresh regeneration:", ", ".join(bad))
                return 1
            print(f"OK: {len(list(tmp.iterdir()))} files match a fresh regeneration")
            return 0

    ref = build(args.out_dir, not args.no_external)
    write_json(ref, args.out_dir / "reference.json")
    total = sum(p.stat().st_size for p in args.out_dir.iterdir() if p.is_file())
    for e in ref["files"]:
        print(f"{e['file']:36s} {e['file_size']:>9d}  {e['photometric_interpretation']:13s} "
              f"{e['transfer_syntax_name']:45s} frames={e['number_of_frames']}")
    print(f"total in {args.out_dir}: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
