//! Full fine-tuning: the whole ResNet-50 + head as a trainable graph (NCHW, candle's
//! differentiable `conv2d`, BatchNorm in training mode with running statistics updated,
//! momentum 0.1 as PyTorch). The inference network (`model::network`) folds BatchNorm and runs
//! its own convolution kernels; this graph exists only for training, and its weights go back
//! into the model file under the same torchvision names.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, BatchNorm, Optimizer, ParamsAdamW};
use image::GrayImage;

use crate::eval::stats::{auc, Case};
use crate::model::metadata::{HeadActivation, ModelMetadata};
use crate::model::preprocess::batch_tensor;
use crate::rng::{mix64, spread, SplitMix64};

use super::base_model::{named_tensor, network_input};
use super::data::TrainCase;
use super::error::TrainError;
use super::head::{
    class_weight_pair, class_weights, dropout_mask, targets, weighted_loss, EarlyStopping,
    EpochRecord,
};
use super::settings::{Progress, TrainConfig};
use crate::model::NamedTensors;

const STAGES: [(usize, usize); 4] = [(3, 64), (4, 128), (6, 256), (3, 512)];
const BN_EPS: f64 = 1e-5;

/// A convolution followed by its BatchNorm, with trainable weights.
struct ConvBn {
    name: String,
    bn_name: String,
    weight: Var,
    gamma: Var,
    beta: Var,
    bn: BatchNorm,
    stride: usize,
    padding: usize,
}

impl ConvBn {
    fn new(
        tensors: &[(String, Tensor)],
        conv: &str,
        bn: &str,
        stride: usize,
        padding: usize,
    ) -> Result<Self, TrainError> {
        let get = |n: &str| -> Result<Tensor, TrainError> {
            Ok(named_tensor(tensors, n)?.to_dtype(DType::F32)?)
        };
        let weight = Var::from_tensor(&get(&format!("{conv}.weight"))?)?;
        let gamma = Var::from_tensor(&get(&format!("{bn}.weight"))?)?;
        let beta = Var::from_tensor(&get(&format!("{bn}.bias"))?)?;
        let norm = BatchNorm::new(
            gamma.dim(0)?,
            get(&format!("{bn}.running_mean"))?,
            get(&format!("{bn}.running_var"))?,
            gamma.as_tensor().clone(),
            beta.as_tensor().clone(),
            BN_EPS,
        )?;
        Ok(Self {
            name: conv.to_string(),
            bn_name: bn.to_string(),
            weight,
            gamma,
            beta,
            bn: norm,
            stride,
            padding,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = x.conv2d(self.weight.as_tensor(), self.padding, self.stride, 1, 1)?;
        if train {
            self.bn.forward_train(&y)
        } else {
            candle_nn::ModuleT::forward_t(&self.bn, &y, false)
        }
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.weight.clone(), self.gamma.clone(), self.beta.clone()]
    }

    fn export(&self, out: &mut Vec<(String, Tensor)>) -> candle_core::Result<()> {
        out.push((
            format!("{}.weight", self.name),
            self.weight.as_tensor().copy()?,
        ));
        out.push((
            format!("{}.weight", self.bn_name),
            self.gamma.as_tensor().copy()?,
        ));
        out.push((
            format!("{}.bias", self.bn_name),
            self.beta.as_tensor().copy()?,
        ));
        out.push((
            format!("{}.running_mean", self.bn_name),
            self.bn.running_mean().copy()?,
        ));
        out.push((
            format!("{}.running_var", self.bn_name),
            self.bn.running_var().copy()?,
        ));
        Ok(())
    }
}

struct Block {
    convs: [ConvBn; 3],
    downsample: Option<ConvBn>,
}

/// ResNet-50 v1.5 + DLR head, trainable.
struct TrainableNet {
    stem: ConvBn,
    blocks: Vec<Block>,
    fc1_weight: Var,
    fc1_bias: Var,
    fc2_weight: Var,
    fc2_bias: Var,
    activation: HeadActivation,
}

impl TrainableNet {
    fn new(tensors: &[(String, Tensor)], activation: HeadActivation) -> Result<Self, TrainError> {
        let stem = ConvBn::new(tensors, "conv1", "bn1", 2, 3)?;
        let mut blocks = Vec::new();
        for (stage, (count, _)) in STAGES.iter().enumerate() {
            for b in 0..*count {
                let p = format!("layer{}.{b}", stage + 1);
                let stride = if b == 0 && stage > 0 { 2 } else { 1 };
                blocks.push(Block {
                    convs: [
                        ConvBn::new(tensors, &format!("{p}.conv1"), &format!("{p}.bn1"), 1, 0)?,
                        ConvBn::new(
                            tensors,
                            &format!("{p}.conv2"),
                            &format!("{p}.bn2"),
                            stride,
                            1,
                        )?,
                        ConvBn::new(tensors, &format!("{p}.conv3"), &format!("{p}.bn3"), 1, 0)?,
                    ],
                    downsample: if b == 0 {
                        Some(ConvBn::new(
                            tensors,
                            &format!("{p}.downsample.0"),
                            &format!("{p}.downsample.1"),
                            stride,
                            0,
                        )?)
                    } else {
                        None
                    },
                });
            }
        }
        let var = |n: &str| -> Result<Var, TrainError> {
            Ok(Var::from_tensor(
                &named_tensor(tensors, n)?.to_dtype(DType::F32)?,
            )?)
        };
        Ok(Self {
            stem,
            blocks,
            fc1_weight: var("fc1.weight")?,
            fc1_bias: var("fc1.bias")?,
            fc2_weight: var("fc2.weight")?,
            fc2_bias: var("fc2.bias")?,
            activation,
        })
    }

