#!/usr/bin/env python3
"""1080p ultrasound cines, the same frames in three encodings, to compare decoding speed.

Writes into OUT_DIR (default /tmp/ceusd-codec-cines):
  jpeg_baseline.dcm     JPEG Baseline (1.2.840.10008.1.2.4.50), YBR_FULL_422, Pillow quality 90
  j2k_lossless.dcm      JPEG 2000 Lossless (.4.90), pydicom + pylibjpeg-openjpeg
  j2k_lossy.dcm         JPEG 2000 (.4.91), PSNR 45, pydicom + pylibjpeg-openjpeg

Frames: tests/data/dicom/US1_UNCR.dcm (640x480 RGB) scaled to 1920x1080 (bicubic), with
seeded speckle-like noise (sigma 6) so that no two frames are alike, Frame Time 33.3 ms.

Usage:
    python3 tools/codec_cines.py [--frames 20] [--out-dir DIR]
    cargo build --bench dicom_cine
    target/debug/deps/dicom_cine-* decode DIR/jpeg_baseline.dcm   # and the two others
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dicom_reference as base  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SIZE = (1920, 1080)


def frames(n: int) -> list[np.ndarray]:
    us1 = dcmread(REPO_ROOT / "tests/data/dicom/US1_UNCR.dcm").pixel_array
    big = np.asarray(Image.fromarray(us1, "RGB").resize(SIZE, Image.BICUBIC)).astype(np.int16)
    rng = np.random.default_rng(1080)
    return [np.clip(big + rng.normal(0, 6, big.shape[:2])[..., None], 0, 255).astype(np.uint8)
            for _ in range(n)]


def cine_header(n: int):
    ds = dcmread(REPO_ROOT / "tests/data/dicom/US1_UNCR.dcm")
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = base.US_MULTIFRAME_STORAGE
    ds.Rows, ds.Columns = SIZE[1], SIZE[0]
    ds.NumberOfFrames = n
    ds.FrameTime = "33.3"
    ds.FrameIncrementPointer = 0x00181063
    ds.PlanarConfiguration = 0
    return ds


def write(out: Path, rgb: list[np.ndarray], syntax) -> None:
    ds = cine_header(len(rgb))
    if syntax == JPEGBaseline8Bit:
        jpegs = []
        for frame in rgb:
            buf = io.BytesIO()
            Image.fromarray(frame, "RGB").save(buf, "JPEG", quality=90, subsampling="4:2:2")
            jpegs.append(buf.getvalue())
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate(jpegs, has_bot=True)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    else:
        ds.PixelData = np.stack(rgb).tobytes()
        ds["PixelData"].VR = "OB"
        if syntax == JPEG2000:
            ds.compress(JPEG2000, encoding_plugin="pylibjpeg", j2k_psnr=[45.0])
        else:
            ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    base.finish_and_save(ds, out, f"1080p codec comparison cine, {syntax.name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/ceusd-codec-cines"))
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    rgb = frames(args.frames)
    for name, syntax in (("jpeg_baseline", JPEGBaseline8Bit), ("j2k_lossless", JPEG2000Lossless),
                         ("j2k_lossy", JPEG2000)):
        out = args.out_dir / f"{name}.dcm"
        write(out, rgb, syntax)
        print(f"{out}: {out.stat().st_size} bytes, {args.frames} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
