//! The tensors of a ResNet-50 DLR model: their torchvision names and shapes, and a checked
//! lookup over a set of loaded tensors.
//!
//! One table serves every path that touches weights (seeded init, import from PyTorch or
//! safetensors, loading a model file), so a name or shape can never disagree between them.

use candle_core::Tensor;
use std::collections::BTreeMap;

use super::error::ModelError;
use super::int8::ChannelQuantized;
use super::metadata::WeightFormat;

/// Bottleneck blocks per stage (ResNet-50) and each stage's middle width.
pub const STAGES: [(usize, usize); 4] = [(3, 64), (4, 128), (6, 256), (3, 512)];
/// Bottleneck expansion: a block's output has 4x its middle width.
pub const EXPANSION: usize = 4;
/// Channels of the last stage's feature map, the input of the head and of Grad-CAM.
pub const FEATURE_CHANNELS: usize = 2048;
pub const NUM_CLASSES: usize = 2;

/// torchvision's names of the stem convolution and its BatchNorm.
pub const STEM: &str = "conv1";
pub const STEM_BATCHNORM: &str = "bn1";
/// torchvision's names of a bottleneck's convolutions and of the BatchNorm after each, within
/// the block (after `block_prefix`): the one place they are written, for the tensor table,
/// the network's layers, profiles and the calibrated scales stored per layer.
pub const REDUCE: (&str, &str) = ("conv1", "bn1");
pub const SPATIAL: (&str, &str) = ("conv2", "bn2");
pub const DOWNSAMPLE: (&str, &str) = ("downsample.0", "downsample.1");
pub const EXPAND: (&str, &str) = ("conv3", "bn3");

/// The name prefix of block `index` of stage `stage` (both from 0): `layer{stage + 1}.{index}`.
pub fn block_prefix(stage: usize, index: usize) -> String {
    format!("layer{}.{index}", stage + 1)
}

/// What a named tensor is for; decides how a seeded model initialises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    ConvWeight,
    BnWeight,
    BnBias,
    BnMean,
    BnVar,
    LinearWeight,
    LinearBias,
    /// A folded convolution's bias (BatchNorm's shift absorbed).
    ConvBias,
    /// An int8 convolution's calibrated input scale (folded-int8-static files).
    InputScale,
}

#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: TensorRole,
    /// True for the BatchNorm that ends a bottleneck's residual branch (bn3); the shortcut's
    /// downsample BatchNorm is not one.
    pub closes_branch: bool,
}

fn conv_specs(out: &mut Vec<TensorSpec>, conv: &str, bn: &str, shape: [usize; 4], closes: bool) {
    out.push(TensorSpec {
        name: format!("{conv}.weight"),
        shape: shape.to_vec(),
        role: TensorRole::ConvWeight,
        closes_branch: closes,
    });
    for (suffix, role) in [
        ("weight", TensorRole::BnWeight),
        ("bias", TensorRole::BnBias),
        ("running_mean", TensorRole::BnMean),
        ("running_var", TensorRole::BnVar),
    ] {
        out.push(TensorSpec {
            name: format!("{bn}.{suffix}"),
            shape: vec![shape[0]],
            role,
            closes_branch: closes,
        });
    }
}

/// Every tensor of the network in torchvision order, for `input_channels` and a head of
/// `hidden` units.
pub fn tensor_specs(input_channels: usize, hidden: usize) -> Vec<TensorSpec> {
    let mut specs = Vec::with_capacity(330);
    conv_specs(
        &mut specs,
        STEM,
        STEM_BATCHNORM,
        [64, input_channels, 7, 7],
        false,
    );
    let mut in_ch = 64;
    for (stage, (blocks, width)) in STAGES.iter().enumerate() {
        let out_ch = width * EXPANSION;
        for block in 0..*blocks {
            let p = block_prefix(stage, block);
            let cin = if block == 0 { in_ch } else { out_ch };
            let mut conv = |(conv, bn): (&str, &str), shape, closes_branch| {
                let (conv, bn) = (format!("{p}.{conv}"), format!("{p}.{bn}"));
                conv_specs(&mut specs, &conv, &bn, shape, closes_branch)
            };
            conv(REDUCE, [*width, cin, 1, 1], false);
            conv(SPATIAL, [*width, *width, 3, 3], false);
            conv(EXPAND, [out_ch, *width, 1, 1], true);
            if block == 0 {
                conv(DOWNSAMPLE, [out_ch, cin, 1, 1], false);
            }
        }
        in_ch = out_ch;
    }
    for (name, shape, role) in [
        (
            "fc1.weight",
            vec![hidden, FEATURE_CHANNELS],
            TensorRole::LinearWeight,
        ),
        ("fc1.bias", vec![hidden], TensorRole::LinearBias),
        (
            "fc2.weight",
            vec![NUM_CLASSES, hidden],
            TensorRole::LinearWeight,
        ),
        ("fc2.bias", vec![NUM_CLASSES], TensorRole::LinearBias),
    ] {
        specs.push(TensorSpec {
            name: name.to_string(),
            shape,
            role,
            closes_branch: false,
        });
    }
    specs
}

