//! The model file: round trip, determinism, and refusal of damaged, truncated, mismatched or
//! ill-described files before any inference.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ceusd::model::file::{read_model, write_model, StoredType, HASH_KEY};
use ceusd::model::init::{seeded_metadata, seeded_tensors};
use ceusd::model::{DlrModel, ModelError};
use std::io::Write;
use std::path::Path;

fn write_seeded(path: &Path, seed: u64, stored: StoredType) -> String {
    let meta = seeded_metadata(seed, 3);
    write_model(path, &meta, seeded_tensors(&meta, seed).unwrap(), stored).unwrap()
}

#[test]
fn a_written_model_reads_back_with_its_metadata_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.gguf");
    let b = dir.path().join("b.gguf");
    let hash_a = write_seeded(&a, 7, StoredType::F32);
    let hash_b = write_seeded(&b, 7, StoredType::F32);
    // The same seed gives the same file, byte for byte, and the same hash.
    assert_eq!(hash_a, hash_b);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_ne!(hash_a, write_seeded(&b, 8, StoredType::F32));

    let m = read_model(&a, Some(&hash_a)).unwrap();
    assert_eq!(m.content_hash, hash_a);
    assert_eq!(m.metadata, seeded_metadata(7, 3));
    assert!(!m.metadata.provenance.trained);
    // torchvision ResNet-50 without its 1000-class fc (23,508,032) + DLR head 2048*512+512+512*2+2.
    assert_eq!(m.parameter_count(), 23_508_032 + 1_049_088 + 1_026);
    // 53 convolutions + 53 BatchNorms x 4 tensors + the head's 4.
    assert_eq!(m.tensors.len(), 53 + 53 * 4 + 4);
    assert!(m.stored_types.values().all(|t| t == "F32"));
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn an_f16_model_scores_like_its_f32_original() {
    let dir = tempfile::tempdir().unwrap();
    let p32 = dir.path().join("m32.gguf");
    let p16 = dir.path().join("m16.gguf");
    write_seeded(&p32, 9, StoredType::F32);
    write_seeded(&p16, 9, StoredType::F16);
    assert!(
        std::fs::metadata(&p16).unwrap().len() * 10 < std::fs::metadata(&p32).unwrap().len() * 6
    );
    let m16 = read_model(&p16, None).unwrap();
    assert!(m16.stored_types.values().all(|t| t == "F16"));
    let img = image::GrayImage::from_fn(224, 224, |x, y| {
        image::Luma([((x * 7 + y * 3) % 200) as u8])
    });
    let a = DlrModel::load(&p32, None, &Device::Cpu).unwrap();
    let b = DlrModel::load(&p16, None, &Device::Cpu).unwrap();
    let pa = a
        .scores(&a.forward_images(std::slice::from_ref(&img)).unwrap())
        .unwrap();
    let pb = b
        .scores(&b.forward_images(std::slice::from_ref(&img)).unwrap())
        .unwrap();
    assert!(
        (pa[0].score - pb[0].score).abs() < 1e-3,
        "{} vs {}",
        pa[0].score,
        pb[0].score
    );
}

#[test]
fn a_configured_hash_that_differs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    write_seeded(&p, 7, StoredType::F16);
    let e = read_model(&p, Some("sha256:00")).unwrap_err();
    assert!(matches!(e, ModelError::HashMismatch { .. }), "{e}");
    assert!(e.to_string().contains("sha256:00"));
}

#[test]
fn truncated_and_bit_flipped_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    write_seeded(&p, 7, StoredType::F16);
    let bytes = std::fs::read(&p).unwrap();

    // (The last 0-31 bytes are alignment padding after the final tensor, not content.)
    for cut in [10, 2000, bytes.len() / 2, bytes.len() - 40] {
        let t = dir.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        let Err(e) = read_model(&t, None) else {
            panic!("cut at {cut}: a truncated file must be refused");
        };
        assert!(matches!(e, ModelError::Corrupt { .. }), "cut at {cut}: {e}");
        assert!(e.to_string().contains("corrupt or truncated"), "{e}");
    }
    // One flipped bit in the weights, far from the header.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 5000;
    flipped[at] ^= 0x10;
    let f = dir.path().join("flipped.gguf");
    std::fs::write(&f, &flipped).unwrap();
    let e = read_model(&f, None).unwrap_err().to_string();
    assert!(e.contains("content hash mismatch"), "{e}");

    let e = read_model(&dir.path().join("absent.gguf"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.gguf"), "{e}");
}

/// Writes a GGUF with the seeded model's tensors and `kv` as metadata, bypassing all checks.
fn write_raw(path: &Path, kv: &[(String, Value)], tensors: &[(String, Tensor)]) {
    let q: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), QTensor::quantize(t, GgmlDType::F16).unwrap()))
        .collect();
    let kv_refs: Vec<(&str, &Value)> = kv.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &kv_refs, &t_refs).unwrap();
    f.flush().unwrap();
}

