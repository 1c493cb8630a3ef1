//! Training the DLR head (FC 2048→hidden → activation → dropout 0.5 → FC hidden→2) on pooled
//! ResNet-50 features: class-weighted cross-entropy, AdamW, seeded batches and dropout masks,
//! early stopping on validation AUC.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::eval::stats::{auc, Case};
use crate::model::metadata::HeadActivation;
use crate::rng::{mix64, SplitMix64};

use super::error::TrainError;

/// Pooled features with labels.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    /// Row-major [n, 2048].
    pub features: Vec<f32>,
    pub positive: Vec<bool>,
}

impl FeatureSet {
    pub fn len(&self) -> usize {
        self.positive.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positive.is_empty()
    }
}

/// The head's tensors, in the model file's names and shapes.
#[derive(Debug, Clone)]
pub struct HeadWeights {
    pub fc1_weight: Tensor,
    pub fc1_bias: Tensor,
    pub fc2_weight: Tensor,
    pub fc2_bias: Tensor,
}

#[derive(Debug, Clone)]
pub struct HeadTraining {
    pub max_epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Epochs without a better validation AUC before stopping.
    pub patience: usize,
    pub dropout: f64,
    pub seed: u64,
    /// Index of the positive class in the model's class order.
    pub positive_index: usize,
    pub activation: HeadActivation,
}

/// One epoch's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub validation_auc: f64,
}

struct Params {
    w1: Var,
    b1: Var,
    w2: Var,
    b2: Var,
}

fn logits(
    p: &Params,
    x: &Tensor,
    activation: HeadActivation,
    dropout_mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let z = x.matmul(&p.w1.t()?)?.broadcast_add(p.b1.as_tensor())?;
    let z = match activation {
        HeadActivation::None => z,
        HeadActivation::Relu => z.relu()?,
    };
    let z = match dropout_mask {
        Some(m) => (z * m)?,
        None => z,
    };
    z.matmul(&p.w2.t()?)?.broadcast_add(p.b2.as_tensor())
}

/// Class-weighted mean cross-entropy: each class weighs as much as the other in total, so
/// the majority class (PDAC, 414 to 144 in the paper's cohort) does not drown the other.
pub(crate) fn weighted_loss(
    logits: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> candle_core::Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = log_p.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let total = weights.sum_all()?;
    (picked * weights)?.sum_all()?.neg()?.broadcast_div(&total)
}

/// Class weights n / (2 n_class) per case.
pub(crate) fn class_weights(positive: &[bool]) -> Vec<f32> {
    let (w_pos, w_neg) = class_weight_pair(positive);
    positive
        .iter()
        .map(|&p| if p { w_pos } else { w_neg })
        .collect()
}

/// The weights n / (2 n_class) of the positive and the negative class.
pub(crate) fn class_weight_pair(positive: &[bool]) -> (f32, f32) {
    let n = positive.len() as f32;
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    (
        n / (2.0 * n_pos.max(1) as f32),
        n / (2.0 * n_neg.max(1) as f32),
    )
}

pub(crate) fn targets(positive: &[bool], positive_index: usize) -> Vec<u32> {
    positive
        .iter()
        .map(|&p| {
            if p {
                positive_index as u32
            } else {
                1 - positive_index as u32
            }
        })
        .collect()
}

