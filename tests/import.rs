//! Importing trained checkpoints: torchvision names, the common head layouts, DataParallel
//! prefixes, and errors that name the tensor at fault.

use candle_core::{DType, Device, Tensor};
use ceusd::model::file::read_model;
use ceusd::model::import::{import_checkpoint, ImportOptions};
use ceusd::model::import_backbone::import_backbone;
use ceusd::model::init::{seeded_head, seeded_metadata, seeded_tensors};
use ceusd::model::{DlrModel, HeadActivation, ResizeFilter, StoredType, Training};
use std::collections::HashMap;
use std::path::Path;

fn options() -> ImportOptions {
    ImportOptions {
        name: Some("test-import".into()),
        input_channels: None,
        mean: None,
        std: None,
        classes: vec!["CP".into(), "PDAC".into()],
        positive_class: "PDAC".into(),
        threshold: 0.5,
        head_activation: None,
        resize_filter: ResizeFilter::Bilinear,
        training_data: "synthetic test tensors".into(),
        intended_use: "tests".into(),
        stored: StoredType::F32,
        created: "2026-01-01T00:00:00Z".into(),
    }
}

/// The seeded model's tensors under a checkpoint's names.
fn checkpoint(channels: u32, rename: &[(&str, &str)], prefix: &str) -> HashMap<String, Tensor> {
    let meta = seeded_metadata(21, channels);
    let mut out = HashMap::new();
    for (name, t) in seeded_tensors(&meta, 21).unwrap() {
        let mut renamed = name.clone();
        for (from, to) in rename {
            if let Some(rest) = name.strip_prefix(from) {
                renamed = format!("{to}{rest}");
            }
        }
        if renamed.ends_with("running_var") {
            // BatchNorm's step counter, present in every real state dict.
            let counter = renamed.replace("running_var", "num_batches_tracked");
            out.insert(
                format!("{prefix}{counter}"),
                Tensor::new(1000i64, &Device::Cpu).unwrap(),
            );
        }
        out.insert(format!("{prefix}{renamed}"), t);
    }
    out
}

fn save(dir: &Path, name: &str, tensors: &HashMap<String, Tensor>) -> std::path::PathBuf {
    let p = dir.join(name);
    candle_core::safetensors::save(tensors, &p).unwrap();
    p
}

fn probe_image() -> image::GrayImage {
    image::GrayImage::from_fn(224, 224, |x, y| {
        image::Luma([((x * 5 + y * 11) % 230) as u8])
    })
}

#[test]
fn a_dataparallel_sequential_head_checkpoint_imports_and_scores_like_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(3, &[("fc1.", "fc.0."), ("fc2.", "fc.3.")], "module.");
    let src = save(dir.path(), "dlr.safetensors", &ck);
    let out = dir.path().join("m.gguf");
    let report = import_checkpoint(&src, &out, &options()).unwrap();
    assert_eq!(report.prefix_stripped.as_deref(), Some("module."));
    assert!(
        report.head_layout.contains("fc.0/fc.3"),
        "{}",
        report.head_layout
    );
    assert_eq!(report.head_activation, "relu");
    assert_eq!(report.input_channels, 3);
    assert_eq!(report.head_hidden, 512);
    assert!(report.ignored.is_empty(), "{:?}", report.ignored);

    let imported = DlrModel::load(&out, Some(&report.content_hash), &Device::Cpu).unwrap();
    assert!(imported.identity.trained);
    assert_eq!(imported.metadata.mean, vec![0.485, 0.456, 0.406]);
    let original = DlrModel::seeded(21, 3, &Device::Cpu).unwrap();
    let img = [probe_image()];
    let a = imported
        .scores(&imported.forward_images(&img).unwrap())
        .unwrap();
    let b = original
        .scores(&original.forward_images(&img).unwrap())
        .unwrap();
    assert_eq!(a[0].probabilities, b[0].probabilities);
}

#[test]
fn a_layout_that_hides_the_activation_needs_it_stated() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(3, &[], "");
    let src = save(dir.path(), "fc12.safetensors", &ck);
    let out = dir.path().join("m.gguf");
    let e = import_checkpoint(&src, &out, &options())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--head-activation") && e.contains("fc1/fc2"),
        "{e}"
    );
    assert!(!out.exists(), "nothing may be written on error");

    let opts = ImportOptions {
        head_activation: Some(HeadActivation::None),
        ..options()
    };
    let report = import_checkpoint(&src, &out, &opts).unwrap();
    assert_eq!(report.head_activation, "none");
    let m = DlrModel::load(&out, None, &Device::Cpu).unwrap();
    assert_eq!(m.metadata.head_activation, HeadActivation::None);
}