/// Every tensor of a BatchNorm-folded network: per convolution `<conv>.weight`
/// [cout, kh·kw·cin] (columns in (ky, kx, ci) order, the order im2col reads an NHWC patch) and
/// `<conv>.bias` [cout]; the head as in [`tensor_specs`].
pub fn folded_tensor_specs(input_channels: usize, hidden: usize) -> Vec<TensorSpec> {
    let mut specs = Vec::with_capacity(200);
    for spec in tensor_specs(input_channels, hidden) {
        match spec.role {
            TensorRole::ConvWeight => {
                let conv = spec.name.trim_end_matches(".weight").to_string();
                let [o, i, kh, kw] = [spec.shape[0], spec.shape[1], spec.shape[2], spec.shape[3]];
                specs.push(TensorSpec {
                    name: spec.name.clone(),
                    shape: vec![o, kh * kw * i],
                    ..spec.clone()
                });
                specs.push(TensorSpec {
                    name: format!("{conv}.bias"),
                    shape: vec![o],
                    role: TensorRole::ConvBias,
                    closes_branch: spec.closes_branch,
                });
            }
            TensorRole::BnWeight | TensorRole::BnBias | TensorRole::BnMean | TensorRole::BnVar => {}
            TensorRole::LinearWeight
            | TensorRole::LinearBias
            | TensorRole::ConvBias
            | TensorRole::InputScale => specs.push(spec),
        }
    }
    specs
}

/// The tensor table of a file in `format`.
pub fn specs_for(format: WeightFormat, input_channels: usize, hidden: usize) -> Vec<TensorSpec> {
    match format {
        WeightFormat::Torchvision => tensor_specs(input_channels, hidden),
        WeightFormat::FoldedF16 | WeightFormat::FoldedInt8Dynamic => {
            folded_tensor_specs(input_channels, hidden)
        }
        WeightFormat::FoldedInt8Static => {
            let mut specs = Vec::with_capacity(260);
            for spec in folded_tensor_specs(input_channels, hidden) {
                let scale = (spec.role == TensorRole::ConvBias)
                    .then(|| spec.name.trim_end_matches(".bias").to_string())
                    .filter(|conv| conv != STEM)
                    .map(|conv| TensorSpec {
                        name: format!("{conv}.input_scale"),
                        shape: vec![1],
                        role: TensorRole::InputScale,
                        closes_branch: false,
                    });
                specs.push(spec);
                specs.extend(scale);
            }
            specs
        }
    }
}

/// Loaded tensors, taken out one by one with their shape checked.
pub struct WeightSource {
    tensors: BTreeMap<String, Tensor>,
    /// Per-channel int8 forms of some weights (from `Q8_0` tensors), by tensor name.
    int8: BTreeMap<String, ChannelQuantized>,
}

impl WeightSource {
    pub fn new(tensors: BTreeMap<String, Tensor>) -> Self {
        Self::with_int8(tensors, BTreeMap::new())
    }

    pub fn with_int8(
        tensors: BTreeMap<String, Tensor>,
        int8: BTreeMap<String, ChannelQuantized>,
    ) -> Self {
        Self { tensors, int8 }
    }

    /// The int8 form of tensor `name`, if the file stored one.
    pub fn take_int8(&mut self, name: &str) -> Option<ChannelQuantized> {
        self.int8.remove(name)
    }

    /// The tensor `name`, which must have `shape`.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let tensor = self
            .tensors
            .remove(name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.to_string(),
            })?;
        if tensor.dims() != shape {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: tensor.dims().to_vec(),
            });
        }
        Ok(tensor)
    }

    /// Names nobody took.
    pub fn remaining(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
}

/// Checks a full set of tensors against the table: every name present with its shape, nothing
/// else. Returns them in table order.
pub fn check_complete(
    tensors: BTreeMap<String, Tensor>,
    format: WeightFormat,
    input_channels: usize,
    hidden: usize,
) -> Result<Vec<(String, Tensor)>, ModelError> {
    let mut source = WeightSource::new(tensors);
    let mut ordered = Vec::new();
    for spec in specs_for(format, input_channels, hidden) {
        let t = source.take(&spec.name, &spec.shape)?;
        ordered.push((spec.name, t));
    }
    let extra = source.remaining();
    if let Some(name) = extra.first() {
        return Err(ModelError::UnexpectedTensor { name: name.clone() });
    }
    Ok(ordered)
}

/// Learnable parameters among `tensors`, counted as PyTorch's `parameters()` does: BatchNorm
/// running statistics are buffers, not parameters.
pub fn learnable_parameters(tensors: &[(String, Tensor)]) -> usize {
    tensors
        .iter()
        .filter(|(n, _)| !n.ends_with(".running_mean") && !n.ends_with(".running_var"))
        .map(|(_, t)| t.elem_count())
        .sum()
}
