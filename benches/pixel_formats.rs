//! Conversion of a 1920x1080 captured frame to the gray of its CEUS pane (the right half,
//! 960x1080), per pixel format: the per-frame cost of capture at 60 fps; for MJPEG also the pane
//! at the detail of 8x8 block means, which is what the exam takes from most MJPEG frames.
//!
//! Run: `cargo bench --bench pixel_formats`

use ceusd::capture::frame::{Detail, Frame, LumaRange, PixelFormat};
use ceusd::roi::Roi;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;

const W: u32 = 1920;
const H: u32 = 1080;

fn frame(format: PixelFormat) -> Frame {
    let (w, h) = (W as usize, H as usize);
    let noise = |i: usize| ((i.wrapping_mul(2654435761) >> 13) & 255) as u8;
    let (stride, data) = match format {
        PixelFormat::Yuyv | PixelFormat::Uyvy => (2 * w, (0..2 * w * h).map(noise).collect()),
        PixelFormat::Nv12 => (w, (0..w * h * 3 / 2).map(noise).collect()),
        PixelFormat::Grey => (w, (0..w * h).map(noise).collect()),
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => (3 * w, (0..3 * w * h).map(noise).collect()),
        PixelFormat::Mjpeg => {
            // A scanner-like picture (smooth gray gradients with speckle) at quality 90.
            let img = image::RgbImage::from_fn(W, H, |x, y| {
                let v = ((x / 4 + y / 3) % 200) as u8 + (noise((y * W + x) as usize) & 31);
                image::Rgb([v, v, v])
            });
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
                .encode_image(&img)
                .expect("encode");
            (0, jpeg)
        }
    };
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

fn benches(c: &mut Criterion) {
    let pane = Roi {
        x: 960,
        y: 0,
        width: 960,
        height: 1080,
    };
    let mut g = c.benchmark_group("ceus_pane_gray_1080p");
    g.sample_size(30);
    for format in PixelFormat::ALL {
        let f = frame(format);
        g.bench_function(format.fourcc(), |b| {
            b.iter(|| black_box(f.gray_region(&pane, LumaRange::Limited).expect("convert")))
        });
    }
    // What the exam takes from most MJPEG frames: the pane at the detail of 8x8 block means.
    let f = frame(PixelFormat::Mjpeg);
    g.bench_function("MJPG block means", |b| {
        b.iter(|| {
            black_box(
                f.gray_regions(&[pane], LumaRange::Limited, Detail::BlockMeans)
                    .expect("convert"),
            )
        })
    });
    g.finish();
}

criterion_group!(pixel_formats, benches);
criterion_main!(pixel_formats);