#[test]
fn bad_metadata_and_shapes_are_refused_naming_the_key_or_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let meta = seeded_metadata(7, 3);
    let tensors = seeded_tensors(&meta, 7).unwrap();
    let base = meta.to_gguf();
    let with = |key: &str, v: Option<Value>| {
        let mut kv: Vec<(String, Value)> = base.iter().filter(|(k, _)| k != key).cloned().collect();
        if let Some(v) = v {
            kv.push((key.to_string(), v));
        }
        kv.push((HASH_KEY.into(), Value::String("sha256:whatever".into())));
        kv
    };
    let cases: Vec<(&str, Option<Value>, &str)> = vec![
        ("ceusd.input.channels", None, "missing"),
        (
            "ceusd.input.channels",
            Some(Value::U32(2)),
            "expected 1 or 3",
        ),
        ("ceusd.threshold", Some(Value::F32(1.5)), "between 0 and 1"),
        (
            "ceusd.threshold",
            Some(Value::String("0.5".into())),
            "expected an f32",
        ),
        (
            "ceusd.input.resize_filter",
            Some(Value::String("lanczos".into())),
            "unknown resize filter",
        ),
        (
            "ceusd.classes",
            Some(Value::Array(vec![Value::String("A".into())])),
            "1 classes",
        ),
        (
            "ceusd.input.mean",
            Some(Value::Array(vec![Value::F32(0.5)])),
            "1 values for 3 input channels",
        ),
        (
            "general.architecture",
            Some(Value::String("llama".into())),
            "is not 'ceus-dlr-resnet50'",
        ),
    ];
    for (key, value, expect) in cases {
        let p = dir.path().join("bad.gguf");
        write_raw(&p, &with(key, value), &tensors);
        let e = read_model(&p, None).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(expect), "{key}: {e}");
    }

    // A tensor of the wrong shape, with a correct hash: the shape check names it.
    let mut wrong = tensors.clone();
    let i = wrong
        .iter()
        .position(|(n, _)| n == "layer3.2.conv2.weight")
        .unwrap();
    wrong[i].1 = Tensor::zeros((256, 256, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = write_model(&dir.path().join("w.gguf"), &meta, wrong, StoredType::F16)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer3.2.conv2.weight")
            && e.contains("[256, 256, 1, 1]")
            && e.contains("[256, 256, 3, 3]"),
        "{e}"
    );

    // A missing tensor.
    let missing: Vec<_> = tensors
        .iter()
        .filter(|(n, _)| n != "layer4.0.downsample.1.running_var")
        .cloned()
        .collect();
    let e = write_model(&dir.path().join("m.gguf"), &meta, missing, StoredType::F16)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer4.0.downsample.1.running_var") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn quantized_files_say_what_they_hold_and_load_on_both_engines() {
    use ceusd::model::convert::{quantize_model, Target};
    use ceusd::model::{ConvEngine, WeightFormat};
    let dir = tempfile::tempdir().unwrap();
    let (f32_path, q8, f16) = (
        dir.path().join("m.gguf"),
        dir.path().join("m-q8.gguf"),
        dir.path().join("m-f16.gguf"),
    );
    let original = write_seeded(&f32_path, 5, StoredType::F32);
    let done = quantize_model(&f32_path, Target::Q8, &q8, Some("2026-01-01T00:00:00Z")).unwrap();
    quantize_model(&f32_path, Target::F16, &f16, Some("2026-01-01T00:00:00Z")).unwrap();

    let m = read_model(&q8, Some(&done.content_hash)).unwrap();
    assert_eq!(m.metadata.weight_format, WeightFormat::FoldedInt8Dynamic);
    assert!(m.metadata.provenance.source.contains(&original));
    let count = |t: &str| m.stored_types.values().filter(|s| *s == t).count();
    // 52 int8 convolutions; the stem, 53 biases and the head's 4 tensors in f32.
    assert_eq!((count("Q8_0"), count("F32")), (52, 1 + 53 + 4));
    assert_eq!(m.int8.len(), 52);
    assert!(m
        .int8
        .values()
        .all(|q| q.values.iter().any(|v| v.abs() >= 126)));
    // Smaller than a third of the f32 file.
    assert!(m.file_bytes * 3 < std::fs::metadata(&f32_path).unwrap().len());
    let m16 = read_model(&f16, None).unwrap();
    assert_eq!(m16.metadata.weight_format, WeightFormat::FoldedF16);
    assert!(m16.int8.is_empty());

    // Quantizing a folded file again is refused, naming the key and what to do.
    let again =
        quantize_model(&q8, Target::Q8, &dir.path().join("x.gguf"), Some("2026")).unwrap_err();
    assert!(
        again.to_string().contains("ceusd.weights.format"),
        "{again}"
    );
    assert!(!dir.path().join("x.gguf").exists());

    // The int8 engine, and the same weights dequantized through the f32 engine (what a device
    // without the int8 engine runs): close scores.
    let img = image::GrayImage::from_fn(224, 224, |x, y| {
        image::Luma([((x * 5 + y * 11) % 230) as u8])
    });
    let score = |model: &DlrModel| {
        let out = model.forward_images(std::slice::from_ref(&img)).unwrap();
        model.scores(&out).unwrap()[0].logits.clone()
    };
    let int8 = DlrModel::load(&q8, None, &Device::Cpu).unwrap();
    assert_eq!(int8.network.int8_summary().map(|s| s.1), Some(52));
    let file = read_model(&q8, None).unwrap();
    let identity = int8.identity.clone();
    let dequantized = DlrModel::from_tensors(
        file.metadata,
        identity,
        file.tensors,
        &Device::Cpu,
        ConvEngine::Im2col,
    )
    .unwrap();
    assert!(dequantized.network.int8_summary().is_none());
    let f32_model = DlrModel::load(&f32_path, None, &Device::Cpu).unwrap();
    let reference = score(&f32_model);
    for (what, logits) in [("int8", score(&int8)), ("dequantized", score(&dequantized))] {
        for (a, b) in logits.iter().zip(&reference) {
            assert!(
                (a - b).abs() < 0.05 * b.abs().max(1.0),
                "{what}: {logits:?} vs {reference:?}"
            );
        }
    }
}

