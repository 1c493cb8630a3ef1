//! The built-in demo model: it assembles to the manifest's hash, it separates held-out
//! synthetic exams (seeds training never saw, ROI = the lesion box, frame at 35 s after
//! injection) with AUC >= 0.95, and the recipe that made it trains it again.

use candle_core::Device;
use ceusd::capture::synthetic::LesionKind;
use ceusd::eval::stats::{auc, Case};
use ceusd::model::demo::{demo_model, manifest};
use ceusd::model::preprocess::resize_gray;
use ceusd::train::demo::{synthetic_roi, HELD_OUT_SEEDS};

const HELD_OUT_EXAMS: u64 = 25;

#[test]
fn the_demo_model_assembles_to_its_manifest_hash_and_says_what_it_is() {
    let model = demo_model(&Device::Cpu).unwrap();
    let m = manifest().unwrap();
    assert_eq!(model.identity.content_hash, m.content_hash);
    assert!(model.identity.trained);
    assert!(model.identity.intended_use.contains("not for clinical use"));
    assert!(model
        .metadata
        .provenance
        .training_data
        .contains("synthetic"));
}

#[test]
fn the_demo_model_separates_held_out_synthetic_exams() {
    let model = demo_model(&Device::Cpu).unwrap();
    let meta = &model.metadata;
    let mut cases = Vec::new();
    for seed in HELD_OUT_SEEDS..HELD_OUT_SEEDS + HELD_OUT_EXAMS {
        for kind in [LesionKind::Pdac, LesionKind::Cp] {
            let roi = synthetic_roi(kind, seed, 35.0).unwrap().plain();
            let input = resize_gray(&roi, meta.input_size, meta.resize_filter).unwrap();
            let out = model.forward_images(&[input]).unwrap();
            let score = model.scores(&out).unwrap()[0].score as f64;
            cases.push(Case {
                score,
                positive: kind == LesionKind::Pdac,
            });
        }
    }
    let auc = auc(&cases).unwrap();
    let correct = cases
        .iter()
        .filter(|c| (c.score >= meta.threshold as f64) == c.positive)
        .count();
    eprintln!(
        "held-out synthetic exams: AUC {auc:.4}, {correct} of {} right at threshold {}",
        cases.len(),
        meta.threshold
    );
    assert!(auc >= 0.95, "held-out AUC {auc}");
    assert!(
        correct * 10 >= cases.len() * 9,
        "{correct} of {} right",
        cases.len()
    );
}
