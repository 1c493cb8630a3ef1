//! DICOM decoding against values pydicom computed for the same files
//! (`tools/dicom_reference.py` → `tests/data/dicom/reference.json`).

use ceusd::capture::{load_frame, Picture};
use ceusd::roi::Roi;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/dicom")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(data_dir().join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json parses")
}

fn gray_of(p: &Picture) -> image::GrayImage {
    p.gray_roi(&Roi::full(p.width(), p.height()))
        .expect("full-frame ROI")
}

#[test]
fn every_reference_frame_decodes_like_pydicom() {
    let r = reference();
    let files = r["files"].as_array().expect("files");
    assert!(files.len() >= 10);
    let mut checked = 0;
    for f in files {
        let name = f["file"].as_str().unwrap();
        let ts = f["transfer_syntax_name"].as_str().unwrap();
        // Lossy JPEG: decoders legitimately differ by a level or two (pydicom's own two JPEG
        // plugins differ by up to 2 on ~1.4% of pixels).
        let lossy = ts.contains("Baseline");
        for frame in f["frames"].as_array().unwrap() {
            let index = frame["index"].as_u64().unwrap() as u32;
            let loaded = load_frame(&data_dir().join(name), index)
                .unwrap_or_else(|e| panic!("{name} frame {index}: {e}"));
            assert_eq!(
                loaded.frames_in_file as u64,
                f["number_of_frames"].as_u64().unwrap(),
                "{name}"
            );
            let gray = gray_of(&loaded.picture);
            assert_eq!(
                gray.width() as u64,
                f["columns"].as_u64().unwrap(),
                "{name}"
            );
            assert_eq!(gray.height() as u64, f["rows"].as_u64().unwrap(), "{name}");
            let mean =
                gray.as_raw().iter().map(|v| *v as f64).sum::<f64>() / gray.as_raw().len() as f64;
            let want_mean = frame["mean_gray"].as_f64().unwrap();
            if lossy {
                assert!(
                    (mean - want_mean).abs() <= 0.1,
                    "{name} frame {index}: mean {mean} vs {want_mean}"
                );
                for s in frame["samples"].as_array().unwrap() {
                    let (x, y, v) = (
                        s[0].as_u64().unwrap() as u32,
                        s[1].as_u64().unwrap() as u32,
                        s[2].as_i64().unwrap(),
                    );
                    let got = gray.get_pixel(x, y).0[0] as i64;
                    assert!(
                        (got - v).abs() <= 3,
                        "{name} frame {index} ({x},{y}): {got} vs {v}"
                    );
                }
            } else {
                let digest = hex::encode(Sha256::digest(gray.as_raw()));
                assert_eq!(
                    digest,
                    frame["sha256_gray"].as_str().unwrap(),
                    "{name} frame {index}: gray differs from pydicom's (mean {mean} vs {want_mean})"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "checked {checked} frames");
}

#[test]
fn a_frame_past_the_end_is_an_error_naming_the_count() {
    let e = load_frame(&data_dir().join("mono2_multiframe.dcm"), 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("frame 5") && e.contains("5 frame"), "{e}");
}

#[test]
fn truncated_and_non_dicom_files_are_refused_with_a_reason() {
    let e = load_frame(&data_dir().join("truncated_pixel_data.dcm"), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated_pixel_data.dcm"), "{e}");
    let e = load_frame(&data_dir().join("not_dicom.dcm"), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not_dicom.dcm") && e.contains("DICOM"), "{e}");
}

/// JPEG 2000, segmented palettes and the uncompressed syntaxes (`tools/dicom_breadth_reference.py` →
/// `tests/data/dicom/breadth/`): lossless frames equal pydicom's, lossy frames are within
/// one gray level of pydicom's (pylibjpeg-openjpeg) at every pixel.
#[test]
fn jpeg2000_and_segmented_palette_frames_decode_like_pydicom() {
    let dir = data_dir().join("breadth");
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    let r: Value = serde_json::from_str(&text).expect("reference.json parses");
    let mut checked = 0;
    for f in r["files"].as_array().expect("files") {
        let name = f["file"].as_str().unwrap();
        for frame in f["frames"].as_array().unwrap() {
            let index = frame["index"].as_u64().unwrap() as u32;
            let loaded = load_frame(&dir.join(name), index)
                .unwrap_or_else(|e| panic!("{name} frame {index}: {e}"));
            let gray = gray_of(&loaded.picture);
            let size = (gray.width() as u64, gray.height() as u64);
            let want = (f["columns"].as_u64().unwrap(), f["rows"].as_u64().unwrap());
            assert_eq!(size, want, "{name}");
            if f["lossy"].as_bool().unwrap() {
                let png = frame["gray_png"].as_str().unwrap();
                let reference = image::open(dir.join(png)).expect(png).to_luma8();
                let worst = gray
                    .as_raw()
                    .iter()
                    .zip(reference.as_raw())
                    .map(|(a, b)| a.abs_diff(*b))
                    .max()
                    .unwrap();
                assert!(
                    worst <= 1,
                    "{name} frame {index}: {worst} levels from pydicom's"
                );
            } else {
                let digest = hex::encode(Sha256::digest(gray.as_raw()));
                let want = frame["sha256_gray"].as_str().unwrap();
                assert_eq!(
                    digest, want,
                    "{name} frame {index}: gray differs from pydicom's"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 37, "frames checked");
}

#[test]
fn jpeg2000_cines_are_read_a_frame_at_a_time() {
    use ceusd::capture::dicom::DicomFile;
    for name in [
        "mono2_multiframe_j2k_gdcm.dcm",
        "mono2_multiframe_j2k_lossy_pydicom.dcm",
        // Each frame in 3 fragments, told apart by the basic offset table.
        "mono2_multiframe_j2k_3fragments.dcm",
        // One frame in 3 fragments, without an offset table.
        "examples_jpeg2k.dcm",
    ] {
        let file = DicomFile::open(&data_dir().join("breadth").join(name)).unwrap();
        assert!(file.reads_by_frame(), "{name} is read whole");
    }
}

#[test]
fn an_unsupported_transfer_syntax_is_named_with_those_that_are_supported() {
    let e = load_frame(&data_dir().join("breadth/mono2_jpegls_gdcm.dcm"), 0)
        .unwrap_err()
        .to_string();
    for part in [
        "mono2_jpegls_gdcm.dcm",
        "1.2.840.10008.1.2.4.80 (JPEG-LS Lossless Image Compression) is not supported",
        "JPEG 2000 Lossless (1.2.840.10008.1.2.4.90)",
        "JPEG 2000 (1.2.840.10008.1.2.4.91)",
        "RLE Lossless (1.2.840.10008.1.2.5)",
    ] {
        assert!(e.contains(part), "{e}");
    }
}
