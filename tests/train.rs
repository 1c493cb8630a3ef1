//! `ceusd train`: head-only and full fine-tuning on real files (PNG folder trees and cohort
//! CSVs written here from the synthetic scanner), the validation split, and refused input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ceusd::capture::synthetic::LesionKind;
use ceusd::model::file::{read_model, write_model, StoredType};
use ceusd::model::init::{seeded_metadata, seeded_tensors};
use ceusd::model::Training;
use ceusd::train::data::{split_cases, Split, TrainCase};
use ceusd::train::demo::synthetic_roi;

fn ceusd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// `per_class` synthetic lesion ROIs per class as PNGs in PDAC/ and CP/.
fn roi_folder(dir: &Path, first_seed: u64, per_class: u64) -> PathBuf {
    let root = dir.join("rois");
    for (kind, folder) in [(LesionKind::Pdac, "PDAC"), (LesionKind::Cp, "CP")] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
        for seed in first_seed..first_seed + per_class {
            let roi = synthetic_roi(kind, seed, 35.0).unwrap().plain();
            roi.save(root.join(folder).join(format!("{seed}.png")))
                .unwrap();
        }
    }
    root
}

fn tensor(f: &ceusd::model::ModelFile, name: &str) -> Vec<f32> {
    f.tensors
        .iter()
        .find(|(n, _)| n == name)
        .unwrap()
        .1
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn seeded_model(dir: &Path, size: u32) -> PathBuf {
    seeded_model_with(dir, size, false)
}

/// A seeded model, marked head untrained (as `model import --backbone-only` writes) when
/// `head_untrained`.
fn seeded_model_with(dir: &Path, size: u32, head_untrained: bool) -> PathBuf {
    let mut meta = seeded_metadata(7, 3);
    meta.input_size = size;
    meta.head_untrained = head_untrained;
    let tensors = seeded_tensors(&meta, 7).unwrap();
    let path = dir.join(format!("base{size}.gguf"));
    write_model(&path, &meta, tensors, StoredType::F32).unwrap();
    path
}

#[test]
fn head_training_learns_the_classes_and_leaves_the_backbone_alone() {
    let dir = tempfile::tempdir().unwrap();
    let base = seeded_model(dir.path(), 224);
    let rois = roi_folder(dir.path(), 200, 12);
    let out = dir.path().join("tuned.gguf");
    let history = dir.path().join("history.json");
    let stdout = ok(&ceusd(&[
        "train",
        "--model",
        base.to_str().unwrap(),
        "--data",
        rois.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--mode",
        "head",
        "--split",
        "fraction:0.25",
        "--views",
        "2",
        "--epochs",
        "60",
        "--name",
        "site-tuned",
        "--describe-data",
        "synthetic ROIs for a test",
        "--history",
        history.to_str().unwrap(),
    ]));
    assert!(
        stdout.contains("18 training and 6 validation cases"),
        "{stdout}"
    );
    let before = read_model(&base, None).unwrap();
    let after = read_model(&out, None).unwrap();
    let p = &after.metadata.provenance;
    assert!(p.trained);
    assert_eq!(after.metadata.name, "site-tuned");
    assert!(
        p.training_data.contains("synthetic ROIs for a test")
            && p.training_data.contains("fraction:0.25"),
        "{}",
        p.training_data
    );
    assert!(
        p.source.contains("--mode head") && p.source.contains(&before.content_hash),
        "{}",
        p.source
    );
    for frozen in [
        "conv1.weight",
        "layer4.2.conv3.weight",
        "layer2.0.bn1.running_var",
    ] {
        assert_eq!(
            tensor(&before, frozen),
            tensor(&after, frozen),
            "{frozen} changed"
        );
    }
    assert_ne!(tensor(&before, "fc1.weight"), tensor(&after, "fc1.weight"));
    let epochs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&history).unwrap()).unwrap();
    assert!(!epochs.as_array().unwrap().is_empty());

    // The tuned model separates exams it never saw; the seeded base does not know the classes.
    let held_out = roi_folder(&dir.path().join("held-out"), 900, 8);
    let mut csv = String::from("image,label\n");
    for (folder, label) in [("PDAC", "PDAC"), ("CP", "CP")] {
        for seed in 900..908 {
            csv += &format!("{}/{seed}.png,{label}\n", held_out.join(folder).display());
        }
    }
    let cohort = dir.path().join("held-out.csv");
    std::fs::write(&cohort, csv).unwrap();
    let report = ok(&ceusd(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--data",
        cohort.to_str().unwrap(),
        "--out",
        dir.path().join("eval").to_str().unwrap(),
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let auc = report["cohorts"][0]["auc"].as_f64().unwrap();
    eprintln!("head-only tuned model, 16 held-out synthetic ROIs: AUC {auc}");
    assert!(auc >= 0.9, "held-out AUC {auc}");
}

/// Full fine-tuning on small (64x64) inputs to keep the test short: every part of the network
/// moves, BatchNorm's running statistics are updated, and the training loss falls.
#[test]
fn full_training_updates_the_backbone_and_batchnorm_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let base = seeded_model_with(dir.path(), 64, true);
    let rois = roi_folder(dir.path(), 300, 6);
    let out = dir.path().join("full.gguf");
    let history = dir.path().join("history.json");
    ok(&ceusd(&[
        "train",
        "--model",
        base.to_str().unwrap(),
        "--data",
        rois.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--mode",
        "full",
        "--split",
        "fraction:0.34",
        "--epochs",
        "6",
        "--patience",
        "6",
        "--batch",
        "4",
        "--lr",
        "3e-4",
        "--name",
        "full-test",
        "--describe-data",
        "synthetic ROIs",
        "--history",
        history.to_str().unwrap(),
    ]));
    let before = read_model(&base, None).unwrap();
    let after = read_model(&out, None).unwrap();
    assert!(after.metadata.provenance.source.contains("--mode full"));
    assert_eq!(before.metadata.training(), Training::HeadUntrained);
    assert_eq!(after.metadata.training(), Training::Trained);
    for moved in [
        "conv1.weight",
        "layer1.0.conv2.weight",
        "layer4.2.conv3.weight",
        "bn1.weight",
        "layer3.1.bn2.bias",
        "bn1.running_mean",
        "layer4.2.bn3.running_var",
        "fc2.weight",
    ] {
        assert_ne!(
            tensor(&before, moved),
            tensor(&after, moved),
            "{moved} did not change"
        );
    }
    let epochs: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&history).unwrap()).unwrap();
    let loss = |e: &serde_json::Value| e["train_loss"].as_f64().unwrap();
    eprintln!(
        "full fine-tuning, training loss by epoch: {:?}",
        epochs.iter().map(loss).collect::<Vec<_>>()
    );
    // Batches of 4 with dropout and fresh augmentation are noisy: compare the mean of the
    // first three epochs with the last three.
    let mean = |e: &[serde_json::Value]| e.iter().map(loss).sum::<f64>() / e.len() as f64;
    assert_eq!(epochs.len(), 6);
    assert!(
        mean(&epochs[3..]) < mean(&epochs[..3]),
        "the training loss falls"
    );
}

