//! ceusd's network against an independent implementation: the same seeded weights run as an
//! ONNX graph in ONNX Runtime, BatchNorm unfolded (`tools/reference_resnet.py`, fixtures in
//! `tests/data/parity/`). Probabilities must agree to 1e-4; the last stage's activations to
//! 1e-4 of their largest magnitude.

use candle_core::Device;
use ceusd::capture::{load_frame, Picture};
use ceusd::model::file::{write_model, StoredType};
use ceusd::model::init::{seeded_metadata, seeded_tensors};
use ceusd::model::DlrModel;
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/parity")
}

fn check(fixture: &str, seed: u64, channels: u32, stored: StoredType) {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join(fixture).join("expected.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        expected["model"]["channels"].as_u64().unwrap(),
        channels as u64
    );

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.gguf");
    let meta = seeded_metadata(seed, channels);
    write_model(&path, &meta, seeded_tensors(&meta, seed).unwrap(), stored).unwrap();
    let model = DlrModel::load(&path, None, &Device::Cpu).unwrap();

    let inputs = expected["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 2);
    for input in inputs {
        let name = input["file"].as_str().unwrap();
        let frame = load_frame(&dir().join(name), 0).unwrap();
        let Picture::Gray(gray) = frame.picture else {
            panic!("{name} is not gray")
        };
        let out = model.forward_images(&[gray]).unwrap();
        let scores = model.scores(&out).unwrap().remove(0);
        let mut worst_p = 0f64;

        let want_p: Vec<f64> = input["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (got, want) in scores.probabilities.iter().zip(&want_p) {
            worst_p = worst_p.max((*got as f64 - want).abs());
            assert!(
                (*got as f64 - want).abs() <= 1e-4,
                "{fixture}/{name}: P {got} vs {want}"
            );
        }
        let want_l: Vec<f64> = input["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (got, want) in scores.logits.iter().zip(&want_l) {
            assert!(
                (*got as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{fixture}/{name}: logit {got} vs {want}"
            );
        }

        // Reference layer4 is NCHW [1, 2048, 7, 7]; ours is NHWC.
        let raw = std::fs::read(
            dir()
                .join(fixture)
                .join(input["layer4_file"].as_str().unwrap()),
        )
        .unwrap();
        let reference: Vec<f32> = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let ours: Vec<f32> = out
            .features
            .permute((0, 3, 1, 2))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ours.len(), reference.len());
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            scale > 1.0,
            "{fixture}/{name}: degenerate reference activations (max {scale})"
        );
        let worst = ours
            .iter()
            .zip(&reference)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!(
            "{fixture}/{name}: max |dP| {worst_p:.2e}, layer4 max |diff| {:.2e} of max |ref|",
            worst / scale
        );
        assert!(
            worst <= 1e-4 * scale,
            "{fixture}/{name}: layer4 max |diff| {worst} (max |ref| {scale})"
        );
    }
}

#[test]
fn three_channel_f32_model_matches_onnxruntime() {
    check("seed7_c3", 7, 3, StoredType::F32);
}

#[test]
fn one_channel_f16_model_matches_onnxruntime() {
    check("seed11_c1_f16", 11, 1, StoredType::F16);
}
