//! A long cine is read a frame at a time, and each frame decodes exactly as dicom-rs decodes
//! it from the whole file: first, middle and last frames of a generated JPEG-baseline cine
//! and of an uncompressed one.

#[path = "dicom_support/native_cine.rs"]
mod native_cine;

use ceusd::capture::dicom::DicomFile;
use ceusd::capture::dicom_write::{write_cine, CineInfo};
use ceusd::capture::replay::DicomReplay;
use ceusd::capture::source::{FrameSource, Pacing, SourceEvent};
use ceusd::capture::Picture;
use dicom_pixeldata::{ConvertOptions, PixelDecoder};
use image::RgbImage;

const W: u32 = 96;
const H: u32 = 64;
const FRAMES: u32 = 40;

/// Frame `i`: a gradient and a square that move with `i`, so frames differ.
fn picture(i: u32) -> RgbImage {
    RgbImage::from_fn(W, H, |x, y| {
        let inside = (x + 3 * i) % W < 20 && (y + i) % H < 16;
        let v = ((x * 2 + y + i * 5) % 200) as u8;
        if inside {
            image::Rgb([250, v, 30])
        } else {
            image::Rgb([v, v / 2, 255 - v])
        }
    })
}

fn rgb(p: &Picture) -> &RgbImage {
    match p {
        Picture::Rgb(img) => img,
        Picture::Gray(_) => panic!("expected an RGB picture"),
    }
}

/// Frame `k` as dicom-rs decodes it from the whole file held in memory.
fn whole_file_decode(path: &std::path::Path, k: u32) -> RgbImage {
    let obj = dicom_object::open_file(path).expect("open whole file");
    let decoded = obj.decode_pixel_data_frame(k).expect("decode frame");
    decoded
        .to_dynamic_image_with_options(0, &ConvertOptions::new().force_8bit())
        .expect("to image")
        .to_rgb8()
}

fn indices() -> [u32; 4] {
    [0, 1, FRAMES / 2, FRAMES - 1]
}

#[test]
fn jpeg_baseline_frames_are_read_singly_and_decode_as_from_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cine.dcm");
    let info = CineInfo {
        frame_time_ms: 40.0,
        acquisition_time: "101500.000000".into(),
        acquisition_date: "20240101".into(),
        injection_s: None,
        uid_seed: 3,
        description: "test".into(),
    };
    write_cine(&path, (0..FRAMES).map(picture), &info).unwrap();
    let file = DicomFile::open(&path).unwrap();
    assert_eq!(file.frames(), FRAMES);
    assert!(
        file.reads_by_frame(),
        "a JPEG cine is read a frame at a time"
    );
    // Out of order, and twice: no frame depends on the one decoded before it.
    for k in indices().into_iter().rev().chain(indices()) {
        let loaded = file.frame(k).unwrap();
        assert_eq!(loaded.frames_in_file, FRAMES);
        assert!(loaded.format.contains("JPEG Baseline"), "{}", loaded.format);
        let got = rgb(&loaded.picture);
        assert_eq!(got, &whole_file_decode(&path, k), "frame {k}");
        // Lossy, but near what was written: the right frame, not a neighbour.
        let err = got
            .as_raw()
            .iter()
            .zip(picture(k).as_raw())
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / got.as_raw().len() as f64;
        assert!(err < 4.0, "frame {k}: mean error {err}");
    }
}

#[test]
fn uncompressed_frames_are_read_singly_and_are_the_bytes_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("native.dcm");
    native_cine::write_native_rgb_cine(&path, W, H, FRAMES, 40.0, picture).unwrap();
    let file = DicomFile::open(&path).unwrap();
    assert_eq!(file.frames(), FRAMES);
    assert!(
        file.reads_by_frame(),
        "an uncompressed cine is read a frame at a time"
    );
    for k in indices().into_iter().rev().chain(indices()) {
        let loaded = file.frame(k).unwrap();
        assert_eq!(rgb(&loaded.picture), &picture(k), "frame {k}");
        assert_eq!(
            rgb(&loaded.picture),
            &whole_file_decode(&path, k),
            "frame {k}"
        );
    }
    let e = file.frame(FRAMES).unwrap_err().to_string();
    assert!(e.contains(&format!("{FRAMES} frame")), "{e}");
}

#[test]
fn replay_gives_every_frame_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("native.dcm");
    native_cine::write_native_rgb_cine(&path, W, H, FRAMES, 40.0, picture).unwrap();
    let mut replay = DicomReplay::open(&path, Pacing::AsFastAsPossible).unwrap();
    let mut n = 0;
    while let SourceEvent::Frame(frame) = replay.next_event().unwrap() {
        assert_eq!(frame.sequence, n as u64);
        assert_eq!(frame.data, picture(n).into_raw(), "frame {n}");
        n += 1;
    }
    assert_eq!(n, FRAMES);
}
