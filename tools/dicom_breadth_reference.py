#!/usr/bin/env python3
"""JPEG 2000 and segmented-palette DICOM test files, and pydicom's gray of their frames.

What this script does
---------------------
1. Writes small DICOM files into tests/data/dicom/breadth/, made by real encoders from the
   committed ``US1_UNCR.dcm`` and ``mono2_multiframe.dcm`` (so it needs no downloaded data):

   * JPEG 2000 lossless (1.2.840.10008.1.2.4.90) and lossy (.91) by GDCM's ``gdcmconv``;
   * JPEG 2000 lossless and lossy by pydicom with pylibjpeg-openjpeg (OpenJPEG);
   * PALETTE COLOR with *segmented* lookup tables (PS3.3 C.7.9.2: discrete, linear and
     indirect segments), 16-bit entries and 8-bit entries, written here (no tool encodes
     segmented palettes; pydicom decodes them);
   * the uncompressed cine in implicit VR, big endian and deflated syntaxes (dcmtk's
     ``dcmconv``);
   * a JPEG-LS file (``gdcmconv --jpegls``), a transfer syntax ceusd does not decode.

   It copies, unchanged, the JPEG 2000 samples that pydicom installs with itself:
   ``examples_jpeg2k.dcm`` (ultrasound, YBR_RCT, lossless) and ``SC_rgb_gdcm_KY.dcm`` (lossy).

2. Decodes every frame with pydicom (pylibjpeg-openjpeg for JPEG 2000) and writes
   ``reference.json`` beside them, with the same rules as ``tools/dicom_reference.py``
   (gray = Pillow's ``convert("L")`` of the RGB; 16-bit palette entries ``>> 8``): per
   frame the mean, SHA-256 and 20 sample pixels of the gray, and for lossy files the whole
   gray frame as ``<file>.<frame>.png``, so that a test can bound every pixel's difference.

Usage
-----
    apt-get install libgdcm-tools dcmtk  # gdcmconv, dcmconv
    pip install pydicom pylibjpeg pylibjpeg-openjpeg pillow numpy
    python3 tools/dicom_breadth_reference.py            # (re)write the files
    python3 tools/dicom_breadth_reference.py --check    # regenerate elsewhere, compare
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import apply_color_lut, get_decoder
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dicom_reference as base  # noqa: E402  (same directory)

REPO_ROOT = Path(__file__).resolve().parent.parent
DICOM_DIR = REPO_ROOT / "tests" / "data" / "dicom"
DEFAULT_OUT = DICOM_DIR / "breadth"
COPIED = [
    ("examples_jpeg2k.dcm", "ultrasound, YBR_RCT, JPEG 2000 lossless, 640x480 (pydicom sample)"),
    ("SC_rgb_gdcm_KY.dcm", "RGB test pattern, JPEG 2000 lossy by GDCM, 100x100 (pydicom sample)"),
]
UNSUPPORTED_NAME = "mono2_jpegls_gdcm.dcm"


# ----------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------

def us1_rgb_quarter() -> np.ndarray:
    """US1_UNCR.dcm (640x480 RGB) block-mean downscaled 4x: 160x120."""
    return base.downscale_mean(dcmread(DICOM_DIR / "US1_UNCR.dcm").pixel_array, 4)


def native_us1(pixels: np.ndarray, pi: str, out: Path, description: str) -> None:
    """An uncompressed file with US1_UNCR's header and these pixels (one frame)."""
    ds = dcmread(DICOM_DIR / "US1_UNCR.dcm")
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.ImageType = ["DERIVED", "SECONDARY", "SMALL PARTS"]
    ds.Rows, ds.Columns = pixels.shape[0], pixels.shape[1]
    spp = 1 if pixels.ndim == 2 else 3
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = pi
    if spp == 1:
        ds.pop("PlanarConfiguration", None)
    else:
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    base.finish_and_save(ds, out, description)