#[test]
fn calibrated_files_store_one_input_scale_per_int8_layer_and_refuse_bad_ones() {
    use ceusd::model::convert::{quantize_model_with, Calibration, Target};
    use ceusd::model::file::{write_stored_model, StoredTensor};
    use ceusd::model::int8::ActivationScaling;
    use ceusd::model::WeightFormat;
    let dir = tempfile::tempdir().unwrap();
    let (f32_path, out) = (dir.path().join("m.gguf"), dir.path().join("m-static.gguf"));
    write_seeded(&f32_path, 6, StoredType::F32);
    let images = dir.path().join("calibration");
    std::fs::create_dir(&images).unwrap();
    for i in 0..3u32 {
        image::GrayImage::from_fn(96, 80, |x, y| {
            image::Luma([((x * (3 + i) + y * 7) % 251) as u8])
        })
        .save(images.join(format!("roi-{i}.png")))
        .unwrap();
    }
    image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 3, y as u8 * 2, 90]))
        .save(images.join("colour.jpg"))
        .unwrap();
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let calibration = Calibration {
        dir: images.clone(),
        percentile: 99.9,
    };
    let done = quantize_model_with(
        &f32_path,
        Target::Q8,
        Some(&calibration),
        &out,
        Some("2026"),
    )
    .unwrap();
    let report = done.calibration.as_ref().unwrap();
    assert_eq!((report.images, report.layers.len()), (4, 52));
    assert!(report
        .layers
        .iter()
        .all(|(_, l)| l.scale > 0.0 && l.clip <= l.max && l.values > 0));

    let m = read_model(&out, Some(&done.content_hash)).unwrap();
    assert_eq!(m.metadata.weight_format, WeightFormat::FoldedInt8Static);
    assert!(m
        .metadata
        .provenance
        .source
        .contains("--calibrate (4 images"));
    let stored: Vec<(&String, f32)> = m
        .tensors
        .iter()
        .filter(|(n, _)| n.ends_with(".input_scale"))
        .map(|(n, t)| (n, t.to_vec1::<f32>().unwrap()[0]))
        .collect();
    assert_eq!(stored.len(), 52);
    assert!(!stored.iter().any(|(n, _)| n.starts_with("conv1.")));
    let model = DlrModel::load(&out, None, &Device::Cpu).unwrap();
    for ((name, scaling), (layer, found)) in
        model.network.int8_scalings().iter().zip(&report.layers)
    {
        assert_eq!(name, layer);
        assert_eq!(*scaling, ActivationScaling::Static(found.scale));
    }

    // A file whose input scale is zero is refused at load, naming the tensor.
    let tensors: Vec<(String, StoredTensor)> = m
        .tensors
        .iter()
        .map(|(name, t)| {
            let stored = match m.int8.get(name) {
                Some(q) => StoredTensor::Int8(q.clone()),
                None if name == "layer2.1.conv2.input_scale" => StoredTensor::Float(
                    Tensor::new(&[0f32], &Device::Cpu).unwrap(),
                    StoredType::F32,
                ),
                None => StoredTensor::Float(t.clone(), StoredType::F32),
            };
            (name.clone(), stored)
        })
        .collect();
    let broken = dir.path().join("broken.gguf");
    write_stored_model(&broken, &m.metadata, tensors).unwrap();
    let e = DlrModel::load(&broken, None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer2.1.conv2.input_scale") && e.contains("positive finite"),
        "{e}"
    );

    // No images, an image that does not decode, and --calibrate for f16: refused, named, and
    // nothing written.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let never = dir.path().join("never.gguf");
    let with = |dir: &Path, target| {
        let c = Calibration {
            dir: dir.to_path_buf(),
            percentile: 99.99,
        };
        quantize_model_with(&f32_path, target, Some(&c), &never, Some("2026"))
            .unwrap_err()
            .to_string()
    };
    assert!(with(&empty, Target::Q8).contains("no calibration images"));
    std::fs::write(
        images.join("zz-damaged.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    assert!(with(&images, Target::Q8).contains("zz-damaged.png"));
    assert!(with(&images, Target::F16).contains("does not apply to --to f16"));
    assert!(!never.exists());
}
