//! The ResNet-50 DLR network of Tong et al. (BMC Medicine 2022) as plain functions over named
//! weights: torchvision's ResNet-50 v1.5 backbone (stride on the 3x3 convolution, layers
//! 3-4-6-3) and the paper's head, FC 2048→hidden → activation → dropout → FC hidden→2 → softmax.
//!
//! The forward pass returns the last stage's feature map with the scores, because Grad-CAM is
//! computed from it.

use candle_core::{DType, Device, Tensor, D};
use std::sync::Arc;

use super::conv::{max_pool_3x3_s2, BatchNorm, ConvEngine, FeatureMap, FoldedConv};
use super::error::ModelError;
use super::int8::conv::ActivationScaling;
use super::int8::{InputHistogram, Int8Conv, Kernel};
use super::kernel_io::output_size;
use super::metadata::{HeadActivation, ModelMetadata, WeightFormat};
use super::weights::{
    block_prefix, WeightSource, DOWNSAMPLE, EXPAND, EXPANSION, FEATURE_CHANNELS, NUM_CLASSES,
    REDUCE, SPATIAL, STAGES, STEM, STEM_BATCHNORM,
};

/// A convolution of the network, where it sits and what it is given.
pub struct ConvSite<'a> {
    /// The torchvision name of its weight, without `.weight` (`layer2.0.conv2`).
    pub name: String,
    pub conv: &'a FoldedConv,
    /// Height and width of its input.
    pub input: (usize, usize),
}

/// One bottleneck: 1x1 reduce, 3x3 (carrying the stride), 1x1 expand, plus the shortcut.
#[derive(Debug, Clone)]
struct Bottleneck {
    reduce: FoldedConv,
    spatial: FoldedConv,
    expand: FoldedConv,
    downsample: Option<FoldedConv>,
}

/// A block's `named` convolutions under their full names (block `index` of stage `stage`).
fn full_names<T>(
    stage: usize,
    index: usize,
    named: Vec<(&'static str, T)>,
) -> impl Iterator<Item = (String, T)> {
    let prefix = block_prefix(stage, index);
    named
        .into_iter()
        .map(move |(name, conv)| (format!("{prefix}.{name}"), conv))
}

impl Bottleneck {
    /// The block's convolutions in the order they run, with their names within the block.
    fn named(&self) -> Vec<(&'static str, &FoldedConv)> {
        let mut all = vec![(REDUCE.0, &self.reduce), (SPATIAL.0, &self.spatial)];
        all.extend(self.downsample.as_ref().map(|d| (DOWNSAMPLE.0, d)));
        all.push((EXPAND.0, &self.expand));
        all
    }

    /// `named`, mutably.
    fn named_mut(&mut self) -> Vec<(&'static str, &mut FoldedConv)> {
        let mut all = vec![(REDUCE.0, &mut self.reduce), (SPATIAL.0, &mut self.spatial)];
        all.extend(self.downsample.as_mut().map(|d| (DOWNSAMPLE.0, d)));
        all.push((EXPAND.0, &mut self.expand));
        all
    }

    fn forward(&self, x: &FeatureMap) -> candle_core::Result<FeatureMap> {
        let y = self.reduce.forward_map(x, None, true)?;
        let y = self.spatial.forward_map(&y, None, true)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward_map(x, None, false)?.tensor,
            None => x.tensor.clone(),
        };
        self.expand.forward_map(&y, Some(&shortcut), true)
    }
}

/// The head's weights, kept on the device for scoring and for Grad-CAM's closed form.
#[derive(Debug, Clone)]
pub struct Head {
    /// [hidden, 2048]
    pub fc1_weight: Tensor,
    pub fc1_bias: Tensor,
    /// [2, hidden]
    pub fc2_weight: Tensor,
    pub fc2_bias: Tensor,
    pub activation: HeadActivation,
}

impl Head {
    /// Pre-activation of the hidden layer for pooled features [b, 2048].
    pub fn hidden_pre(&self, pooled: &Tensor) -> candle_core::Result<Tensor> {
        pooled
            .matmul(&self.fc1_weight.t()?)?
            .broadcast_add(&self.fc1_bias)
    }

    pub fn activate(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        match self.activation {
            HeadActivation::None => Ok(z.clone()),
            HeadActivation::Relu => z.relu(),
        }
    }

