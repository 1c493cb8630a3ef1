//! The demo model's recipe (`ceusd model build-demo`); the model itself, as the binary carries
//! it, is `model::demo`.
//!
//! It is the seeded ResNet-50 (`model init --seed 7`, generated bit for bit on every platform)
//! with a head trained by `ceusd train --mode head` on regions of interest from the synthetic
//! scanner, PDAC-like against CP-like exams. The repository holds only the trained head
//! (`models/demo/head.safetensors`, f16, 2 MB) and a manifest with the metadata and the content
//! hash of the assembled model; the binary carries both, assembles the model in memory and
//! refuses it if the hash differs. `ceusd model build-demo` re-runs the whole recipe.
//!
//! It has never seen a patient: not for clinical use.

use std::collections::HashMap;

use candle_core::{DType, Tensor};

use crate::capture::frame::LumaRange;
use crate::capture::source::Pacing;
use crate::capture::synthetic::{LesionKind, SyntheticConfig, SyntheticScanner};
use crate::model::demo::{assemble, sha256_hex, DemoManifest, BACKBONE_SEED};
use crate::model::file::{content_hash_of, StoredType};
use crate::model::init::seeded_tensors;
use crate::model::metadata::ModelMetadata;
use crate::model::{ModelError, ModelIdentity};
use crate::roi::Roi;

use super::augment::RoiCrop;
use super::data::{Split, TrainCase};
use super::{train, NamedTensors, Progress, TrainConfig, TrainError, TrainMode, TrainOutcome};

/// Synthetic exams per kind for training and for validation (early stopping).
pub const TRAIN_EXAMS: u64 = 40;
pub const VALIDATION_EXAMS: u64 = 10;
/// Seeds of training exams start here, validation exams at `VALIDATION_SEEDS`; held-out
/// evaluation uses seeds from `HELD_OUT_SEEDS`, which training never sees.
pub const TRAIN_SEEDS: u64 = 1;
pub const VALIDATION_SEEDS: u64 = 1001;
pub const HELD_OUT_SEEDS: u64 = 5001;
/// Seconds after injection of the frames taken from each training exam: the key-frame window.
pub const FRAME_TIMES_S: [f64; 3] = [31.0, 35.0, 39.0];
const RECIPE: &str = "ceusd demo recipe 1";

/// The synthetic exam's gray ROI (the lesion box on the CEUS pane) at `after_injection_s`.
pub fn synthetic_roi(
    kind: LesionKind,
    seed: u64,
    after_injection_s: f64,
) -> Result<RoiCrop, String> {
    let config = SyntheticConfig::new(kind, seed);
    let index = ((config.injection_s + after_injection_s) * config.fps).round() as u64;
    let mut scanner = SyntheticScanner::new(config, Pacing::AsFastAsPossible)?;
    let frame = scanner.frame(index);
    let roi: Roi = scanner.truth().lesion_ceus;
    let picture = frame
        .gray_region(&Roi::full(frame.width, frame.height), LumaRange::Full)
        .map_err(|e| e.to_string())?;
    Ok(RoiCrop::from_picture(&picture, &roi))
}

/// The training and validation cases of the recipe.
pub fn recipe_cases(mut progress: impl FnMut(usize, usize)) -> Result<Vec<TrainCase>, TrainError> {
    let mut plan = Vec::new();
    for (cohort, first, count) in [
        ("train", TRAIN_SEEDS, TRAIN_EXAMS),
        ("validation", VALIDATION_SEEDS, VALIDATION_EXAMS),
    ] {
        for seed in first..first + count {
            for kind in [LesionKind::Pdac, LesionKind::Cp] {
                let times: &[f64] = if cohort == "train" {
                    &FRAME_TIMES_S
                } else {
                    &[35.0]
                };
                for &t in times {
                    plan.push((cohort, seed, kind, t));
                }
            }
        }
    }
    let total = plan.len();
    let mut cases = Vec::with_capacity(total);
    for (n, (cohort, seed, kind, t)) in plan.into_iter().enumerate() {
        let id = format!("{cohort}-{kind:?}-{seed}-{t}s");
        let crop = synthetic_roi(kind, seed, t).map_err(|reason| TrainError::Case {
            case: id.clone(),
            reason,
        })?;
        cases.push(TrainCase {
            id,
            crop,
            positive: kind == LesionKind::Pdac,
            cohort: cohort.to_string(),
            admission_date: None,
        });
        progress(n + 1, total);
    }
    Ok(cases)
}