#[test]
fn a_plain_torchvision_classifier_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut ck = checkpoint(3, &[], "");
    ck.retain(|k, _| !k.starts_with("fc"));
    ck.insert(
        "fc.weight".into(),
        Tensor::zeros((1000, 2048), DType::F32, &Device::Cpu).unwrap(),
    );
    ck.insert(
        "fc.bias".into(),
        Tensor::zeros(1000, DType::F32, &Device::Cpu).unwrap(),
    );
    let src = save(dir.path(), "tv.safetensors", &ck);
    let e = import_checkpoint(&src, &dir.path().join("m.gguf"), &options())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("single Linear layer 'fc'") && e.contains("--backbone-only"),
        "{e}"
    );
}

#[test]
fn missing_and_misshapen_tensors_are_named_with_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let rename = [("fc1.", "fc.0."), ("fc2.", "fc.3.")];

    let mut ck = checkpoint(3, &rename, "");
    ck.remove("layer2.3.bn2.running_mean");
    let src = save(dir.path(), "missing.safetensors", &ck);
    let e = import_checkpoint(&src, &out, &options())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer2.3.bn2.running_mean") && e.contains("missing"),
        "{e}"
    );

    let mut ck = checkpoint(3, &rename, "");
    ck.insert(
        "layer1.1.conv2.weight".into(),
        Tensor::zeros((64, 64, 5, 5), DType::F32, &Device::Cpu).unwrap(),
    );
    let src = save(dir.path(), "shape.safetensors", &ck);
    let e = import_checkpoint(&src, &out, &options())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer1.1.conv2.weight")
            && e.contains("[64, 64, 5, 5]")
            && e.contains("[64, 64, 3, 3]"),
        "{e}"
    );

    // The user says 1 channel, the checkpoint's stem takes 3.
    let ck = checkpoint(3, &rename, "");
    let src = save(dir.path(), "three.safetensors", &ck);
    let opts = ImportOptions {
        input_channels: Some(1),
        ..options()
    };
    let e = import_checkpoint(&src, &out, &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conv1.weight") && e.contains("[64, 1, 7, 7]") && e.contains("[64, 3, 7, 7]"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn a_gray_network_needs_its_normalisation_stated() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(1, &[("fc1.", "fc.0."), ("fc2.", "fc.3.")], "");
    let src = save(dir.path(), "gray.safetensors", &ck);
    let out = dir.path().join("m.gguf");
    let e = import_checkpoint(&src, &out, &options())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--mean") && e.contains("--std"), "{e}");
    let opts = ImportOptions {
        mean: Some(vec![0.3]),
        std: Some(vec![0.2]),
        ..options()
    };
    let report = import_checkpoint(&src, &out, &opts).unwrap();
    assert_eq!(report.input_channels, 1);
    let m = DlrModel::load(&out, None, &Device::Cpu).unwrap();
    assert_eq!(
        (m.metadata.mean.clone(), m.metadata.std.clone()),
        (vec![0.3], vec![0.2])
    );
}

#[test]
fn unknown_checkpoint_formats_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("weights.h5");
    std::fs::write(&p, b"not a checkpoint").unwrap();
    let e = import_checkpoint(&p, &dir.path().join("m.gguf"), &options())
        .unwrap_err()
        .to_string();
    assert!(e.contains("weights.h5") && e.contains(".pth"), "{e}");
    let p = dir.path().join("garbage.pth");
    std::fs::write(&p, b"PK garbage").unwrap();
    let e = import_checkpoint(&p, &dir.path().join("m.gguf"), &options())
        .unwrap_err()
        .to_string();
    assert!(e.contains("garbage.pth"), "{e}");
}

/// Writes a PyTorch `torch.save` zip file from a safetensors file with
/// `tools/make_torch_checkpoint.py` (Python standard library only; PyTorch is not needed).
fn torch_save(src: &Path, out: &Path, extra: &[&str]) {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/make_torch_checkpoint.py");
    let status = std::process::Command::new("python3")
        .arg(tool)
        .arg(src)
        .arg("--out")
        .arg(out)
        .args(extra)
        .status()
        .expect("python3 must be installed to write PyTorch test checkpoints");
    assert!(status.success(), "make_torch_checkpoint.py failed");
}

