//! Every capture pixel format converted to the gray of a region, against straightforward
//! references: Pillow's luma for RGB/BGR (itself checked against Pillow in
//! `preprocess_pillow.rs`), the Y plane for YUV, and an independent decode for MJPEG; and the
//! reduced MJPEG decode the exam uses outside its key-frame window.

use ceusd::capture::frame::{Detail, Frame, LumaRange, PixelFormat};
use ceusd::capture::source::Pacing;
use ceusd::capture::synthetic::{LesionKind, SyntheticConfig, SyntheticScanner};
use ceusd::exam::{Exam, ExamSettings};
use ceusd::layout::Layout;
use ceusd::pixels::gray_from_rgb;
use ceusd::roi::Roi;
use image::{GrayImage, RgbImage};
use std::time::Duration;

const W: u32 = 96;
const H: u32 = 64;

fn rgb_scene() -> RgbImage {
    RgbImage::from_fn(W, H, |x, y| {
        let v = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(97)) >> 5;
        image::Rgb([(v & 255) as u8, ((v >> 8) & 255) as u8, (x * 2 + y) as u8])
    })
}

fn luma_plane() -> GrayImage {
    GrayImage::from_fn(W, H, |x, y| image::Luma([((x * 7 + y * 13) % 256) as u8]))
}

fn frame(format: PixelFormat, stride: usize, data: Vec<u8>) -> Frame {
    Frame {
        sequence: 0,
        timestamp: Duration::ZERO,
        width: W,
        height: H,
        format,
        stride,
        data,
    }
}

/// Packs a Y plane (and arbitrary chroma) as `format`, with `pad` bytes after each line.
fn pack_yuv(format: PixelFormat, y: &GrayImage, pad: usize) -> (usize, Vec<u8>) {
    let (w, h) = (W as usize, H as usize);
    let chroma = |x: usize, r: usize| ((x * 31 + r * 17) % 256) as u8;
    match format {
        PixelFormat::Yuyv | PixelFormat::Uyvy => {
            let stride = 2 * w + pad;
            let mut data = vec![0xAA; stride * h];
            for r in 0..h {
                for x in 0..w {
                    let (luma, c) = (y.get_pixel(x as u32, r as u32).0[0], chroma(x, r));
                    let at = r * stride + 2 * x;
                    if format == PixelFormat::Yuyv {
                        data[at] = luma;
                        data[at + 1] = c;
                    } else {
                        data[at] = c;
                        data[at + 1] = luma;
                    }
                }
            }
            (stride, data)
        }
        PixelFormat::Nv12 | PixelFormat::Grey => {
            let stride = w + pad;
            let planes = if format == PixelFormat::Nv12 {
                h + h / 2
            } else {
                h
            };
            let mut data = vec![0x55; stride * planes];
            for r in 0..h {
                for x in 0..w {
                    data[r * stride + x] = y.get_pixel(x as u32, r as u32).0[0];
                }
            }
            (stride, data)
        }
        _ => unreachable!(),
    }
}

fn expand(v: u8) -> u8 {
    ((v as f64 - 16.0) * 255.0 / 219.0)
        .round()
        .clamp(0.0, 255.0) as u8
}

fn regions() -> [Roi; 3] {
    [
        Roi::full(W, H),
        Roi {
            x: 48,
            y: 0,
            width: 48,
            height: 64,
        },
        Roi {
            x: 7,
            y: 5,
            width: 33,
            height: 21,
        },
    ]
}

#[test]
fn yuv_and_grey_formats_give_their_luma() {
    let y = luma_plane();
    for format in [
        PixelFormat::Yuyv,
        PixelFormat::Uyvy,
        PixelFormat::Nv12,
        PixelFormat::Grey,
    ] {
        for pad in [0, 12] {
            let (stride, data) = pack_yuv(format, &y, pad);
            let f = frame(format, stride, data);
            for roi in regions() {
                let want_full = roi.crop(&y).unwrap();
                let full = f.gray_region(&roi, LumaRange::Full).unwrap();
                assert_eq!(full, want_full, "{format} pad {pad} {roi} full range");
                let limited = f.gray_region(&roi, LumaRange::Limited).unwrap();
                let want: Vec<u8> = if format == PixelFormat::Grey {
                    want_full.as_raw().clone() // GREY has no video range
                } else {
                    want_full.as_raw().iter().map(|v| expand(*v)).collect()
                };
                assert_eq!(
                    limited.as_raw(),
                    &want,
                    "{format} pad {pad} {roi} limited range"
                );
            }
        }
    }
    // The limited-range ends map to the full-range ends.
    let (stride, data) = pack_yuv(
        PixelFormat::Grey,
        &GrayImage::from_fn(W, H, |x, _| {
            image::Luma([if x % 2 == 0 { 16 } else { 235 }])
        }),
        0,
    );
    let f = frame(
        PixelFormat::Nv12,
        stride,
        [data.clone(), vec![128; stride * H as usize / 2]].concat(),
    );
    let g = f.gray_region(&Roi::full(W, H), LumaRange::Limited).unwrap();
    assert_eq!((g.get_pixel(0, 0).0[0], g.get_pixel(1, 0).0[0]), (0, 255));
}