/// An inverted-dropout mask for `rows` x `hidden` activations, drawn from `rng`: each kept
/// unit is scaled by 1/keep so that the expected activation is unchanged.
pub(crate) fn dropout_mask(
    rng: &mut SplitMix64,
    rows: usize,
    hidden: usize,
    keep: f64,
) -> Vec<f32> {
    (0..rows * hidden)
        .map(|_| {
            if rng.unit() < keep {
                (1.0 / keep) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// Early stopping on the validation AUC (ties: the lower validation loss), keeping a
/// snapshot of the best epoch.
pub(crate) struct EarlyStopping<T> {
    patience: usize,
    best: Option<(f64, f64, T)>,
    since_best: usize,
}

impl<T> EarlyStopping<T> {
    pub(crate) fn new(patience: usize) -> Self {
        Self {
            patience,
            best: None,
            since_best: 0,
        }
    }

    /// Takes an epoch's figures; `snapshot` is called only when the epoch is the best so far.
    /// Returns true when training should stop.
    pub(crate) fn observe<E>(
        &mut self,
        record: &EpochRecord,
        snapshot: impl FnOnce() -> Result<T, E>,
    ) -> Result<bool, E> {
        let better = match &self.best {
            None => true,
            Some((auc, loss, _)) => {
                record.validation_auc > *auc
                    || (record.validation_auc == *auc && record.validation_loss < *loss)
            }
        };
        if better {
            self.best = Some((record.validation_auc, record.validation_loss, snapshot()?));
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        Ok(self.since_best >= self.patience)
    }

    pub(crate) fn into_best(self) -> Result<T, TrainError> {
        self.best
            .map(|(_, _, t)| t)
            .ok_or_else(|| TrainError::Split("no epoch ran".into()))
    }
}

/// Trains from `start`, returns the weights of the epoch with the best validation AUC (ties:
/// lower validation loss) and the history. `on_epoch` sees each epoch as it ends.
pub fn train_head(
    start: &HeadWeights,
    train: &FeatureSet,
    validation: &FeatureSet,
    cfg: &HeadTraining,
    mut on_epoch: impl FnMut(&EpochRecord),
) -> Result<(HeadWeights, Vec<EpochRecord>), TrainError> {
    let dev = Device::Cpu;
    let dim = train.features.len() / train.len().max(1);
    let params = Params {
        w1: Var::from_tensor(&start.fc1_weight.to_dtype(DType::F32)?)?,
        b1: Var::from_tensor(&start.fc1_bias.to_dtype(DType::F32)?)?,
        w2: Var::from_tensor(&start.fc2_weight.to_dtype(DType::F32)?)?,
        b2: Var::from_tensor(&start.fc2_bias.to_dtype(DType::F32)?)?,
    };
    let hidden = params.w1.dim(0)?;
    let mut opt = AdamW::new(
        vec![
            params.w1.clone(),
            params.b1.clone(),
            params.w2.clone(),
            params.b2.clone(),
        ],
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;
    let x_train = Tensor::from_slice(&train.features, (train.len(), dim), &dev)?;
    let y_train = targets(&train.positive, cfg.positive_index);
    let w_train = class_weights(&train.positive);
    let x_val = Tensor::from_slice(&validation.features, (validation.len(), dim), &dev)?;
    let y_val = Tensor::new(targets(&validation.positive, cfg.positive_index), &dev)?;
    let w_val = Tensor::new(class_weights(&validation.positive), &dev)?;

    let snapshot = |p: &Params| -> candle_core::Result<HeadWeights> {
        Ok(HeadWeights {
            fc1_weight: p.w1.as_tensor().copy()?,
            fc1_bias: p.b1.as_tensor().copy()?,
            fc2_weight: p.w2.as_tensor().copy()?,
            fc2_bias: p.b2.as_tensor().copy()?,
        })
    };
    let mut stopping = EarlyStopping::new(cfg.patience);
    let mut history = Vec::new();
    let mut order: Vec<usize> = (0..train.len()).collect();
    let keep = 1.0 - cfg.dropout;
    for epoch in 1..=cfg.max_epochs {
        let mut rng = SplitMix64(mix64(cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37)));
        rng.shuffle(&mut order);
        let (mut loss_sum, mut batches) = (0.0, 0);
        for chunk in order.chunks(cfg.batch_size) {
            let idx = Tensor::new(chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(), &dev)?;
            let x = x_train.index_select(&idx, 0)?;
            let y = Tensor::new(chunk.iter().map(|&i| y_train[i]).collect::<Vec<_>>(), &dev)?;
            let w = Tensor::new(chunk.iter().map(|&i| w_train[i]).collect::<Vec<_>>(), &dev)?;
            let mask = dropout_mask(&mut rng, chunk.len(), hidden, keep);
            let mask = Tensor::from_vec(mask, (chunk.len(), hidden), &dev)?;
            let loss = weighted_loss(&logits(&params, &x, cfg.activation, Some(&mask))?, &y, &w)?;
            opt.backward_step(&loss)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            batches += 1;
        }
        let val_logits = logits(&params, &x_val, cfg.activation, None)?;
        let validation_loss =
            weighted_loss(&val_logits, &y_val, &w_val)?.to_scalar::<f32>()? as f64;
        let probs: Vec<Vec<f32>> = candle_nn::ops::softmax(&val_logits, D::Minus1)?.to_vec2()?;
        let cases: Vec<Case> = probs
            .iter()
            .zip(&validation.positive)
            .map(|(p, &positive)| Case {
                score: p[cfg.positive_index] as f64,
                positive,
            })
            .collect();
        let validation_auc = auc(&cases).unwrap_or(0.5);
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / batches.max(1) as f64,
            validation_loss,
            validation_auc,
        };
        on_epoch(&record);
        let stop = stopping.observe(&record, || snapshot(&params))?;
        history.push(record);
        if stop {
            break;
        }
    }
    let weights = stopping.into_best()?;
    Ok((weights, history))
}