def gdcmconv(args: list[str], src: Path, out: Path) -> None:
    subprocess.run(["gdcmconv", *args, str(src), str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # gdcmconv gives a lossy file new UIDs: fixed ones keep the files byte-stable.
    base.finish_and_save(dcmread(out), out, f"gdcmconv {' '.join(args)}")


def pydicom_j2k(src: Path, out: Path, lossy: bool, description: str) -> None:
    ds = dcmread(src)
    if lossy:
        ds.compress(JPEG2000, encoding_plugin="pylibjpeg", j2k_psnr=[38.0])
    else:
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    base.finish_and_save(ds, out, description)


def split_fragments(src: Path, out: Path, per_frame: int) -> None:
    """The same JPEG 2000 frames, each split into `per_frame` fragments, with a basic offset
    table (the only way to tell such frames apart)."""
    ds = dcmread(src)
    frames = int(ds.NumberOfFrames)
    bitstreams = list(generate_frames(ds.PixelData, number_of_frames=frames))
    ds.PixelData = encapsulate(bitstreams, fragments_per_frame=per_frame, has_bot=True)
    base.finish_and_save(ds, out, f"frames split into {per_frame} fragments each")


# ----------------------------------------------------------------------------------------
# segmented palettes (PS3.3 C.7.9.2)
# ----------------------------------------------------------------------------------------

def segmented_ramp(peak: int, knee: int, entries: int, bytewise: bool) -> list[int]:
    """One channel's segments: a discrete start, a linear rise to `peak` at `knee`, a
    discrete bump and a linear step copied later by an indirect segment, and a linear run
    to the last entry. `bytewise`: 8-bit entries, which pydicom reads a byte at a time (an
    indirect segment's offset then takes 4 of them, least significant first)."""
    words = [0, 4, 0, peak // 16, peak // 8, peak // 4]  # discrete: entries 0-3
    words += [1, knee - 4, peak]  # linear: to entry knee-1
    copied_at = len(words)
    words += [0, 3, peak // 2, peak // 3, peak // 2]  # discrete: 3 entries
    words += [1, 5, peak // 5]  # linear: 5 entries
    offset = [copied_at & 0xFF, copied_at >> 8 & 0xFF, 0, 0] if bytewise else [copied_at, 0]
    words += [2, 2, *offset]  # indirect: the 2 segments at `copied_at` again, 8 entries
    words += [1, entries - (knee + 16), peak]  # linear: to the last entry
    return words


def segmented_palette(out: Path, indices: np.ndarray, bits: int, description: str) -> None:
    """A PALETTE COLOR file whose lookup tables are segmented, `bits` per entry, one entry
    per value of the indices' type up to 4096."""
    entries = 256 if indices.dtype == np.uint8 else 4096
    peak = (1 << bits) - 1
    native_us1(indices, "PALETTE COLOR", out, description)
    ds = dcmread(out)
    channels = (("Red", entries // 2, 0x1101, 0x1221), ("Green", entries // 3, 0x1102, 0x1222),
                ("Blue", entries // 5, 0x1103, 0x1223))
    for colour, knee, descriptor, segmented in channels:
        words = segmented_ramp(peak, knee, entries, bits == 8)
        if bits == 8:
            data = bytes(words)
            data += b"\0" * (len(data) % 2)
        else:
            data = np.asarray(words, dtype="<u2").tobytes()
        ds.add_new(0x00280000 | descriptor, "US", [entries, 0, bits])
        ds.add_new(0x00280000 | segmented, "OW", data)
    base.finish_and_save(ds, out, description)


# ----------------------------------------------------------------------------------------
# reference values
# ----------------------------------------------------------------------------------------

def frame_gray(ds, index: int) -> np.ndarray:
    """pydicom's gray of one frame, by the rules of tools/dicom_reference.py."""
    ts = ds.file_meta.TransferSyntaxUID
    arr, meta = get_decoder(ts).as_array(ds, index=index, as_rgb=True)
    pi = str(ds.PhotometricInterpretation)
    if pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        if rgb.dtype == np.uint16:
            rgb = (rgb >> 8).astype(np.uint8)
        return base.gray_from_rgb(np.ascontiguousarray(rgb, dtype=np.uint8))
    if arr.ndim == 3:
        return base.gray_from_rgb(np.ascontiguousarray(arr, dtype=np.uint8))
    if arr.dtype != np.uint8:
        raise ValueError(f"expected 8-bit gray, got {arr.dtype}")
    return arr


def describe(path: Path, origin: str, lossy: bool) -> dict:
    ds = dcmread(path)
    ts = ds.file_meta.TransferSyntaxUID
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    entry = {
        "file": path.name,
        "origin": origin,
        "file_size": path.stat().st_size,
        "transfer_syntax_uid": str(ts),
        "transfer_syntax_name": ts.name,
        "photometric_interpretation": str(ds.PhotometricInterpretation),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
        "number_of_frames": frames,
        "lossy": lossy,
        "decoder": "pylibjpeg-openjpeg" if "2.4.9" in str(ts) else "pydicom (native)",
    }
    if ts.is_encapsulated:
        entry["encapsulation"] = base.encapsulation_info(ds, frames)
        entry["encapsulation"].pop("first_frame_jpeg", None)
    summaries = []
    for i in range(frames):
        gray = frame_gray(ds, i)
        summary = base.summarize(path.name, i, gray, None)
        if lossy:
            png = f"{path.name}.{i}.png"
            Image.fromarray(gray, "L").save(path.parent / png, optimize=True)
            summary["gray_png"] = png
        summaries.append(summary)
    entry["frames"] = summaries
    return entry


def lossy_error(original: np.ndarray, path: Path) -> int:
    """Largest difference between the source gray and the decoded lossy frame 0: proof
    that the file is really lossy."""
    decoded = frame_gray(dcmread(path), 0)
    return int(np.abs(decoded.astype(int) - original.astype(int)).max())


def build(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    files: list[tuple[Path, str, bool]] = []
    work = Path(tempfile.mkdtemp())
    try:
        for name, note in COPIED:
            shutil.copyfile(get_testdata_file(name), out / name)
            files.append((out / name, f"pydicom {pydicom.__version__} sample, unchanged: {note}",
                          "KY" in name))

        rgb = us1_rgb_quarter()
        rgb_src = work / "rgb.dcm"
        native_us1(rgb, "RGB", rgb_src, "US1_UNCR 4x4 block-mean to 160x120, uncompressed")
        mono = base.gray_from_rgb(rgb)
        mono_src = work / "mono.dcm"
        native_us1(mono, "MONOCHROME2", mono_src, "US1_UNCR 4x4 block-mean to 160x120, gray")
        cine_src = DICOM_DIR / "mono2_multiframe.dcm"

        p = out / "US1_rgb_j2k_gdcm.dcm"
        gdcmconv(["--j2k"], rgb_src, p)
        files.append((p, "160x120 RGB from US1_UNCR, gdcmconv --j2k", False))
        p = out / "US1_rgb_j2k_lossy_gdcm.dcm"
        gdcmconv(["--j2k", "--lossy", "-q", "35"], rgb_src, p)
        assert lossy_error(base.gray_from_rgb(rgb), p) > 0, p
        files.append((p, "160x120 RGB from US1_UNCR, gdcmconv --j2k --lossy -q 35", True))
        p = out / "mono2_multiframe_j2k_gdcm.dcm"
        gdcmconv(["--j2k"], cine_src, p)
        files.append((p, "mono2_multiframe.dcm (5 frames), gdcmconv --j2k", False))
        p = out / "mono2_multiframe_j2k_3fragments.dcm"
        split_fragments(out / "mono2_multiframe_j2k_gdcm.dcm", p, 3)
        files.append((p, "mono2_multiframe_j2k_gdcm.dcm with each frame split into 3 fragments "
                      "and a basic offset table (pydicom encapsulate)", False))
        p = out / "US1_mono2_j2k_pydicom.dcm"
        pydicom_j2k(mono_src, p, False, "160x120 gray, JPEG 2000 lossless (pylibjpeg-openjpeg)")
        files.append((p, "160x120 gray from US1_UNCR, pydicom + pylibjpeg-openjpeg lossless", False))
        p = out / "mono2_multiframe_j2k_lossy_pydicom.dcm"
        pydicom_j2k(cine_src, p, True, "5 frames, JPEG 2000 lossy, PSNR 38 (pylibjpeg-openjpeg)")
        assert lossy_error(dcmread(cine_src).pixel_array[0], p) > 0, p
        files.append((p, "mono2_multiframe.dcm, pydicom + pylibjpeg-openjpeg, PSNR 38", True))

        indices = mono.astype(np.uint16) * 16 + 7  # 7..4087 of 4096 entries
        p = out / "US1_palette_segmented16.dcm"
        segmented_palette(p, indices, 16, "160x120, 16-bit palette indices, segmented 16-bit LUTs")
        files.append((p, "gray of US1_UNCR as 16-bit indices; segmented LUTs, 16-bit entries",
                       False))
        p = out / "US1_palette_segmented8.dcm"
        segmented_palette(p, base.downscale_mean(mono, 2), 8,
                          "80x60, 8-bit palette indices, segmented 8-bit LUTs")
        files.append((p, "gray of US1_UNCR as 8-bit indices; segmented LUTs, 8-bit entries",
                       False))

        for flag, syntax in (("+ti", "implicit"), ("+tb", "big_endian"), ("+td", "deflated")):
            p = out / f"mono2_multiframe_{syntax}_dcmtk.dcm"
            subprocess.run(["dcmconv", flag, str(cine_src), str(p)], check=True)
            files.append((p, f"mono2_multiframe.dcm, dcmtk dcmconv {flag}", False))

        p = out / UNSUPPORTED_NAME
        gdcmconv(["--jpegls"], cine_src, p)
    finally:
        shutil.rmtree(work)

    return {
        "generator": "tools/dicom_breadth_reference.py",
        "rules": "as tools/dicom_reference.py: gray = Pillow convert('L') of the RGB, "
                 "16-bit palette entries >> 8, MONOCHROME2 8-bit stored value; lossy files "
                 "also have every frame's gray as PNG",
        "versions": versions(),
        "files": [describe(p, origin, lossy) for p, origin, lossy in files],
        "unsupported": {"file": UNSUPPORTED_NAME,
                        "transfer_syntax_uid": str(dcmread(p).file_meta.TransferSyntaxUID),
                        "transfer_syntax_name": dcmread(p).file_meta.TransferSyntaxUID.name},
    }


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in ("pydicom", "numpy", "pillow", "pylibjpeg", "pylibjpeg-openjpeg"):
        out[pkg] = importlib.metadata.version(pkg)
    gdcm = subprocess.run(["gdcmconv", "--version"], capture_output=True, text=True)
    out["gdcmconv"] = gdcm.stdout.strip()
    return out


def write(ref: dict, out: Path) -> None:
    (out / "reference.json").write_text(json.dumps(ref, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary directory and compare with --out-dir")
    args = ap.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            write(build(tmp), tmp)
            bad = [p.name for p in sorted(tmp.iterdir())
                   if not filecmp.cmp(p, args.out_dir / p.name, shallow=False)
                   if (args.out_dir / p.name).exists()] + \
                  [p.name for p in sorted(tmp.iterdir()) if not (args.out_dir / p.name).exists()]
            if bad:
                print("differs from a fresh regeneration:", ", ".join(bad))
                return 1
            print(f"OK: {len(list(tmp.iterdir()))} files match a fresh regeneration")
            return 0
    ref = build(args.out_dir)
    write(ref, args.out_dir)
    for e in ref["files"]:
        print(f"{e['file']:40s} {e['file_size']:>7d}  {e['photometric_interpretation']:13s} "
              f"{e['transfer_syntax_name']:42s} frames={e['number_of_frames']}")
    total = sum(p.stat().st_size for p in args.out_dir.iterdir())
    print(f"total in {args.out_dir}: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