fn backbone() -> Result<(ModelMetadata, NamedTensors, ModelIdentity), ModelError> {
    let meta = crate::model::init::seeded_metadata(BACKBONE_SEED, 3);
    let tensors = seeded_tensors(&meta, BACKBONE_SEED)?;
    let identity = ModelIdentity::of(
        &meta,
        content_hash_of(&meta, &tensors, StoredType::F32)?,
        None,
    );
    Ok((meta, tensors, identity))
}

/// Runs the recipe: synthetic cases, then head-only training from the seeded backbone.
pub fn build(
    mut on_cases: impl FnMut(usize, usize),
    progress: impl FnMut(Progress),
) -> Result<TrainOutcome, TrainError> {
    let cases = recipe_cases(&mut on_cases)?;
    let (meta, tensors, identity) = backbone()?;
    let mut cfg = TrainConfig::new(
        TrainMode::Head,
        "ceusd-demo-synthetic",
        &format!(
            "synthetic scanner exams (ceusd synth), PDAC-like vs CP-like, seeds {}..{} for \
             training and {}..{} for validation, ROI = the lesion box on the CEUS pane, frames \
             at {:?} s after injection",
            TRAIN_SEEDS,
            TRAIN_SEEDS + TRAIN_EXAMS - 1,
            VALIDATION_SEEDS,
            VALIDATION_SEEDS + VALIDATION_EXAMS - 1,
            FRAME_TIMES_S
        ),
    );
    cfg.split = Split::Cohort("validation".into());
    cfg.seed = 1;
    cfg.created = Some("2026-11-27T00:00:00Z".into());
    cfg.intended_use = Some(
        "DEMONSTRATION ONLY: trained on synthetic images from ceusd's simulator, never on \
         patients; its scores mean nothing clinically; not for clinical use"
            .into(),
    );
    let mut outcome = train(&meta, tensors, &identity, &cases, &cfg, progress)?;
    // The recipe, not the build's version, names what made it: the hash stays the same
    // across releases as long as the recipe does.
    outcome.metadata.provenance.software = RECIPE.to_string();
    Ok(outcome)
}

/// Writes the recipe's artefacts: the head (f16 safetensors) and the manifest, returning the
/// manifest. The assembled model's hash is computed from the f16-rounded head, exactly as
/// `demo_model` will assemble it.
pub fn write_artefacts(
    outcome: &TrainOutcome,
    dir: &std::path::Path,
) -> Result<DemoManifest, TrainError> {
    let io = |e: std::io::Error| TrainError::Data {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let head: HashMap<String, Tensor> = outcome
        .tensors
        .iter()
        .filter(|(n, _)| n.starts_with("fc"))
        .map(|(n, t)| Ok((n.clone(), t.to_dtype(DType::F16)?)))
        .collect::<Result<_, candle_core::Error>>()?;
    let head_path = dir.join("head.safetensors");
    let tmp = dir.join(".head.safetensors.tmp");
    candle_core::safetensors::save(&head, &tmp)?;
    let bytes = std::fs::read(&tmp).map_err(io)?;
    crate::atomic_file::write_atomically(&head_path, |w| std::io::Write::write_all(w, &bytes))
        .map_err(io)?;
    let _ = std::fs::remove_file(&tmp);
    let assembled = assemble(&outcome.metadata, &bytes)?;
    let manifest = DemoManifest {
        recipe: RECIPE.to_string(),
        backbone_seed: BACKBONE_SEED,
        head_sha256: sha256_hex(&bytes),
        content_hash: content_hash_of(&outcome.metadata, &assembled, StoredType::F32)?,
        metadata: outcome.metadata.clone(),
        command: "ceusd model build-demo --out-dir models/demo".into(),
    };
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| io(std::io::Error::other(e)))?;
    crate::atomic_file::write_atomically(&dir.join("manifest.json"), |w| {
        std::io::Write::write_all(w, (json + "\n").as_bytes())
    })
    .map_err(io)?;
    Ok(manifest)
}
