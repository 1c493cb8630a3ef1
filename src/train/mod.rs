//! `ceusd train`: fine-tuning a model file on a site's labeled cases.
//!
//! Two modes:
//! - `head`: the ResNet-50 stays as it is; each training case's pooled features are computed
//!   once per augmented view and cached, then only the head is trained (fast, little data);
//! - `full`: the backbone is unfrozen too, with BatchNorm in training mode (batch statistics,
//!   running statistics updated), images augmented afresh every epoch.
//!
//! Both use class-weighted cross-entropy, AdamW, a split by admission date, cohort or a seeded
//! fraction, and early stopping on the validation AUC; the best epoch's weights are written
//! with full provenance.

pub mod augment;
pub mod backbone;
pub mod data;
pub mod demo;
pub mod head;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use image::GrayImage;

use crate::eval::cohort::CohortError;
use crate::model::conv::ConvEngine;
use crate::model::metadata::ModelMetadata;
use crate::model::preprocess::resize_gray;
use crate::model::{DlrModel, ModelError, ModelIdentity};
use data::{split_cases, Split, TrainCase};
use head::{EpochRecord, FeatureSet, HeadTraining, HeadWeights};

pub use crate::model::NamedTensors;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Cohort(#[from] CohortError),
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    #[error("case {case}: {reason}")]
    Case { case: String, reason: String },
    #[error("split: {0}")]
    Split(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("training: {0}")]
    Candle(#[from] candle_core::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainMode {
    Head,
    Full,
}

impl std::str::FromStr for TrainMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "head" => Ok(TrainMode::Head),
            "full" => Ok(TrainMode::Full),
            other => Err(format!("mode '{other}': expected head or full")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub mode: TrainMode,
    pub split: Split,
    pub seed: u64,
    /// Head mode: augmented views cached per training case (the first is the plain ROI).
    pub views: usize,
    pub max_epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub patience: usize,
    /// Name of the new model.
    pub name: String,
    /// What the cases are, in words, for the model's provenance.
    pub data_description: String,
    /// Overrides the base model's intended-use statement.
    pub intended_use: Option<String>,
    /// RFC 3339 creation time to record (default: now).
    pub created: Option<String>,
}

impl TrainConfig {
    pub fn new(mode: TrainMode, name: &str, data_description: &str) -> Self {
        let head = mode == TrainMode::Head;
        Self {
            mode,
            split: Split::Fraction(0.2),
            seed: 1,
            views: 4,
            max_epochs: if head { 200 } else { 30 },
            batch_size: if head { 32 } else { 8 },
            learning_rate: if head { 1e-3 } else { 1e-4 },
            weight_decay: 1e-4,
            patience: if head { 20 } else { 5 },
            name: name.to_string(),
            data_description: data_description.to_string(),
            intended_use: None,
            created: None,
        }
    }
}

/// What training reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// Feature extraction (head mode) or a training step (full mode).
    Images {
        done: usize,
        total: usize,
    },
    Epoch(&'a EpochRecord),
}

/// A trained model, ready to write.
#[derive(Debug)]
pub struct TrainOutcome {
    pub metadata: ModelMetadata,
    pub tensors: Vec<(String, Tensor)>,
    pub history: Vec<EpochRecord>,
    pub best: EpochRecord,
    pub training_cases: usize,
    pub validation_cases: usize,
}

/// The network-sized input of a ROI crop view.
fn network_input(gray: &GrayImage, meta: &ModelMetadata) -> Result<GrayImage, ModelError> {
    resize_gray(gray, meta.input_size, meta.resize_filter)
}

/// Pooled features of `images`, in batches.
fn pooled_features(
    model: &DlrModel,
    images: &[GrayImage],
    done_before: usize,
    total: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<f32>, TrainError> {
    let mut out = Vec::with_capacity(images.len() * 2048);
    let mut done = done_before;
    for batch in images.chunks(8) {
        let forward = model.forward_images(batch)?;
        out.extend(forward.pooled.flatten_all()?.to_vec1::<f32>()?);
        done += batch.len();
        progress(Progress::Images { done, total });
    }
    Ok(out)
}

/// The tensor called `name`, or an error naming it.
pub(crate) fn named_tensor(tensors: &[(String, Tensor)], name: &str) -> Result<Tensor, ModelError> {
    tensors
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.clone())
        .ok_or_else(|| ModelError::MissingTensor {
            name: name.to_string(),
        })
}

fn head_of(tensors: &[(String, Tensor)]) -> Result<HeadWeights, TrainError> {
    let get = |name: &str| named_tensor(tensors, name);
    Ok(HeadWeights {
        fc1_weight: get("fc1.weight")?,
        fc1_bias: get("fc1.bias")?,
        fc2_weight: get("fc2.weight")?,
        fc2_bias: get("fc2.bias")?,
    })
}

/// Fine-tunes the base model (its metadata, tensors in the model file's names, and identity)
/// on `cases`.
pub fn train(
    base_meta: &ModelMetadata,
    base_tensors: Vec<(String, Tensor)>,
    base_identity: &ModelIdentity,
    cases: &[TrainCase],
    cfg: &TrainConfig,
    mut progress: impl FnMut(Progress),
) -> Result<TrainOutcome, TrainError> {
    if cfg.batch_size == 0 || cfg.max_epochs == 0 || cfg.views == 0 {
        return Err(TrainError::Split(
            "batch size, epochs and views must be at least 1".into(),
        ));
    }
    let (train_idx, valid_idx) = split_cases(cases, &cfg.split, cfg.seed)?;
    let (mut tensors, history) = match cfg.mode {
        TrainMode::Head => {
            let model = DlrModel::from_tensors(
                base_meta.clone(),
                base_identity.clone(),
                base_tensors.clone(),
                &Device::Cpu,
                ConvEngine::Im2col,
            )?;
            let mut train_images = Vec::with_capacity(train_idx.len() * cfg.views);
            let mut train_labels = Vec::with_capacity(train_idx.len() * cfg.views);
            for &i in &train_idx {
                for view in 0..cfg.views {
                    let crop = &cases[i].crop;
                    let gray = if view == 0 {
                        crop.plain()
                    } else {
                        crop.augmented(cfg.seed ^ crate::rng::spread(i as u64 * 64 + view as u64))
                    };
                    train_images.push(network_input(&gray, base_meta)?);
                    train_labels.push(cases[i].positive);
                }
            }
            let valid_images = valid_idx
                .iter()
                .map(|&i| network_input(&cases[i].crop.plain(), base_meta))
                .collect::<Result<Vec<_>, _>>()?;
            let total = train_images.len() + valid_images.len();
            let train_set = FeatureSet {
                features: pooled_features(&model, &train_images, 0, total, &mut progress)?,
                positive: train_labels,
            };
            let valid_set = FeatureSet {
                features: pooled_features(
                    &model,
                    &valid_images,
                    train_images.len(),
                    total,
                    &mut progress,
                )?,
                positive: valid_idx.iter().map(|&i| cases[i].positive).collect(),
            };
            let (trained, history) = head::train_head(
                &head_of(&base_tensors)?,
                &train_set,
                &valid_set,
                &HeadTraining {
                    max_epochs: cfg.max_epochs,
                    batch_size: cfg.batch_size,
                    learning_rate: cfg.learning_rate,
                    weight_decay: cfg.weight_decay,
                    patience: cfg.patience,
                    dropout: 0.5,
                    seed: cfg.seed,
                    positive_index: base_meta.positive_index(),
                    activation: base_meta.head_activation,
                },
                |e| progress(Progress::Epoch(e)),
            )?;
            let mut tensors = base_tensors;
            for (name, t) in [
                ("fc1.weight", trained.fc1_weight),
                ("fc1.bias", trained.fc1_bias),
                ("fc2.weight", trained.fc2_weight),
                ("fc2.bias", trained.fc2_bias),
            ] {
                if let Some(slot) = tensors.iter_mut().find(|(n, _)| n == name) {
                    slot.1 = t;
                }
            }
            (tensors, history)
        }
        TrainMode::Full => backbone::train_full(
            base_meta,
            base_tensors,
            cases,
            &train_idx,
            &valid_idx,
            cfg,
            &mut progress,
        )?,
    };
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let best = history
        .iter()
        .max_by(|a, b| {
            a.validation_auc
                .total_cmp(&b.validation_auc)
                .then(b.validation_loss.total_cmp(&a.validation_loss))
        })
        .cloned()
        .ok_or_else(|| TrainError::Split("no epoch ran".into()))?;
    let positives = |idx: &[usize]| idx.iter().filter(|&&i| cases[i].positive).count();
    let mut metadata = base_meta.clone();
    metadata.name = cfg.name.clone();
    let p = &mut metadata.provenance;
    p.trained = true;
    p.training_data = format!(
        "{}; {} training cases ({} {}, {} {}), {} validation cases ({} {}, {} {}), split {}; \
         best validation AUC {:.4} at epoch {}",
        cfg.data_description,
        train_idx.len(),
        positives(&train_idx),
        base_meta.positive_class,
        train_idx.len() - positives(&train_idx),
        base_meta.classes[1 - base_meta.positive_index()],
        valid_idx.len(),
        positives(&valid_idx),
        base_meta.positive_class,
        valid_idx.len() - positives(&valid_idx),
        base_meta.classes[1 - base_meta.positive_index()],
        cfg.split,
        best.validation_auc,
        best.epoch
    );
    p.source = format!(
        "ceusd train --mode {} from '{}' ({}), seed {}, {} views, batch {}, lr {}, weight decay {}, \
         at most {} epochs, patience {}",
        match cfg.mode {
            TrainMode::Head => "head",
            TrainMode::Full => "full",
        },
        base_identity.name,
        base_identity.content_hash,
        cfg.seed,
        cfg.views,
        cfg.batch_size,
        cfg.learning_rate,
        cfg.weight_decay,
        cfg.max_epochs,
        cfg.patience
    );
    p.created = match &cfg.created {
        Some(created) => created.clone(),
        None => crate::model::metadata::creation_time()?,
    };
    p.software = format!("ceusd {}", env!("CARGO_PKG_VERSION"));
    if let Some(u) = &cfg.intended_use {
        p.intended_use = u.clone();
    }
    Ok(TrainOutcome {
        metadata,
        tensors,
        best,
        history,
        training_cases: train_idx.len(),
        validation_cases: valid_idx.len(),
    })
}