#[test]
fn rgb_and_bgr_give_pillow_luma() {
    let rgb = rgb_scene();
    for pad in [0, 5] {
        let stride = 3 * W as usize + pad;
        let mut rgb_data = vec![0u8; stride * H as usize];
        let mut bgr_data = rgb_data.clone();
        for (x, y, p) in rgb.enumerate_pixels() {
            let at = y as usize * stride + 3 * x as usize;
            rgb_data[at..at + 3].copy_from_slice(&p.0);
            bgr_data[at..at + 3].copy_from_slice(&[p.0[2], p.0[1], p.0[0]]);
        }
        for roi in regions() {
            let want = gray_from_rgb(&roi.crop(&rgb).unwrap());
            for (format, data) in [
                (PixelFormat::Rgb24, &rgb_data),
                (PixelFormat::Bgr24, &bgr_data),
            ] {
                let got = frame(format, stride, data.clone())
                    .gray_region(&roi, LumaRange::Limited)
                    .unwrap();
                assert_eq!(got, want, "{format} pad {pad} {roi}");
            }
        }
    }
}

#[test]
fn mjpeg_gives_pillow_luma_of_the_decoded_picture() {
    let rgb = rgb_scene();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&rgb)
        .unwrap();
    // The `image` crate's decode to RGB, then Pillow's luma: what a training pipeline reading
    // the same JPEG computes.
    let decoded = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    let f = frame(PixelFormat::Mjpeg, 0, jpeg.clone());
    for roi in regions() {
        let got = f.gray_region(&roi, LumaRange::Limited).unwrap();
        let want = roi.crop(&decoded).unwrap();
        assert_eq!(got, gray_from_rgb(&want), "{roi}");
    }
    let mut wrong = frame(PixelFormat::Mjpeg, 0, jpeg);
    wrong.width = 100;
    let e = wrong
        .gray_region(&Roi::full(100, H), LumaRange::Full)
        .unwrap_err()
        .to_string();
    assert!(e.contains("96x64") && e.contains("100x64"), "{e}");
    let e = frame(PixelFormat::Mjpeg, 0, vec![0xFF, 0xD8, 0x00])
        .gray_region(&Roi::full(W, H), LumaRange::Full)
        .unwrap_err()
        .to_string();
    assert!(e.contains("MJPEG"), "{e}");
}

#[test]
fn short_buffers_bad_strides_and_outside_regions_are_errors() {
    let e = frame(PixelFormat::Yuyv, 2 * W as usize, vec![0; 100])
        .gray_region(&Roi::full(W, H), LumaRange::Full)
        .unwrap_err()
        .to_string();
    assert!(e.contains("YUYV") && e.contains("100 bytes"), "{e}");
    let e = frame(PixelFormat::Rgb24, 10, vec![0; 100_000])
        .gray_region(&Roi::full(W, H), LumaRange::Full)
        .unwrap_err()
        .to_string();
    assert!(e.contains("stride 10"), "{e}");
    let e = frame(PixelFormat::Grey, W as usize, vec![0; (W * H) as usize])
        .gray_region(
            &Roi {
                x: 90,
                y: 0,
                width: 10,
                height: 10,
            },
            LumaRange::Full,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("outside"), "{e}");
    for f in PixelFormat::ALL {
        assert_eq!(f.fourcc().parse::<PixelFormat>().unwrap(), f);
    }
    assert_eq!("rgb24".parse::<PixelFormat>().unwrap(), PixelFormat::Rgb24);
    assert!("H264".parse::<PixelFormat>().unwrap_err().contains("H264"));
}

