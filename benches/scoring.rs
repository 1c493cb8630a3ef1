//! Speed of the scoring path: the f32 ResNet-50 forward pass on one 224x224 ROI, preprocessing
//! of a 1920x1080 frame's ROI, and Grad-CAM. After criterion's groups, the forward pass is timed
//! once more with the same protocol as `tools/reference_resnet.py bench` (5 warm-up + 30 timed
//! runs, median) and, when Python with ONNX Runtime is available, ONNX Runtime fp32 is timed on
//! the same weights in the same run, so the two are reported as a ratio.
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench scoring`

use candle_core::Device;
use ceusd::capture::Picture;
use ceusd::model::file::{write_model, StoredType};
use ceusd::model::gradcam::upsample_normalised;
use ceusd::model::init::{seeded_metadata, seeded_tensors};
use ceusd::model::preprocess::{batch_tensor, resize_gray};
use ceusd::model::DlrModel;
use ceusd::roi::Roi;
use criterion::{criterion_group, Criterion};
use image::{GrayImage, RgbImage};
use std::hint::black_box;
use std::time::Instant;

const SEED: u64 = 7;

fn roi_image() -> GrayImage {
    GrayImage::from_fn(224, 224, |x, y| {
        image::Luma([((x * 13 + y * 7) % 251) as u8])
    })
}

/// A 1080p dual-pane frame: B-mode left, CEUS right.
fn frame_1080p() -> Picture {
    Picture::Rgb(RgbImage::from_fn(1920, 1080, |x, y| {
        let v = ((x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) >> 7) as u8;
        image::Rgb([v, v.wrapping_add(3), v.wrapping_sub(2)])
    }))
}

fn benches(c: &mut Criterion) {
    let model = DlrModel::seeded(SEED, 3, &Device::Cpu).expect("seeded model");
    let img = roi_image();
    let mut g = c.benchmark_group("scoring");
    g.sample_size(20);
    g.bench_function("forward_f32_224", |b| {
        b.iter(|| black_box(model.forward_images(std::slice::from_ref(&img)).unwrap()))
    });
    let frame = frame_1080p();
    let roi = Roi {
        x: 1200,
        y: 300,
        width: 420,
        height: 360,
    };
    g.bench_function("preprocess_roi_of_1080p", |b| {
        b.iter(|| {
            let gray = frame.gray_roi(&roi).unwrap();
            let resized = resize_gray(&gray, 224, model.metadata.resize_filter).unwrap();
            black_box(batch_tensor(&[resized], &model.metadata, &Device::Cpu).unwrap())
        })
    });
    let out = model.forward_images(std::slice::from_ref(&img)).unwrap();
    g.bench_function("gradcam_to_roi", |b| {
        b.iter(|| {
            let cam = model.gradcam(&out).unwrap().squeeze(0).unwrap();
            black_box(upsample_normalised(&cam, roi.width, roi.height).unwrap())
        })
    });
    g.finish();
}

criterion_group!(scoring, benches);

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Our forward pass and ONNX Runtime's, same protocol, same weights, same process run.
fn compare_with_onnxruntime() {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "2".into());
    let model = DlrModel::seeded(SEED, 3, &Device::Cpu).expect("seeded model");
    let img = [roi_image()];
    for _ in 0..5 {
        model.forward_images(&img).unwrap();
    }
    let ours: Vec<f64> = (0..30)
        .map(|_| {
            let t = Instant::now();
            model.forward_images(&img).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let ours = median_ms(ours);
    println!("ceusd f32 forward (median of 30, {threads} threads): {ours:.1} ms");

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.gguf");
    let meta = seeded_metadata(SEED, 3);
    write_model(
        &path,
        &meta,
        seeded_tensors(&meta, SEED).unwrap(),
        StoredType::F32,
    )
    .unwrap();
    let tool = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/reference_resnet.py");
    let output = std::process::Command::new("python3")
        .args([tool, "bench", "--model"])
        .arg(&path)
        .args(["--threads", &threads, "--json"])
        .output();
    match output {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let line = text
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with('{'))
                .unwrap_or("");
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => {
                    let ort = v["median_ms"].as_f64().unwrap_or(f64::NAN);
                    println!(
                        "onnxruntime {} fp32 (median of 30, {threads} threads): {ort:.1} ms",
                        v["ort_version"]
                    );
                    println!("ratio ceusd / onnxruntime fp32: {:.2}", ours / ort);
                }
                Err(e) => println!("onnxruntime baseline: unreadable output ({e}): {text}"),
            }
        }
        Ok(o) => println!(
            "onnxruntime baseline not measured: {} (pip install -r tools/requirements.txt)",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("failed")
        ),
        Err(e) => println!("onnxruntime baseline not measured: python3: {e}"),
    }
}

fn main() {
    scoring();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs each benchmark once as a smoke test; the comparison is only
    // worth its minute under `cargo bench`.
    if std::env::args().any(|a| a == "--bench") {
        compare_with_onnxruntime();
    }
}
