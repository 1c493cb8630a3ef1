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
pub mod base_model;
pub mod data;
pub mod demo;
pub mod error;
pub mod head;
pub mod settings;

use candle_core::{Device, Tensor};
use image::GrayImage;

use crate::model::conv::ConvEngine;
use crate::model::metadata::ModelMetadata;
use crate::model::{DlrModel, ModelError, ModelIdentity};
use base_model::{head_of, network_input, with_head};
use data::{split_cases, TrainCase};
use head::{EpochRecord, FeatureSet, HeadTraining};

pub use crate::model::NamedTensors;
pub use error::TrainError;
pub use settings::{Progress, TrainConfig, TrainMode};

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

/// The cases of a run and which of them train and which validate (indices into `all`).
struct Partition<'a> {
    all: &'a [TrainCase],
    train: Vec<usize>,
    valid: Vec<usize>,
}

impl Partition<'_> {
    /// How many of the cases at `idx` are positive.
    fn positives(&self, idx: &[usize]) -> usize {
        idx.iter().filter(|&&i| self.all[i].positive).count()
    }
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

/// Head mode: the backbone stays as it is, so each case's pooled features are computed once
/// (per view) and only the head is trained on them; the base tensors come back with the best
/// epoch's head.
fn train_head_only(
    base_meta: &ModelMetadata,
    base_tensors: Vec<(String, Tensor)>,
    base_identity: &ModelIdentity,
    cases: &Partition,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<(NamedTensors, Vec<EpochRecord>), TrainError> {
    let model = DlrModel::from_tensors(
        base_meta.clone(),
        base_identity.clone(),
        base_tensors.clone(),
        &Device::Cpu,
        ConvEngine::Im2col,
    )?;
    let (train_set, valid_set) = feature_sets(&model, base_meta, cases, cfg, progress)?;
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
    Ok((with_head(base_tensors, trained), history))
}

/// The pooled features the head trains on (every view of each training case) and is
/// validated on (each validation case's plain ROI), with their labels.
fn feature_sets(
    model: &DlrModel,
    meta: &ModelMetadata,
    cases: &Partition,
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<(FeatureSet, FeatureSet), TrainError> {
    let (train_images, train_labels) = training_views(meta, cases, cfg)?;
    let valid_images = cases
        .valid
        .iter()
        .map(|&i| network_input(&cases.all[i].crop.plain(), meta))
        .collect::<Result<Vec<_>, _>>()?;
    let total = train_images.len() + valid_images.len();
    let train_set = FeatureSet {
        features: pooled_features(model, &train_images, 0, total, progress)?,
        positive: train_labels,
    };
    let valid_set = FeatureSet {
        features: pooled_features(model, &valid_images, train_images.len(), total, progress)?,
        positive: cases.valid.iter().map(|&i| cases.all[i].positive).collect(),
    };
    Ok((train_set, valid_set))
}

/// `cfg.views` network inputs per training case, each with the case's label: the plain ROI,
/// then augmented views seeded by the case and the view.
fn training_views(
    meta: &ModelMetadata,
    cases: &Partition,
    cfg: &TrainConfig,
) -> Result<(Vec<GrayImage>, Vec<bool>), ModelError> {
    let mut images = Vec::with_capacity(cases.train.len() * cfg.views);
    let mut labels = Vec::with_capacity(cases.train.len() * cfg.views);
    for &i in &cases.train {
        for view in 0..cfg.views {
            let crop = &cases.all[i].crop;
            let gray = if view == 0 {
                crop.plain()
            } else {
                crop.augmented(cfg.seed ^ crate::rng::spread(i as u64 * 64 + view as u64))
            };
            images.push(network_input(&gray, meta)?);
            labels.push(cases.all[i].positive);
        }
    }
    Ok((images, labels))
}

/// The epoch kept: the highest validation AUC, the lower validation loss among equals.
fn best_epoch(history: &[EpochRecord]) -> Result<EpochRecord, TrainError> {
    history
        .iter()
        .max_by(|a, b| {
            a.validation_auc
                .total_cmp(&b.validation_auc)
                .then(b.validation_loss.total_cmp(&a.validation_loss))
        })
        .cloned()
        .ok_or_else(|| TrainError::Split("no epoch ran".into()))
}

/// The base model's metadata under the new name, with provenance that says what it was
/// trained on, from what, how, and when.
fn trained_metadata(
    base_meta: &ModelMetadata,
    base_identity: &ModelIdentity,
    cases: &Partition,
    cfg: &TrainConfig,
    best: &EpochRecord,
) -> Result<ModelMetadata, TrainError> {
    let (train_idx, valid_idx) = (&cases.train, &cases.valid);
    let positives = |idx: &[usize]| cases.positives(idx);
    let mut metadata = base_meta.clone();
    metadata.name = cfg.name.clone();
    // Both modes train the head, so a seeded head over an imported backbone is trained now.
    metadata.head_untrained = false;
    let p = &mut metadata.provenance;
    p.trained = true;
    p.training_data = format!(
        "{}; {} training cases ({} {}, {} {}), {} validation cases ({} {}, {} {}), split {}; \
         best validation AUC {:.4} at epoch {}",
        cfg.data_description,
        train_idx.len(),
        positives(train_idx),
        base_meta.positive_class,
        train_idx.len() - positives(train_idx),
        base_meta.classes[1 - base_meta.positive_index()],
        valid_idx.len(),
        positives(valid_idx),
        base_meta.positive_class,
        valid_idx.len() - positives(valid_idx),
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
    Ok(metadata)
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
    let (train, valid) = split_cases(cases, &cfg.split, cfg.seed)?;
    let cases = Partition {
        all: cases,
        train,
        valid,
    };
    let (mut tensors, history) = match cfg.mode {
        TrainMode::Head => train_head_only(
            base_meta,
            base_tensors,
            base_identity,
            &cases,
            cfg,
            &mut progress,
        )?,
        TrainMode::Full => backbone::train_full(
            base_meta,
            base_tensors,
            cases.all,
            &cases.train,
            &cases.valid,
            cfg,
            &mut progress,
        )?,
    };
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let best = best_epoch(&history)?;
    let metadata = trained_metadata(base_meta, base_identity, &cases, cfg, &best)?;
    Ok(TrainOutcome {
        metadata,
        tensors,
        best,
        history,
        training_cases: cases.train.len(),
        validation_cases: cases.valid.len(),
    })
}