/// torchvision's `resnet50().state_dict()` as safetensors: a seeded backbone under
/// torchvision's names and the 1000-class classifier `fc`.
fn torchvision_resnet50(dir: &Path) -> PathBuf {
    let meta = seeded_metadata(7, 3);
    let mut tensors: std::collections::HashMap<String, candle_core::Tensor> =
        seeded_tensors(&meta, 7)
            .unwrap()
            .into_iter()
            .filter(|(name, _)| !name.starts_with("fc1.") && !name.starts_with("fc2."))
            .collect();
    let cpu = candle_core::Device::Cpu;
    let zeros = |shape: &[usize]| candle_core::Tensor::zeros(shape, candle_core::DType::F32, &cpu);
    tensors.insert("fc.weight".into(), zeros(&[1000, 2048]).unwrap());
    tensors.insert("fc.bias".into(), zeros(&[1000]).unwrap());
    let path = dir.join("resnet50-imagenet.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

/// `model import --backbone-only` marks the model head untrained in `inspect`, `analyze` and
/// its identity; `train --mode head` on it writes a model that is trained.
#[test]
fn an_imported_backbone_is_head_untrained_until_trained() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = torchvision_resnet50(dir.path());
    let base = dir.path().join("backbone.gguf");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let imported = ok(&ceusd(&[
        "model",
        "import",
        "--backbone-only",
        &path(&checkpoint),
        "--out",
        &path(&base),
        "--seed",
        "3",
        "--training-data",
        "ImageNet-1k",
    ]));
    assert!(
        imported.contains("dropped") && imported.contains("1000-class classifier"),
        "{imported}"
    );
    let inspected = ok(&ceusd(&["model", "inspect", &path(&base)]));
    assert!(inspected.contains("head untrained"), "{inspected}");

    let rois = roi_folder(dir.path(), 500, 4);
    let roi_png = rois.join("PDAC/500.png");
    let (w, h) = image::image_dimensions(&roi_png).unwrap();
    let roi = format!("0,0,{w},{h}");
    let analyze = |json: bool| {
        let mut args = vec!["analyze", roi_png.to_str().unwrap(), "--roi", &roi];
        args.extend(["--model", base.to_str().unwrap()]);
        if json {
            args.push("--json");
        }
        ok(&ceusd(&args))
    };
    let report: serde_json::Value = serde_json::from_str(&analyze(true)).unwrap();
    assert_eq!(report["model"]["training"], "head untrained");
    assert_eq!(report["model"]["trained"], false);
    assert!(
        report["warnings"].to_string().contains("untrained head"),
        "{}",
        report["warnings"]
    );
    let text = analyze(false);
    assert!(text.contains("[head untrained]"), "{text}");

    let tuned = dir.path().join("tuned.gguf");
    ok(&ceusd(&[
        "train",
        "--model",
        &path(&base),
        "--data",
        &path(&rois),
        "--out",
        &path(&tuned),
        "--mode",
        "head",
        "--split",
        "fraction:0.25",
        "--views",
        "1",
        "--epochs",
        "1",
        "--name",
        "from-imagenet",
        "--describe-data",
        "synthetic ROIs",
    ]));
    let after = read_model(&tuned, None).unwrap();
    assert!(!after.metadata.head_untrained);
    assert_eq!(after.metadata.training(), Training::Trained);
    let inspected = ok(&ceusd(&["model", "inspect", &path(&tuned)]));
    assert!(
        inspected.contains("trained       true") && !inspected.contains("untrained"),
        "{inspected}"
    );
}

fn case(id: &str, positive: bool, cohort: &str, date: Option<&str>) -> TrainCase {
    TrainCase {
        id: id.into(),
        crop: ceusd::train::augment::RoiCrop {
            gray: image::GrayImage::new(4, 4),
            roi: ceusd::roi::Roi::new(0, 0, 4, 4),
        },
        positive,
        cohort: cohort.into(),
        admission_date: date.map(str::to_string),
    }
}

#[test]
fn splits_by_date_cohort_or_seeded_fraction() {
    let cases = vec![
        case("a", true, "A", Some("2019-03-01")),
        case("b", false, "A", Some("2019-05-01")),
        case("c", true, "B", Some("2020-02-01")),
        case("d", false, "B", Some("2020-01-01")),
        case("e", true, "A", Some("2020-06-01")),
    ];
    let by_date = split_cases(&cases, &"date:2020-01-01".parse().unwrap(), 1).unwrap();
    assert_eq!(by_date, (vec![0, 1], vec![2, 3, 4]));
    let by_cohort = split_cases(&cases, &Split::Cohort("B".into()), 1).unwrap();
    assert_eq!(by_cohort, (vec![0, 1, 4], vec![2, 3]));
    let many: Vec<TrainCase> = (0..40)
        .map(|i| case(&i.to_string(), i % 4 != 0, "A", None))
        .collect();
    let (train, valid) = split_cases(&many, &Split::Fraction(0.2), 7).unwrap();
    assert_eq!(valid.len(), 8, "20% of each class: 6 of 30 and 2 of 10");
    assert_eq!(valid.iter().filter(|&&i| i % 4 == 0).count(), 2);
    assert_eq!(train.len() + valid.len(), 40);
    assert_eq!(
        split_cases(&many, &Split::Fraction(0.2), 7).unwrap().1,
        valid,
        "seeded"
    );

    let e = split_cases(&cases, &Split::Cohort("C".into()), 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no case is in cohort 'C'"), "{e}");
    let e = split_cases(&cases, &"date:2020-03-01".parse().unwrap(), 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("validation set") && e.contains("both classes"),
        "{e}"
    );
    let mut undated = cases.clone();
    undated[2].admission_date = None;
    let e = split_cases(&undated, &"date:2020-01-01".parse().unwrap(), 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("case c") && e.contains("admission_date"), "{e}");
    assert!("fraction:1.5".parse::<Split>().is_err());
    assert!("random".parse::<Split>().is_err());
}

#[test]
fn bad_training_data_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let base = seeded_model(dir.path(), 64);
    let out = dir.path().join("never.gguf");
    let only_pdac = dir.path().join("only-pdac");
    std::fs::create_dir_all(only_pdac.join("PDAC")).unwrap();
    let run = |data: &Path| {
        let o = ceusd(&[
            "train",
            "--model",
            base.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--name",
            "x",
            "--describe-data",
            "x",
        ]);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let e = run(&only_pdac);
    assert!(e.contains("CP") && e.contains("PDAC/ and CP/"), "{e}");
    let rois = roi_folder(dir.path(), 1, 1);
    let csv = dir.path().join("cohort.csv");
    std::fs::write(
        &csv,
        format!(
            "case,image,roi,label\nbig,{},\"0,0,5000,10\",PDAC\n",
            rois.join("PDAC/1.png").display()
        ),
    )
    .unwrap();
    let e = run(&csv);
    assert!(e.contains("case big") && e.contains("outside"), "{e}");
    assert!(!out.exists());
}