    /// Logits for an NCHW batch; `dropout_mask` [b, hidden] only in training.
    fn forward(
        &self,
        x: &Tensor,
        train: bool,
        dropout_mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let x = self.stem.forward(x, train)?.relu()?;
        let mut x = max_pool_3x3_s2(&x)?;
        for block in &self.blocks {
            let shortcut = match &block.downsample {
                Some(d) => d.forward(&x, train)?,
                None => x.clone(),
            };
            let y = block.convs[0].forward(&x, train)?.relu()?;
            let y = block.convs[1].forward(&y, train)?.relu()?;
            let y = block.convs[2].forward(&y, train)?;
            x = (y + shortcut)?.relu()?;
        }
        let pooled = x.mean(D::Minus1)?.mean(D::Minus1)?;
        let z = pooled
            .matmul(&self.fc1_weight.t()?)?
            .broadcast_add(self.fc1_bias.as_tensor())?;
        let z = match self.activation {
            HeadActivation::None => z,
            HeadActivation::Relu => z.relu()?,
        };
        let z = match dropout_mask {
            Some(m) => (z * m)?,
            None => z,
        };
        z.matmul(&self.fc2_weight.t()?)?
            .broadcast_add(self.fc2_bias.as_tensor())
    }

    fn backbone_vars(&self) -> Vec<Var> {
        let mut v = self.stem.vars();
        for b in &self.blocks {
            for c in b.convs.iter().chain(b.downsample.iter()) {
                v.extend(c.vars());
            }
        }
        v
    }

    fn head_vars(&self) -> Vec<Var> {
        vec![
            self.fc1_weight.clone(),
            self.fc1_bias.clone(),
            self.fc2_weight.clone(),
            self.fc2_bias.clone(),
        ]
    }

    fn export(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        self.stem.export(&mut out)?;
        for b in &self.blocks {
            for c in b.convs.iter().chain(b.downsample.iter()) {
                c.export(&mut out)?;
            }
        }
        for (n, v) in [
            ("fc1.weight", &self.fc1_weight),
            ("fc1.bias", &self.fc1_bias),
            ("fc2.weight", &self.fc2_weight),
            ("fc2.bias", &self.fc2_bias),
        ] {
            out.push((n.to_string(), v.as_tensor().copy()?));
        }
        Ok(out)
    }
}

/// Max pool 3x3, stride 2, padding 1, as the maximum of the nine strided shifts of the input
/// (candle differentiates max pooling only for non-overlapping windows). It follows a ReLU:
/// every value is >= 0, so zero padding never wins the max, as PyTorch's -inf padding.
fn max_pool_3x3_s2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
    // One column/row of padding before, and after as many as the last window needs.
    let x = x
        .pad_with_zeros(2, 1, 2 * oh + 1 - h)?
        .pad_with_zeros(3, 1, 2 * ow + 1 - w)?;
    let wp = x.dim(3)?;
    let mut out: Option<Tensor> = None;
    for dy in 0..3 {
        let rows = x
            .narrow(2, dy, 2 * oh)?
            .reshape((b, c, oh, 2, wp))?
            .narrow(3, 0, 1)?
            .squeeze(3)?;
        for dx in 0..3 {
            let shifted = rows
                .narrow(3, dx, 2 * ow)?
                .reshape((b, c, oh, ow, 2))?
                .narrow(4, 0, 1)?
                .squeeze(4)?;
            out = Some(match out {
                None => shifted,
                Some(m) => m.maximum(&shifted)?,
            });
        }
    }
    out.ok_or_else(|| candle_core::Error::Msg("empty pooling window".into()))
}