    /// Logits [b, 2] for pooled features [b, 2048]. Dropout is the identity at inference.
    pub fn logits(&self, pooled: &Tensor) -> candle_core::Result<Tensor> {
        let hidden = self.activate(&self.hidden_pre(pooled)?)?;
        hidden
            .matmul(&self.fc2_weight.t()?)?
            .broadcast_add(&self.fc2_bias)
    }
}

/// What one forward pass yields.
#[derive(Debug)]
pub struct ForwardOutput {
    /// Last-stage feature map, NHWC [b, h/32, w/32, 2048].
    pub features: Tensor,
    /// Global average of the features [b, 2048].
    pub pooled: Tensor,
    /// [b, 2]
    pub logits: Tensor,
    /// Softmax of the logits [b, 2].
    pub probabilities: Tensor,
}

#[derive(Debug, Clone)]
pub struct ResNet50Dlr {
    stem: FoldedConv,
    stages: Vec<Vec<Bottleneck>>,
    pub head: Head,
    engine: ConvEngine,
    pub device: Device,
}

/// Takes named weights off a [`WeightSource`] and builds folded convolutions on one device.
struct ConvLoader<'a> {
    weights: &'a mut WeightSource,
    format: WeightFormat,
    engine: ConvEngine,
    /// Set when int8 weights run on the int8 engine (CPU); otherwise they are dequantized.
    int8_kernel: Option<Kernel>,
    device: &'a Device,
}

impl ConvLoader<'_> {
    /// The convolution `conv` (OIHW `shape`) with the BatchNorm `bn` folded in.
    fn folded(
        &mut self,
        conv: &str,
        bn: &str,
        shape: [usize; 4],
        stride: usize,
        padding: usize,
    ) -> Result<FoldedConv, ModelError> {
        let [cout, cin, k, _] = shape;
        if self.format.is_folded() {
            return self.prefolded(conv, [cout, cin, k], stride, padding);
        }
        let c = [shape[0]];
        let device = self.device;
        let mut take = |name: String, shape: &[usize]| -> Result<Tensor, ModelError> {
            Ok(self.weights.take(&name, shape)?.to_device(device)?)
        };
        let weight = take(format!("{conv}.weight"), &shape)?;
        let gamma = take(format!("{bn}.weight"), &c)?;
        let beta = take(format!("{bn}.bias"), &c)?;
        let mean = take(format!("{bn}.running_mean"), &c)?;
        let var = take(format!("{bn}.running_var"), &c)?;
        let bn = BatchNorm {
            gamma: &gamma,
            beta: &beta,
            mean: &mean,
            var: &var,
        };
        Ok(FoldedConv::fold(&weight, bn, stride, padding, self.engine)?)
    }

    /// A convolution stored folded: `<conv>.weight` [cout, k*k*cin] and `<conv>.bias`.
    fn prefolded(
        &mut self,
        conv: &str,
        [cout, cin, k]: [usize; 3],
        stride: usize,
        padding: usize,
    ) -> Result<FoldedConv, ModelError> {
        let weight_name = format!("{conv}.weight");
        let rows = self.weights.take(&weight_name, &[cout, k * k * cin])?;
        let bias = self.weights.take(&format!("{conv}.bias"), &[cout])?;
        let int8 = self.weights.take_int8(&weight_name);
        // A calibrated file's fixed input scale; where the weights are dequantized (not on the
        // int8 engine) the activations stay f32 and the scale has nothing to do.
        let input_scale = if self.format == WeightFormat::FoldedInt8Static && conv != STEM {
            let name = format!("{conv}.input_scale");
            let step: Vec<f32> = self
                .weights
                .take(&name, &[1])?
                .to_dtype(DType::F32)?
                .to_vec1()?;
            let scaling = ActivationScaling::fixed(step[0])
                .map_err(|reason| ModelError::BadTensor { name, reason })?;
            Some(scaling)
        } else {
            None
        };
        if let (Some(kernel), Some(q)) = (self.int8_kernel, int8) {
            let bias: Vec<f32> = bias.to_dtype(DType::F32)?.to_vec1()?;
            let mut layer = Int8Conv::new(&q, bias, k, stride, padding, kernel)?;
            if let Some(scaling) = input_scale {
                layer.set_scaling(scaling)?;
            }
            return Ok(FoldedConv::int8(layer));
        }
        Ok(FoldedConv::from_rows(
            &rows.to_device(self.device)?,
            bias.to_device(self.device)?,
            k,
            stride,
            padding,
            self.engine,
        )?)
    }
}