#[test]
fn pytorch_checkpoints_import_bare_and_nested() {
    let dir = tempfile::tempdir().unwrap();
    let plain: HashMap<String, Tensor> = checkpoint(3, &[], "")
        .into_iter()
        .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
        .collect();
    let src = save(dir.path(), "plain.safetensors", &plain);
    let original = DlrModel::seeded(21, 3, &Device::Cpu).unwrap();
    let img = [probe_image()];
    let want = original
        .scores(&original.forward_images(&img).unwrap())
        .unwrap();

    // A training checkpoint: DataParallel prefix, state dict nested under "state_dict" beside
    // the epoch and best AUC, BatchNorm step counters, an nn.Sequential head.
    let nested = dir.path().join("checkpoint.pth");
    torch_save(
        &src,
        &nested,
        &[
            "--prefix",
            "module.",
            "--nest",
            "state_dict",
            "--rename",
            "fc1.=fc.0.",
            "--rename",
            "fc2.=fc.3.",
            "--add-num-batches-tracked",
        ],
    );
    let out = dir.path().join("nested.gguf");
    let report = import_checkpoint(&nested, &out, &options()).unwrap();
    assert!(
        report.format.contains("under 'state_dict'"),
        "{}",
        report.format
    );
    assert_eq!(report.prefix_stripped.as_deref(), Some("module."));
    assert!(report.head_layout.contains("fc.0/fc.3"));
    let m = DlrModel::load(&out, None, &Device::Cpu).unwrap();
    let got = m.scores(&m.forward_images(&img).unwrap()).unwrap();
    assert_eq!(got[0].probabilities, want[0].probabilities);

    // A bare state dict with fc1/fc2 (activation stated).
    let bare = dir.path().join("bare.pt");
    torch_save(&src, &bare, &[]);
    let opts = ImportOptions {
        head_activation: Some(HeadActivation::Relu),
        ..options()
    };
    let out = dir.path().join("bare.gguf");
    let report = import_checkpoint(&bare, &out, &opts).unwrap();
    assert_eq!(report.format, "PyTorch state dict");
    let m = DlrModel::load(&out, None, &Device::Cpu).unwrap();
    let got = m.scores(&m.forward_images(&img).unwrap()).unwrap();
    assert_eq!(got[0].probabilities, want[0].probabilities);
}

/// torchvision's `resnet50().state_dict()`: the seeded backbone under torchvision's names
/// (with BatchNorm step counters when `counters`) and the 1000-class ImageNet classifier `fc`.
fn torchvision_resnet50(counters: bool) -> HashMap<String, Tensor> {
    let mut ck = checkpoint(3, &[], "");
    ck.retain(|k, _| !k.starts_with("fc1.") && !k.starts_with("fc2."));
    if !counters {
        ck.retain(|k, _| !k.ends_with("num_batches_tracked"));
    }
    let classifier = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) * 1e-3).collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    };
    ck.insert("fc.weight".into(), classifier(&[1000, 2048]));
    ck.insert("fc.bias".into(), classifier(&[1000]));
    ck
}