fn gray_scene_jpeg() -> Vec<u8> {
    let scene = RgbImage::from_fn(W, H, |x, y| {
        let v = (x * 2 + y * 3 + (x * y) % 23) as u8;
        image::Rgb([v, v, v])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&scene)
        .unwrap();
    jpeg
}

#[test]
fn mjpeg_block_means_are_the_means_of_the_full_decodes_blocks() {
    let f = frame(PixelFormat::Mjpeg, 0, gray_scene_jpeg());
    let regions = regions();
    let full = f
        .gray_regions(&regions, LumaRange::Full, Detail::Full)
        .unwrap();
    let blocks = f
        .gray_regions(&regions, LumaRange::Full, Detail::BlockMeans)
        .unwrap();
    let whole = f.gray_region(&Roi::full(W, H), LumaRange::Full).unwrap();
    let block_mean = |x: u32, y: u32| {
        let (bx, by) = (x / 8 * 8, y / 8 * 8);
        let sum: u32 = (0..64)
            .map(|i| whole.get_pixel(bx + i % 8, by + i / 8).0[0] as u32)
            .sum();
        sum as f64 / 64.0
    };
    let mut worst = 0f64;
    for ((roi, full), blocks) in regions.iter().zip(&full).zip(&blocks) {
        assert_eq!(full, &f.gray_region(roi, LumaRange::Full).unwrap(), "{roi}");
        assert_eq!((blocks.width(), blocks.height()), (roi.width, roi.height));
        for (x, y, v) in blocks.enumerate_pixels() {
            let diff = (v.0[0] as f64 - block_mean(roi.x + x, roi.y + y)).abs();
            worst = worst.max(diff);
        }
    }
    // The DC coefficient is the block's mean before the decoder's rounding of each pixel.
    assert!(worst <= 1.0, "block means differ by up to {worst}");
}

#[test]
fn corrupt_or_mislabelled_mjpeg_is_an_error_at_either_detail() {
    let mut wrong = frame(PixelFormat::Mjpeg, 0, gray_scene_jpeg());
    wrong.width = 100;
    let e = wrong
        .gray_regions(&[Roi::full(100, H)], LumaRange::Full, Detail::BlockMeans)
        .unwrap_err()
        .to_string();
    assert!(e.contains("96x64") && e.contains("100x64"), "{e}");
    let mut truncated = gray_scene_jpeg();
    truncated.truncate(40);
    for data in [vec![0xFF, 0xD8, 0x00], truncated, Vec::new()] {
        let e = frame(PixelFormat::Mjpeg, 0, data)
            .gray_regions(&[Roi::full(W, H)], LumaRange::Full, Detail::BlockMeans)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MJPEG"), "{e}");
    }
}

/// An MJPEG exam at 40 fps whose key-frame window (30-40 s after injection) is its last 10
/// seconds: frames before the window are assessed on block means (every second one), those in
/// it in full. Every kept frame's pane, the key frame's among them, is the full decode's gray.
#[test]
fn kept_mjpeg_frames_are_the_full_decodes_gray() {
    let config = SyntheticConfig {
        width: 480,
        height: 272,
        fps: 40.0,
        duration_s: 13.0,
        injection_s: 0.0,
        format: PixelFormat::Mjpeg,
        ..SyntheticConfig::new(LesionKind::Pdac, 11)
    };
    let mut scanner = SyntheticScanner::new(config, Pacing::AsFastAsPossible).unwrap();
    let truth = scanner.truth().clone();
    let layout = Layout {
        bmode: truth.bmode_pane,
        ceus: truth.ceus_pane,
    };
    let mut exam = Exam::new(ExamSettings::default(), layout).unwrap();
    exam.recorded_injection(0.0, -27.0);
    for index in 0..scanner.frame_count() {
        exam.process(&scanner.frame(index)).unwrap();
    }
    let kept = exam.window.kept();
    assert_eq!(kept.len(), ExamSettings::default().keep);
    assert!(exam.window.key().is_some());
    for candidate in kept {
        let frame = scanner.frame(candidate.sequence);
        let full = frame.gray_region(&layout.ceus, LumaRange::Full).unwrap();
        assert!(full == candidate.ceus_pane, "frame {}", candidate.sequence);
        assert_eq!(
            candidate.quality.sharpness,
            ceusd::quality::sharpness(&full)
        );
    }
}