impl ResNet50Dlr {
    /// Builds the network from named weights in `format`, folding every BatchNorm that is not
    /// folded yet. Int8 weights run on `int8_kernel` when it is given (CPU only), and are
    /// dequantized for `engine` otherwise.
    pub fn load(
        w: &mut WeightSource,
        metadata: &ModelMetadata,
        device: &Device,
        engine: ConvEngine,
        int8_kernel: Option<Kernel>,
    ) -> Result<Self, ModelError> {
        let format = metadata.weight_format;
        let input_channels = metadata.input_channels as usize;
        let hidden = metadata.head_hidden as usize;
        let activation = metadata.head_activation;
        let mut convs = ConvLoader {
            weights: w,
            format,
            engine,
            int8_kernel,
            device,
        };
        let stem = convs.folded(STEM, STEM_BATCHNORM, [64, input_channels, 7, 7], 2, 3)?;
        let mut stages = Vec::new();
        let mut in_ch = 64;
        for (s, (blocks, width)) in STAGES.iter().enumerate() {
            let out_ch = width * EXPANSION;
            let mut stage = Vec::new();
            for b in 0..*blocks {
                let p = block_prefix(s, b);
                let cin = if b == 0 { in_ch } else { out_ch };
                // v1.5: the stride sits on the 3x3 convolution; stage 1 keeps the resolution.
                let stride = if b == 0 && s > 0 { 2 } else { 1 };
                let mut conv = |(conv, bn): (&str, &str), shape, stride, padding| {
                    convs.folded(
                        &format!("{p}.{conv}"),
                        &format!("{p}.{bn}"),
                        shape,
                        stride,
                        padding,
                    )
                };
                let reduce = conv(REDUCE, [*width, cin, 1, 1], 1, 0)?;
                let spatial = conv(SPATIAL, [*width, *width, 3, 3], stride, 1)?;
                let expand = conv(EXPAND, [out_ch, *width, 1, 1], 1, 0)?;
                let downsample = if b == 0 {
                    Some(conv(DOWNSAMPLE, [out_ch, cin, 1, 1], stride, 0)?)
                } else {
                    None
                };
                stage.push(Bottleneck {
                    reduce,
                    spatial,
                    expand,
                    downsample,
                });
            }
            stages.push(stage);
            in_ch = out_ch;
        }
        let f32_on = |t: Tensor| -> Result<Tensor, ModelError> {
            Ok(t.to_dtype(DType::F32)?.to_device(device)?)
        };
        let head = Head {
            fc1_weight: f32_on(w.take("fc1.weight", &[hidden, FEATURE_CHANNELS])?)?,
            fc1_bias: f32_on(w.take("fc1.bias", &[hidden])?)?,
            fc2_weight: f32_on(w.take("fc2.weight", &[NUM_CLASSES, hidden])?)?,
            fc2_bias: f32_on(w.take("fc2.bias", &[NUM_CLASSES])?)?,
            activation,
        };
        Ok(Self {
            stem,
            stages,
            head,
            engine,
            device: device.clone(),
        })
    }

    /// Every convolution, stem first, in the order they run.
    pub fn convolutions(&self) -> Vec<&FoldedConv> {
        self.convolutions_named()
            .into_iter()
            .map(|(_, conv)| conv)
            .collect()
    }

    /// Every convolution with its torchvision name (without `.weight`), in the order they run.
    fn convolutions_named(&self) -> Vec<(String, &FoldedConv)> {
        let mut all = vec![(STEM.to_string(), &self.stem)];
        for (stage, blocks) in self.stages.iter().enumerate() {
            for (index, block) in blocks.iter().enumerate() {
                all.extend(full_names(stage, index, block.named()));
            }
        }
        all
    }