fn nchw(images: &[GrayImage], meta: &ModelMetadata) -> Result<Tensor, TrainError> {
    Ok(batch_tensor(images, meta, &Device::Cpu)?
        .permute((0, 3, 1, 2))?
        .contiguous()?)
}

/// Share of the head's hidden units kept by dropout in a training step.
const DROPOUT_KEEP: f64 = 0.5;

/// A full fine-tuning run in progress: the trainable network, its two optimizers, and what
/// every step reads.
struct FullTraining<'a> {
    net: TrainableNet,
    /// Width of the head's hidden layer (the dropout mask's).
    hidden: usize,
    backbone_opt: AdamW,
    head_opt: AdamW,
    meta: &'a ModelMetadata,
    cases: &'a [TrainCase],
    cfg: &'a TrainConfig,
    /// One weight per class (positive, negative), from the training cases' class balance.
    class_weights: (f32, f32),
}

impl<'a> FullTraining<'a> {
    fn new(
        meta: &'a ModelMetadata,
        base_tensors: &[(String, Tensor)],
        cases: &'a [TrainCase],
        train_idx: &[usize],
        cfg: &'a TrainConfig,
    ) -> Result<Self, TrainError> {
        let net = TrainableNet::new(base_tensors, meta.head_activation)?;
        let hidden = net.fc1_weight.dim(0)?;
        let adamw = |lr: f64| ParamsAdamW {
            lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        };
        // The head starts further from its optimum than the backbone: ten times the rate.
        let backbone_opt = AdamW::new(net.backbone_vars(), adamw(cfg.learning_rate))?;
        let head_opt = AdamW::new(net.head_vars(), adamw(cfg.learning_rate * 10.0))?;
        let train_positive: Vec<bool> = train_idx.iter().map(|&i| cases[i].positive).collect();
        Ok(Self {
            net,
            hidden,
            backbone_opt,
            head_opt,
            meta,
            cases,
            cfg,
            class_weights: class_weight_pair(&train_positive),
        })
    }

