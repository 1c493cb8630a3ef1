//! The network's arithmetic: the CPU im2col engine against candle's own convolution, batches
//! against single images, and Grad-CAM's closed form against candle's autograd.

use candle_core::{Device, Tensor, Var, D};
use ceusd::model::gradcam::{class_activation, upsample_normalised};
use ceusd::model::init::{seeded_metadata, seeded_tensors};
use ceusd::model::{ConvEngine, DlrModel, HeadActivation, ModelIdentity};
use image::GrayImage;

fn model(seed: u64, channels: u32, activation: HeadActivation, engine: ConvEngine) -> DlrModel {
    let mut meta = seeded_metadata(seed, channels);
    meta.head_activation = activation;
    let tensors = seeded_tensors(&meta, seed).unwrap();
    let identity = ModelIdentity::of(&meta, "test".into(), None);
    DlrModel::from_tensors(meta, identity, tensors, &Device::Cpu, engine).unwrap()
}

/// A deterministic ultrasound-like 224x224 image: a dark lesion in speckled tissue.
fn test_image(seed: u32) -> GrayImage {
    GrayImage::from_fn(224, 224, |x, y| {
        let h = (x.wrapping_mul(73856093) ^ y.wrapping_mul(19349663) ^ seed.wrapping_mul(83492791))
            % 97;
        let dx = x as f32 - 100.0 - seed as f32 * 7.0;
        let dy = y as f32 - 120.0;
        let lesion = if dx * dx + dy * dy < 1600.0 {
            40.0
        } else {
            120.0
        };
        image::Luma([(lesion + h as f32 - 48.0).clamp(0.0, 255.0) as u8])
    })
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

#[test]
fn im2col_engine_matches_candle_conv2d() {
    for channels in [1, 3] {
        let fast = model(3, channels, HeadActivation::Relu, ConvEngine::Im2col);
        let reference = model(3, channels, HeadActivation::Relu, ConvEngine::Candle);
        let images = [test_image(1)];
        let a = fast.forward_images(&images).unwrap();
        let b = reference.forward_images(&images).unwrap();
        assert_eq!(a.features.dims(), &[1, 7, 7, 2048]);
        let rel = max_rel(&a.features, &b.features);
        assert!(
            rel < 1e-4,
            "{channels} channel(s): features differ by {rel}"
        );
        let dp = max_rel(&a.probabilities, &b.probabilities);
        assert!(dp < 1e-4, "probabilities differ by {dp}");
    }
}

#[test]
fn a_batch_scores_each_image_as_alone() {
    let m = model(5, 3, HeadActivation::Relu, ConvEngine::Im2col);
    let images = [test_image(1), test_image(2), test_image(3)];
    let batch = m.forward_images(&images).unwrap();
    for (i, img) in images.iter().enumerate() {
        let single = m.forward_images(std::slice::from_ref(img)).unwrap();
        let row = batch.features.narrow(0, i, 1).unwrap();
        assert!(max_rel(&row, &single.features) < 1e-5);
        let p = batch.probabilities.narrow(0, i, 1).unwrap();
        assert!(max_rel(&p, &single.probabilities) < 1e-5);
    }
    // Different images give different features: the network looks at its input.
    let f0 = batch.features.narrow(0, 0, 1).unwrap();
    let f1 = batch.features.narrow(0, 1, 1).unwrap();
    assert!(max_rel(&f0, &f1) > 1e-3);
}

/// Grad-CAM by autograd: the gradient of the positive logit with respect to the feature map,
/// averaged over space, weights the channels.
fn gradcam_by_autograd(m: &DlrModel, features: &Tensor, class: usize) -> Tensor {
    let var = Var::from_tensor(features).unwrap();
    let pooled = var.as_tensor().mean(1).unwrap().mean(1).unwrap();
    let logits = m.network.head.logits(&pooled).unwrap();
    let target = logits.narrow(1, class, 1).unwrap().sum_all().unwrap();
    let grads = target.backward().unwrap();
    let g = grads.get(var.as_tensor()).unwrap(); // [1, h, w, c]
    let alpha = g.mean(1).unwrap().mean(1).unwrap(); // [1, c]
    let c = alpha.dim(D::Minus1).unwrap();
    features
        .broadcast_mul(&alpha.reshape((1, 1, 1, c)).unwrap())
        .unwrap()
        .sum(3)
        .unwrap()
        .relu()
        .unwrap()
}

#[test]
fn gradcam_closed_form_matches_autograd() {
    let mut non_empty = 0;
    for activation in [HeadActivation::Relu, HeadActivation::None] {
        let m = model(11, 3, activation, ConvEngine::Im2col);
        for seed in [1, 4] {
            let out = m.forward_images(&[test_image(seed)]).unwrap();
            for class in [0, 1] {
                let closed = class_activation(&m.network.head, &out, class).unwrap();
                let auto = gradcam_by_autograd(&m, &out.features, class);
                assert_eq!(closed.dims(), &[1, 7, 7]);
                let auto_max: f32 = auto.max_all().unwrap().to_scalar().unwrap();
                let diff: f32 = (&closed - &auto)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                if auto_max > 0.0 {
                    non_empty += 1;
                }
                assert!(
                    diff <= 1e-5 * auto_max.max(1e-6),
                    "{activation:?} class {class}: closed form differs from autograd by {diff} (max {auto_max})"
                );
            }
        }
    }
    // Most cases must have evidence somewhere, or the comparison would prove nothing.
    assert!(non_empty >= 4, "only {non_empty} of 8 maps were non-empty");
}

#[test]
fn heatmap_is_upsampled_to_the_roi_and_scaled_to_unit_range() {
    let cam = Tensor::from_vec(
        vec![0f32, 1.0, 2.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0],
        (3, 3),
        &Device::Cpu,
    )
    .unwrap();
    let h = upsample_normalised(&cam, 90, 60).unwrap();
    assert_eq!((h.width, h.height, h.values.len()), (90, 60, 5400));
    let max = h.values.iter().cloned().fold(f32::MIN, f32::max);
    let min = h.values.iter().cloned().fold(f32::MAX, f32::min);
    assert!((max - 1.0).abs() < 1e-6 && min >= 0.0, "range {min}..{max}");
    // The hottest cell (centre of the 3x3 map) is hottest in the upsampled map too.
    let centre = h.values[30 * 90 + 45];
    assert!(centre > 0.9, "centre {centre}");
    assert!(!h.empty);
    let zero = Tensor::zeros((7, 7), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(upsample_normalised(&zero, 10, 10).unwrap().empty);
}