fn tensor_values(file: &ceusd::model::ModelFile, name: &str) -> Vec<f32> {
    let (_, t) = file.tensors.iter().find(|(n, _)| n == name).unwrap();
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn an_imagenet_resnet50_imports_as_a_backbone_under_an_untrained_head() {
    let dir = tempfile::tempdir().unwrap();
    let src = save(
        dir.path(),
        "resnet50.safetensors",
        &torchvision_resnet50(true),
    );
    let out = dir.path().join("backbone.gguf");
    let report = import_backbone(&src, &out, &options(), 5).unwrap();
    let dropped = report.classifier_dropped.clone().unwrap_or_default();
    assert!(
        dropped.contains("1000-class") && dropped.contains("fc"),
        "{dropped}"
    );
    assert_eq!(report.head_seed, Some(5));
    assert_eq!(
        (report.head_hidden, report.head_activation.as_str()),
        (512, "relu")
    );

    let model = DlrModel::load(&out, Some(&report.content_hash), &Device::Cpu).unwrap();
    assert_eq!(model.identity.training, Training::HeadUntrained);
    assert!(!model.identity.trained && model.identity.not_for_clinical_use);
    assert!(model.metadata.head_untrained);
    let source = &model.metadata.provenance.source;
    assert!(
        source.contains("resnet50.safetensors") && source.contains("seed 5"),
        "{source}"
    );

    // The backbone is the checkpoint's; the head is the seeded one.
    let file = read_model(&out, None).unwrap();
    let original_conv1 = seeded_tensors(&seeded_metadata(21, 3), 21).unwrap();
    let conv1: Vec<f32> = original_conv1[0]
        .1
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(original_conv1[0].0, "conv1.weight");
    assert_eq!(tensor_values(&file, "conv1.weight"), conv1);
    for (name, t) in seeded_head(512, 5).unwrap() {
        let want: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(tensor_values(&file, &name), want, "{name}");
    }

    // The same seed gives the same file; another seed another head on the same backbone.
    let again = import_backbone(&src, &dir.path().join("again.gguf"), &options(), 5).unwrap();
    assert_eq!(again.content_hash, report.content_hash);
    let other_path = dir.path().join("other.gguf");
    let other = import_backbone(&src, &other_path, &options(), 6).unwrap();
    assert_ne!(other.content_hash, report.content_hash);
    let other_file = read_model(&other_path, None).unwrap();
    assert_ne!(
        tensor_values(&other_file, "fc1.weight"),
        tensor_values(&file, "fc1.weight")
    );
    assert_eq!(tensor_values(&other_file, "conv1.weight"), conv1);
}

#[test]
fn an_imagenet_resnet50_saved_by_torch_imports_like_its_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let plain = save(
        dir.path(),
        "plain.safetensors",
        &torchvision_resnet50(false),
    );
    let with_counters = save(
        dir.path(),
        "counted.safetensors",
        &torchvision_resnet50(true),
    );
    // As `torch.save(resnet50(weights=...).state_dict(), "resnet50.pth")` writes it: step
    // counters and the module metadata nn.Module.state_dict() attaches.
    let pth = dir.path().join("resnet50.pth");
    torch_save(&plain, &pth, &["--add-num-batches-tracked", "--metadata"]);
    let from_pth = dir.path().join("from-pth.gguf");
    let report = import_backbone(&pth, &from_pth, &options(), 9).unwrap();
    assert_eq!(report.format, "PyTorch state dict");
    assert!(report.classifier_dropped.is_some());
    let from_safetensors = dir.path().join("from-safetensors.gguf");
    import_backbone(&with_counters, &from_safetensors, &options(), 9).unwrap();

    let (a, b) = (
        read_model(&from_pth, None).unwrap(),
        read_model(&from_safetensors, None).unwrap(),
    );
    assert_eq!(a.metadata.training(), Training::HeadUntrained);
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, _) in &a.tensors {
        assert_eq!(tensor_values(&a, name), tensor_values(&b, name), "{name}");
    }
}

#[test]
fn backbone_only_refuses_a_trained_dlr_head_and_other_networks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");

    let dlr = checkpoint(3, &[("fc1.", "fc.0."), ("fc2.", "fc.3.")], "module.");
    let src = save(dir.path(), "dlr.safetensors", &dlr);
    let e = import_backbone(&src, &out, &options(), 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already has a DLR head") && e.contains("fc.0/fc.3") && e.contains("discard"),
        "{e}"
    );

    // Not ResNet-50: a tensor gone, a fourth block in layer4 (as deeper ResNets have more
    // blocks), a 3x3 where ResNet-50 has a 1x1. Each is named.
    let mut other = torchvision_resnet50(true);
    other.remove("layer2.3.bn2.running_mean");
    other.insert(
        "layer4.3.conv1.weight".into(),
        Tensor::zeros((512, 2048, 1, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    other.insert(
        "layer1.0.conv1.weight".into(),
        Tensor::zeros((64, 64, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let src = save(dir.path(), "other.safetensors", &other);
    let e = import_backbone(&src, &out, &options(), 1)
        .unwrap_err()
        .to_string();
    for named in [
        "not a torchvision ResNet-50",
        "1 tensor missing: layer2.3.bn2.running_mean",
        "1 tensor not in ResNet-50: layer4.3.conv1.weight",
        "layer1.0.conv1.weight [64, 64, 3, 3] (ResNet-50: [64, 64, 1, 1])",
    ] {
        assert!(e.contains(named), "'{named}' not in: {e}");
    }

    // A classifier that does not read ResNet-50's 2048 features.
    let mut narrow = torchvision_resnet50(false);
    narrow.insert(
        "fc.weight".into(),
        Tensor::zeros((1000, 512), DType::F32, &Device::Cpu).unwrap(),
    );
    let src = save(dir.path(), "narrow.safetensors", &narrow);
    let e = import_backbone(&src, &out, &options(), 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("fc.weight") && e.contains("[1000, 512]") && e.contains("[1000, 2048]"),
        "{e}"
    );
    assert!(!out.exists(), "nothing may be written on error");
}