    /// One pass over the training cases, in an order shuffled by the epoch's seed, each batch
    /// augmented afresh; returns the mean training loss.
    fn epoch(
        &mut self,
        epoch: usize,
        order: &mut [usize],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<f64, TrainError> {
        let cfg = self.cfg;
        let steps_per_epoch = order.len().div_ceil(cfg.batch_size);
        let mut rng = SplitMix64(mix64(cfg.seed ^ spread(epoch as u64)));
        rng.shuffle(order);
        let (mut loss_sum, mut steps) = (0.0, 0);
        for (step, chunk) in order.chunks(cfg.batch_size).enumerate() {
            // BatchNorm needs more than one value per channel to compute batch statistics.
            if chunk.len() < 2 {
                continue;
            }
            loss_sum += self.step(epoch, chunk, &mut rng)? as f64;
            steps += 1;
            progress(Progress::Images {
                done: (epoch - 1) * steps_per_epoch + step + 1,
                total: cfg.max_epochs * steps_per_epoch,
            });
        }
        Ok(loss_sum / steps.max(1) as f64)
    }

    /// One optimizer step on the cases of `chunk` (BatchNorm in training mode, dropout on the
    /// head); returns the batch's loss.
    fn step(
        &mut self,
        epoch: usize,
        chunk: &[usize],
        rng: &mut SplitMix64,
    ) -> Result<f32, TrainError> {
        let (cases, cfg, meta) = (self.cases, self.cfg, self.meta);
        let images = chunk
            .iter()
            .map(|&i| {
                let view = cases[i]
                    .crop
                    .augmented(cfg.seed ^ spread((epoch * 1_000_003 + i) as u64));
                network_input(&view, meta)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let x = nchw(&images, meta)?;
        let positive: Vec<bool> = chunk.iter().map(|&i| cases[i].positive).collect();
        let targets = Tensor::new(targets(&positive, meta.positive_index()), &Device::Cpu)?;
        let (w_pos, w_neg) = self.class_weights;
        let weights = Tensor::new(
            positive
                .iter()
                .map(|&p| if p { w_pos } else { w_neg })
                .collect::<Vec<f32>>(),
            &Device::Cpu,
        )?;
        let mask = dropout_mask(rng, chunk.len(), self.hidden, DROPOUT_KEEP);
        let mask = Tensor::from_vec(mask, (chunk.len(), self.hidden), &Device::Cpu)?;
        let logits = self.net.forward(&x, true, Some(&mask))?;
        let loss = weighted_loss(&logits, &targets, &weights)?;
        let grads = loss.backward()?;
        self.backbone_opt.step(&grads)?;
        self.head_opt.step(&grads)?;
        Ok(loss.to_scalar::<f32>()?)
    }

    /// The validation cases' loss (each class weighted by its share) and AUC, with BatchNorm's
    /// running statistics (inference mode) and no dropout.
    fn validate(
        &self,
        valid_inputs: &[GrayImage],
        valid_idx: &[usize],
    ) -> Result<(f64, f64), TrainError> {
        let pos = self.meta.positive_index();
        let mut logits = Vec::new();
        for batch in valid_inputs.chunks(8) {
            logits.push(self.net.forward(&nchw(batch, self.meta)?, false, None)?);
        }
        let logits = Tensor::cat(&logits, 0)?;
        let valid_positive: Vec<bool> = valid_idx.iter().map(|&i| self.cases[i].positive).collect();
        let loss = weighted_loss(
            &logits,
            &Tensor::new(targets(&valid_positive, pos), &Device::Cpu)?,
            &Tensor::new(class_weights(&valid_positive), &Device::Cpu)?,
        )?
        .to_scalar::<f32>()? as f64;
        let probabilities: Vec<Vec<f32>> =
            candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2()?;
        let scores: Vec<Case> = probabilities
            .iter()
            .zip(&valid_positive)
            .map(|(p, &positive)| Case {
                score: p[pos] as f64,
                positive,
            })
            .collect();
        Ok((loss, auc(&scores).unwrap_or(0.5)))
    }
}

/// Trains every weight; returns the best epoch's tensors and the history.
pub fn train_full(
    meta: &ModelMetadata,
    base_tensors: Vec<(String, Tensor)>,
    cases: &[TrainCase],
    train_idx: &[usize],
    valid_idx: &[usize],
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<(NamedTensors, Vec<EpochRecord>), TrainError> {
    let mut run = FullTraining::new(meta, &base_tensors, cases, train_idx, cfg)?;
    let valid_inputs = valid_idx
        .iter()
        .map(|&i| network_input(&cases[i].crop.plain(), meta))
        .collect::<Result<Vec<_>, _>>()?;
    let mut order = train_idx.to_vec();
    let mut history = Vec::new();
    let mut stopping = EarlyStopping::new(cfg.patience);
    for epoch in 1..=cfg.max_epochs {
        let train_loss = run.epoch(epoch, &mut order, progress)?;
        let (validation_loss, validation_auc) = run.validate(&valid_inputs, valid_idx)?;
        let record = EpochRecord {
            epoch,
            train_loss,
            validation_loss,
            validation_auc,
        };
        progress(Progress::Epoch(&record));
        let stop = stopping.observe(&record, || run.net.export())?;
        history.push(record);
        if stop {
            break;
        }
    }
    let tensors = stopping.into_best()?;
    Ok((tensors, history))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The differentiable pooling equals candle's (padded with -inf semantics on >= 0 input).
    #[test]
    fn shifted_max_pool_matches_candles_pooling() {
        for (h, w) in [(8, 8), (7, 9), (112, 112)] {
            let n = 2 * 3 * h * w;
            let values: Vec<f32> = (0..n).map(|i| ((i * 7919) % 101) as f32).collect();
            let x = Tensor::from_vec(values, (2, 3, h, w), &Device::Cpu).unwrap();
            let ours = max_pool_3x3_s2(&x).unwrap();
            let padded = x
                .pad_with_zeros(2, 1, 1)
                .unwrap()
                .pad_with_zeros(3, 1, 1)
                .unwrap();
            let reference = padded.max_pool2d_with_stride(3, 2).unwrap();
            assert_eq!(ours.dims(), reference.dims(), "{h}x{w}");
            let diff: f32 = (ours - reference)
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(diff, 0.0, "{h}x{w}");
        }
    }
}