    /// `convolutions_named`, mutably.
    fn convolutions_named_mut(&mut self) -> Vec<(String, &mut FoldedConv)> {
        let mut all = vec![(STEM.to_string(), &mut self.stem)];
        for (stage, blocks) in self.stages.iter_mut().enumerate() {
            for (index, block) in blocks.iter_mut().enumerate() {
                all.extend(full_names(stage, index, block.named_mut()));
            }
        }
        all
    }

    /// Every convolution in the order they run, with its torchvision name and the height and
    /// width of its input when the network's input is `height` x `width` (for profiling).
    pub fn convolution_sites(&self, height: usize, width: usize) -> Vec<ConvSite<'_>> {
        let mut sites = vec![ConvSite {
            name: STEM.into(),
            conv: &self.stem,
            input: (height, width),
        }];
        let (h, w) = self.stem.output_size(height, width);
        // The 3x3 stride-2 max pool, padding 1.
        let (mut h, mut w) = output_size(h, w, 3, 2, 1);
        for (stage, blocks) in self.stages.iter().enumerate() {
            for (index, block) in blocks.iter().enumerate() {
                // All but the expand read the block's input; the expand reads the 3x3's output.
                let out = block.spatial.output_size(h, w);
                for (name, conv) in full_names(stage, index, block.named()) {
                    let input = if std::ptr::eq(conv, &block.expand) {
                        out
                    } else {
                        (h, w)
                    };
                    sites.push(ConvSite { name, conv, input });
                }
                (h, w) = out;
            }
        }
        sites
    }

    /// The int8 layers' kernel, count and resident bytes, if any layer runs on the int8
    /// engine.
    pub fn int8_summary(&self) -> Option<(Kernel, usize, usize)> {
        let layers: Vec<&Int8Conv> = self
            .convolutions()
            .into_iter()
            .filter_map(FoldedConv::as_int8)
            .collect();
        let first = layers.first()?;
        Some((
            first.kernel(),
            layers.len(),
            layers.iter().map(|l| l.resident_bytes()).sum(),
        ))
    }

    /// The int8 layers by name, mutably.
    fn int8_layers_mut(&mut self) -> Vec<(String, &mut Int8Conv)> {
        self.convolutions_named_mut()
            .into_iter()
            .filter_map(|(name, conv)| conv.as_int8_mut().map(|l| (name, l)))
            .collect()
    }

    /// How every int8 layer scales its activations (per row unless the file says otherwise;
    /// for measuring one scheme against another).
    pub fn set_int8_scaling(&mut self, scaling: ActivationScaling) -> candle_core::Result<()> {
        for (_, layer) in self.int8_layers_mut() {
            layer.set_scaling(scaling)?;
        }
        Ok(())
    }

    /// Each int8 layer's activation scaling, by name.
    pub fn int8_scalings(&self) -> Vec<(String, ActivationScaling)> {
        self.convolutions_named()
            .into_iter()
            .filter_map(|(name, conv)| conv.as_int8().map(|l| (name, l.scaling())))
            .collect()
    }

    /// Starts counting every int8 layer's input values; returns the counters by layer name.
    pub fn record_int8_inputs(&mut self) -> Vec<(String, Arc<InputHistogram>)> {
        self.int8_layers_mut()
            .into_iter()
            .map(|(name, layer)| {
                let recorder = Arc::new(InputHistogram::new());
                layer.set_recorder(Some(recorder.clone()));
                (name, recorder)
            })
            .collect()
    }

    /// Stops what `record_int8_inputs` started.
    pub fn stop_recording_int8_inputs(&mut self) {
        for (_, layer) in self.int8_layers_mut() {
            layer.set_recorder(None);
        }
    }

    /// Runs the network on a normalised NHWC batch [b, size, size, channels].
    pub fn forward(&self, input: &Tensor) -> candle_core::Result<ForwardOutput> {
        let x = self.stem.forward(input, None, true)?;
        let mut x = FeatureMap::from(max_pool_3x3_s2(&x, self.engine)?);
        for stage in &self.stages {
            for block in stage {
                x = block.forward(&x)?;
            }
        }
        let features = x.tensor;
        let pooled = features.mean(1)?.mean(1)?;
        let logits = self.head.logits(&pooled)?;
        let probabilities = candle_nn::ops::softmax(&logits, D::Minus1)?;
        Ok(ForwardOutput {
            features,
            pooled,
            logits,
            probabilities,
        })
    }
}
