//! A BatchNorm-folded convolution run in int8, as a candle custom op over NHWC f32 tensors.
//!
//! Per call: take each input pixel's largest value (handed over by the previous int8 layer's
//! epilogue, or found and checked in one pass for the first); then each GEMM task quantizes its
//! rows of the input to u8 while packing them (im2col and packing are one pass; a 1x1 stride-1
//! convolution reads its rows straight from NHWC), multiplies them against the weight panels
//! packed at load time, and writes f32 through the fused epilogue (scales, bias, shortcut,
//! ReLU, each output pixel's largest value). The output stays f32 between layers: the default
//! scales are found at run time from the values themselves, and the shortcuts and Grad-CAM read
//! f32.
//!
//! Activation scales are per GEMM row by default: one scale for each output pixel's input
//! patch (its max / 255), the "per-token" scheme of int8 transformer inference. Post-ReLU
//! feature maps are heavy-tailed, so one scale for the whole tensor spends most of the 8 bits
//! on a few large values; a scale per row costs one more pass over a patch that is already in
//! cache and keeps every row's full resolution. Per tensor is kept to measure against, and a
//! static scale per layer (calibrated once on a set of images, stored in the model file) is
//! the third choice; the agreement test measures all three.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use super::calibration::InputHistogram;
use super::gemm::{gemm, Epilogue, Kernel, PackedActivations, PackedWeights, RowWriter};
use super::quantize::{activation_scale, ChannelQuantized, Range};
use crate::model::kernel_io::{contiguous_f32, output_size};

/// How activations are given their u8 scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActivationScaling {
    /// One scale per GEMM row (an output pixel's input patch): the default.
    PerRow,
    /// One scale for the whole input tensor, found at run time.
    PerTensor,
    /// One fixed scale (the value of one u8 step), calibrated ahead of time; larger inputs
    /// saturate at 255.
    Static(f32),
}

impl ActivationScaling {
    /// A fixed scale, which must be a positive finite number (a usable u8 step).
    pub fn fixed(step: f32) -> Result<Self, String> {
        if step.is_finite() && step >= f32::MIN_POSITIVE {
            Ok(ActivationScaling::Static(step))
        } else {
            Err(format!(
                "an input scale must be a positive finite number, not {step}"
            ))
        }
    }
}

/// An int8 convolution with its packed weights.
#[derive(Debug, Clone)]
pub struct Int8Conv {
    scaling: ActivationScaling,
    /// While calibrating: where every input value is counted.
    recorder: Option<Arc<InputHistogram>>,
    kernel_size: usize,
    stride: usize,
    padding: usize,
    in_channels: usize,
    out_channels: usize,
    weights: PackedWeights,
    weight_scales: Vec<f32>,
    bias: Vec<f32>,
}

impl Int8Conv {
    /// `weights`: [cout, kernel·kernel·cin] in (ky, kx, ci) order; `bias`: [cout].
    pub fn new(
        weights: &ChannelQuantized,
        bias: Vec<f32>,
        kernel_size: usize,
        stride: usize,
        padding: usize,
        kernel: Kernel,
    ) -> candle_core::Result<Self> {
        let taps = kernel_size * kernel_size;
        if taps == 0 || weights.k % taps != 0 || bias.len() != weights.out_channels {
            candle_core::bail!(
                "int8 convolution: {} weights per channel and {} biases do not fit a {}x{} \
                 kernel with {} outputs",
                weights.k,
                bias.len(),
                kernel_size,
                kernel_size,
                weights.out_channels
            );
        }
        if weights.k == 0 || weights.out_channels == 0 || stride == 0 {
            candle_core::bail!(
                "int8 convolution: {} weights per channel, {} outputs, stride {stride}; none \
                 may be zero",
                weights.k,
                weights.out_channels
            );
        }
        if weights.values.len() != weights.out_channels * weights.k
            || weights.scales.len() != weights.out_channels
        {
            candle_core::bail!(
                "int8 convolution: {} weights and {} scales for {} channels of {}",
                weights.values.len(),
                weights.scales.len(),
                weights.out_channels,
                weights.k
            );
        }
        if !kernel.is_available() {
            candle_core::bail!("int8 kernel {} does not run on this CPU", kernel.name());
        }
        Ok(Self {
            scaling: ActivationScaling::PerRow,
            recorder: None,
            kernel_size,
            stride,
            padding,
            in_channels: weights.k / taps,
            out_channels: weights.out_channels,
            weights: PackedWeights::pack(kernel, &weights.values, weights.out_channels, weights.k),
            weight_scales: weights.scales.clone(),
            bias,
        })
    }

    pub fn kernel(&self) -> Kernel {
        self.weights.kernel()
    }

    pub fn scaling(&self) -> ActivationScaling {
        self.scaling
    }

    /// Sets how inputs are scaled; a static scale must be positive and finite.
    pub fn set_scaling(&mut self, scaling: ActivationScaling) -> candle_core::Result<()> {
        if let ActivationScaling::Static(step) = scaling {
            ActivationScaling::fixed(step)
                .map_err(|e| candle_core::Error::Msg(format!("int8 convolution: {e}")))?;
        }
        self.scaling = scaling;
        Ok(())
    }

    /// Counts every input value into `recorder` from now on (None: stop).
    pub fn set_recorder(&mut self, recorder: Option<Arc<InputHistogram>>) {
        self.recorder = recorder;
    }

    /// Bytes this layer keeps resident (packed weights, scales, bias).
    pub fn resident_bytes(&self) -> usize {
        self.weights.resident_bytes() + 4 * (self.weight_scales.len() + self.bias.len())
    }

    /// Multiply-accumulates for an NHWC input of `h` x `w` (batch 1).
    pub fn macs(&self, h: usize, w: usize) -> usize {
        let (ho, wo) = self.output_size(h, w);
        ho * wo * self.weights.k() * self.out_channels
    }

    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    pub fn kernel_size(&self) -> usize {
        self.kernel_size
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    pub fn padding(&self) -> usize {
        self.padding
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Output height and width for an `h` x `w` input.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        output_size(h, w, self.kernel_size, self.stride, self.padding)
    }

    /// Applies the convolution to NHWC `x`, adds `residual` if given, then ReLU if asked.
    pub fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        Ok(self.forward_with_maxima(x, None, residual, relu)?.0)
    }

    /// `forward` given the input's per-pixel maxima when they are known (from the layer that
    /// made the input), returning the output's (with ReLU) for the next layer.
    pub fn forward_with_maxima(
        &self,
        x: &Tensor,
        pixel_max: Option<&[f32]>,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<(Tensor, Option<Vec<f32>>)> {
        let op = Int8ConvOp {
            conv: self,
            relu,
            pixel_max,
            output_max: Mutex::new(None),
        };
        let x = x.contiguous()?;
        let y = match residual {
            None => x.apply_op1_no_bwd(&op)?,
            Some(r) => x.apply_op2_no_bwd(&r.contiguous()?, &op)?,
        };
        let max = op
            .output_max
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        Ok((y, max))
    }

    /// The convolution over a contiguous NHWC f32 slice of shape `dims` (`pixel_max`: each
    /// input pixel's largest value, if known). Returns the output, its per-pixel maxima (with
    /// ReLU) and its shape.
    pub fn run(
        &self,
        src: &[f32],
        dims: (usize, usize, usize, usize),
        pixel_max: Option<&[f32]>,
        residual: Option<&[f32]>,
        relu: bool,
    ) -> candle_core::Result<(Vec<f32>, Option<Vec<f32>>, Shape)> {
        let (patches, shape) = self.patches(src, dims, pixel_max)?;
        let m = patches.rows();
        let len = m * self.out_channels;
        if let Some(r) = residual {
            if r.len() != len {
                candle_core::bail!(
                    "int8 convolution: shortcut has {} values, output {}",
                    r.len(),
                    len
                );
            }
        }
        let epilogue = Epilogue {
            weight_scale: &self.weight_scales,
            bias: &self.bias,
            residual,
            relu,
        };
        let mut max = relu.then(|| vec![0f32; m]);
        // Not zeroed first: the GEMM writes every element.
        let mut out = Vec::with_capacity(len);
        gemm(
            m,
            |row, writer: &mut RowWriter| patches.fill(row, writer),
            &self.weights,
            &epilogue,
            &mut out.spare_capacity_mut()[..len],
            max.as_deref_mut(),
        );
        // SAFETY: `gemm` has written all `len` elements.
        unsafe { out.set_len(len) };
        Ok((out, max, shape))
    }

    /// The input quantized to u8 and packed for the GEMM on its own (im2col where the kernel
    /// is not 1x1 stride 1), which `run` does task by task inside the GEMM: for profiling the
    /// two halves apart.
    pub fn pack_input(
        &self,
        src: &[f32],
        dims: (usize, usize, usize, usize),
        pixel_max: Option<&[f32]>,
    ) -> candle_core::Result<PackedActivations> {
        let (patches, _) = self.patches(src, dims, pixel_max)?;
        Ok(PackedActivations::pack(
            self.kernel(),
            patches.rows(),
            self.weights.k(),
            |row, writer: &mut RowWriter| patches.fill(row, writer),
        ))
    }

    /// Checks the input and finds what its GEMM rows need: each pixel's largest value (given
    /// or found) and the scaling; returns them with the output's shape.
    fn patches<'a>(
        &self,
        src: &'a [f32],
        dims: (usize, usize, usize, usize),
        pixel_max: Option<&'a [f32]>,
    ) -> candle_core::Result<(Patches<'a>, Shape)> {
        let (b, h, w, c) = dims;
        if c != self.in_channels {
            candle_core::bail!(
                "int8 convolution: input has {c} channels, the weights expect {}",
                self.in_channels
            );
        }
        if src.len() != b * h * w * c {
            candle_core::bail!(
                "int8 convolution: {} input values for a {b}x{h}x{w}x{c} input",
                src.len()
            );
        }
        let (k, p) = (self.kernel_size, self.padding);
        if h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!("int8 convolution: a {h}x{w} input is smaller than the kernel");
        }
        // Each pixel's largest value over its channels gives the rows their scales: a row's
        // patch takes the largest of its pixels' maxima (neighbouring patches share pixels, so
        // each value is read once, not k² times). A layer after another int8 layer is given
        // them (its epilogue found them); otherwise one pass over the input finds them and
        // checks it.
        let pixel_max = match pixel_max {
            Some(max) => {
                if max.len() != b * h * w {
                    candle_core::bail!(
                        "int8 convolution: {} pixel maxima for {} pixels",
                        max.len(),
                        b * h * w
                    );
                }
                Cow::Borrowed(max)
            }
            None => {
                let pixels: Vec<Range> = src.par_chunks(c).map(Range::of).collect();
                let whole = pixels.iter().fold(Range::EMPTY, |a, &r| a.join(r));
                if whole.nan {
                    candle_core::bail!("int8 convolution: the input holds NaN values");
                }
                if whole.lo < 0.0 {
                    // Every quantized layer follows a ReLU; a negative input means the network
                    // was wired wrongly, and u8 quantization would silently clip it.
                    candle_core::bail!(
                        "int8 convolution: input has negative values (min {}); only post-ReLU \
                         activations are quantized",
                        whole.lo
                    );
                }
                Cow::Owned(pixels.iter().map(|r| r.hi).collect())
            }
        };
        // Post-ReLU maxima are never NaN or negative.
        if pixel_max.iter().any(|v| v.is_nan() || *v < 0.0) {
            candle_core::bail!("int8 convolution: pixel maxima hold NaN or negative values");
        }
        let hi = pixel_max.iter().fold(0f32, |a, &v| a.max(v));
        if !hi.is_finite() {
            candle_core::bail!("int8 convolution: the input holds infinite values");
        }
        if let Some(recorder) = &self.recorder {
            recorder.record(src);
        }
        let tensor_scale = match self.scaling {
            ActivationScaling::Static(step) => step,
            _ => activation_scale(hi),
        };
        let (ho, wo) = self.output_size(h, w);
        let patches = Patches {
            src,
            dims,
            out_size: (ho, wo),
            kernel_size: k,
            stride: self.stride,
            padding: p,
            pixel_max,
            per_row: self.scaling == ActivationScaling::PerRow,
            tensor_scale,
        };
        Ok((patches, Shape::from((b, ho, wo, self.out_channels))))
    }
}

/// Where a convolution's GEMM rows come from: row `i` is output pixel `i`'s input patch
/// (the pixel itself for a 1x1 stride-1 convolution), quantized with its scale.
struct Patches<'a> {
    /// NHWC input and its dimensions (b, h, w, c).
    src: &'a [f32],
    dims: (usize, usize, usize, usize),
    out_size: (usize, usize),
    kernel_size: usize,
    stride: usize,
    padding: usize,
    /// Each input pixel's largest value.
    pixel_max: Cow<'a, [f32]>,
    /// A scale per row (from the patch's pixel maxima), or `tensor_scale` for all.
    per_row: bool,
    tensor_scale: f32,
}

impl Patches<'_> {
    fn rows(&self) -> usize {
        self.dims.0 * self.out_size.0 * self.out_size.1
    }

    /// Where output `(b, oy, ox)`'s patch reads at tap `tap`: the offset of an input pixel, or
    /// None for zero padding.
    fn tap_offset(&self, (bi, oy, ox): (usize, usize, usize), tap: usize) -> Option<usize> {
        let (_, h, w, c) = self.dims;
        let (k, s, p) = (self.kernel_size, self.stride, self.padding);
        let (ky, kx) = (tap / k, tap % k);
        let iy = (oy * s + ky).checked_sub(p).filter(|&y| y < h)?;
        let ix = (ox * s + kx).checked_sub(p).filter(|&x| x < w)?;
        Some(((bi * h + iy) * w + ix) * c)
    }

    /// Writes row `row` through `out` and returns its scale.
    fn fill(&self, row: usize, out: &mut RowWriter) -> f32 {
        let c = self.dims.3;
        let (k, s, p) = (self.kernel_size, self.stride, self.padding);
        if k == 1 && s == 1 && p == 0 {
            let px = &self.src[row * c..(row + 1) * c];
            let scale = if self.per_row {
                activation_scale(self.pixel_max[row])
            } else {
                self.tensor_scale
            };
            out.quantize(px, 1.0 / scale);
            return scale;
        }
        let (ho, wo) = self.out_size;
        let at = (row / (ho * wo), (row % (ho * wo)) / wo, row % wo);
        let taps = k * k;
        let scale = if self.per_row {
            activation_scale(
                (0..taps)
                    .filter_map(|t| self.tap_offset(at, t))
                    .fold(0f32, |a, o| a.max(self.pixel_max[o / c])),
            )
        } else {
            self.tensor_scale
        };
        let inverse = 1.0 / scale;
        for t in 0..taps {
            match self.tap_offset(at, t) {
                None => out.zeros(c),
                Some(o) => out.quantize(&self.src[o..o + c], inverse),
            }
        }
        scale
    }
}

struct Int8ConvOp<'a> {
    conv: &'a Int8Conv,
    relu: bool,
    pixel_max: Option<&'a [f32]>,
    /// Where `cpu_fwd` leaves the output's per-pixel maxima (candle's op returns the tensor only).
    output_max: Mutex<Option<Vec<f32>>>,
}

impl Int8ConvOp<'_> {
    fn run(
        &self,
        s: &CpuStorage,
        l: &Layout,
        residual: Option<&[f32]>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, max, shape) = self.conv.run(
            contiguous_f32(s, l, OP)?,
            l.shape().dims4()?,
            self.pixel_max,
            residual,
            self.relu,
        )?;
        *self.output_max.lock().unwrap_or_else(|e| e.into_inner()) = max;
        Ok((CpuStorage::F32(out), shape))
    }
}

/// The name the custom ops' errors carry.
const OP: &str = "int8 convolution";

impl CustomOp1 for Int8ConvOp<'_> {
    fn name(&self) -> &'static str {
        "conv-int8-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(s, l, None)
    }
}

impl CustomOp2 for Int8ConvOp<'_> {
    fn name(&self) -> &'static str {
        "conv-int8-nhwc-residual"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.run(s, l, Some(contiguous_f32(rs, rl, OP)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Direct f32 convolution on NHWC with (ky, kx, ci)-ordered weights: the definition.
    fn reference(
        x: &[f32],
        (b, h, w, c): (usize, usize, usize, usize),
        wts: &[f32],
        bias: &[f32],
        cout: usize,
        (k, s, p): (usize, usize, usize),
    ) -> Vec<f32> {
        let ho = (h + 2 * p - k) / s + 1;
        let wo = (w + 2 * p - k) / s + 1;
        let mut out = vec![0f32; b * ho * wo * cout];
        for bi in 0..b {
            for oy in 0..ho {
                for ox in 0..wo {
                    for o in 0..cout {
                        let mut acc = bias[o] as f64;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                for ci in 0..c {
                                    let xv = x[((bi * h + iy as usize) * w + ix as usize) * c + ci];
                                    let wv = wts[o * k * k * c + (ky * k + kx) * c + ci];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        out[((bi * ho + oy) * wo + ox) * cout + o] = acc as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn int8_convolutions_track_f32_within_quantization_error() {
        for &(b, h, w, c, cout, k, s, p) in &[
            (1, 9, 7, 8, 20, 3, 1, 1),
            (2, 8, 8, 16, 24, 3, 2, 1),
            (1, 6, 6, 32, 40, 1, 1, 0),
            (1, 7, 7, 32, 17, 1, 2, 0),
        ] {
            let x: Vec<f32> = (0..b * h * w * c)
                .map(|i| ((i * 7919 % 1000) as f32 / 1000.0).powi(2) * 3.0)
                .collect();
            let kk = k * k * c;
            let wts: Vec<f32> = (0..cout * kk)
                .map(|i| ((i * 104_729 % 2001) as f32 - 1000.0) / 1000.0 * 0.1)
                .collect();
            let bias: Vec<f32> = (0..cout).map(|o| o as f32 * 0.01 - 0.1).collect();
            let expected = reference(&x, (b, h, w, c), &wts, &bias, cout, (k, s, p));
            let q = ChannelQuantized::quantize(&wts, cout, kk).unwrap();
            let peak = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
            let mut outputs = Vec::new();
            for kernel in Kernel::available() {
                let conv = Int8Conv::new(&q, bias.clone(), k, s, p, kernel).unwrap();
                let t = Tensor::from_vec(x.clone(), (b, h, w, c), &Device::Cpu).unwrap();
                let y: Vec<f32> = conv
                    .forward(&t, None, false)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let worst = y
                    .iter()
                    .zip(&expected)
                    .fold(0f32, |m, (a, e)| m.max((a - e).abs()));
                // 8-bit activations and weights: errors of about 1% of the output's range.
                assert!(
                    worst <= 0.02 * peak,
                    "{}: {worst} vs peak {peak}",
                    kernel.name()
                );
                outputs.push(y);
            }
            for y in &outputs[1..] {
                assert_eq!(y, &outputs[0], "kernels disagree");
            }
        }
    }

    #[test]
    fn the_shortcut_and_relu_are_applied_after_the_product() {
        let (c, cout) = (4, 4);
        let wts: Vec<f32> = (0..cout * c)
            .map(|i| if i % 5 == 0 { 1.0 } else { 0.0 })
            .collect();
        let q = ChannelQuantized::quantize(&wts, cout, c).unwrap();
        let conv = Int8Conv::new(&q, vec![0.0; cout], 1, 1, 0, Kernel::detect()).unwrap();
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], (1, 1, 1, c), &Device::Cpu).unwrap();
        let r =
            Tensor::from_vec(vec![-2.0f32, -1.0, 0.5, 1.0], (1, 1, 1, c), &Device::Cpu).unwrap();
        let y: Vec<f32> = conv
            .forward(&x, Some(&r), true)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Identity weights: x + r, then ReLU; 4.0 is the tensor's max, so exact in u8.
        let expected = [0.0f32, 1.0, 3.5, 5.0];
        for (a, e) in y.iter().zip(expected) {
            assert!((a - e).abs() < 0.02, "{y:?}");
        }
    }

    #[test]
    fn maxima_from_the_epilogue_are_the_outputs_and_give_the_next_layer_the_same_result() {
        let (h, w, c, cout) = (7, 9, 16, 24);
        let x: Vec<f32> = (0..h * w * c)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0).powi(3) * 2.0)
            .collect();
        let weights = |cin: usize, cout: usize, k: usize, seed: usize| {
            let kk = k * k * cin;
            let wts: Vec<f32> = (0..cout * kk)
                .map(|i| (((i + seed) * 104_729 % 2001) as f32 - 1000.0) * 1e-4)
                .collect();
            ChannelQuantized::quantize(&wts, cout, kk).unwrap()
        };
        let bias: Vec<f32> = (0..cout).map(|o| o as f32 * 0.01 - 0.05).collect();
        for kernel in Kernel::available() {
            let first =
                Int8Conv::new(&weights(c, cout, 1, 0), bias.clone(), 1, 1, 0, kernel).unwrap();
            let second =
                Int8Conv::new(&weights(cout, cout, 3, 1), bias.clone(), 3, 1, 1, kernel).unwrap();
            let t = Tensor::from_vec(x.clone(), (1, h, w, c), &Device::Cpu).unwrap();
            let (y, max) = first.forward_with_maxima(&t, None, None, true).unwrap();
            let max = max.expect("ReLU outputs carry their maxima");
            let values: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            for (p, pixel) in values.chunks(cout).enumerate() {
                let expected = pixel.iter().fold(0f32, |a, &v| a.max(v));
                assert_eq!(max[p], expected, "{}: pixel {p}", kernel.name());
            }
            let given = second
                .forward_with_maxima(&y, Some(&max), None, true)
                .unwrap()
                .0;
            let found = second.forward(&y, None, true).unwrap();
            let (given, found): (Vec<f32>, Vec<f32>) = (
                given.flatten_all().unwrap().to_vec1().unwrap(),
                found.flatten_all().unwrap().to_vec1().unwrap(),
            );
            assert!(given
                .iter()
                .zip(&found)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            let err = second
                .forward_with_maxima(&y, Some(&max[1..]), None, true)
                .unwrap_err()
                .to_string();
            assert!(err.contains("pixel maxima"), "{err}");
            // Without ReLU nothing is kept: the output may be negative.
            assert!(first
                .forward_with_maxima(&t, None, None, false)
                .unwrap()
                .1
                .is_none());
        }
    }

    #[test]
    fn negative_or_non_finite_inputs_are_refused() {
        let q = ChannelQuantized::quantize(&[1.0; 4], 1, 4).unwrap();
        let conv = Int8Conv::new(&q, vec![0.0], 1, 1, 0, Kernel::Scalar).unwrap();
        let neg =
            Tensor::from_vec(vec![1.0f32, -0.5, 0.0, 0.0], (1, 1, 1, 4), &Device::Cpu).unwrap();
        let err = conv.forward(&neg, None, false).unwrap_err().to_string();
        assert!(err.contains("negative"), "{err}");
        let nan =
            Tensor::from_vec(vec![1.0f32, f32::NAN, 0.0, 0.0], (1, 1, 1, 4), &Device::Cpu).unwrap();
        let err = conv.forward(&nan, None, false).unwrap_err().to_string();
        assert!(err.contains("NaN"), "{err}");
        let inf = Tensor::from_vec(
            vec![1.0f32, f32::INFINITY, 0.0, 0.0],
            (1, 1, 1, 4),
            &Device::Cpu,
        )
        .unwrap();
        let err = conv.forward(&inf, None, false).unwrap_err().to_string();
        assert!(err.contains("infinite"), "{err}");
    }

    #[test]
    fn layers_that_cannot_run_are_refused_when_made() {
        let q = ChannelQuantized::quantize(&[1.0; 18], 2, 9).unwrap();
        let make = |q: &ChannelQuantized, bias: usize, size: usize, stride: usize| {
            Int8Conv::new(q, vec![0.0; bias], size, stride, 0, Kernel::Scalar)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(make(&q, 2, 3, 1), None);
        assert!(make(&q, 2, 3, 0).unwrap().contains("stride 0"));
        assert!(make(&q, 1, 3, 1).unwrap().contains("1 biases"));
        assert!(make(&q, 2, 2, 1).unwrap().contains("2x2 kernel"));
        let mut short = q.clone();
        short.scales.pop();
        assert!(make(&short, 2, 3, 1).unwrap().contains("1 scales"));
        let empty = ChannelQuantized {
            out_channels: 0,
            k: 9,
            values: vec![],
            scales: vec![],
        };
        assert!(make(&empty, 0, 3, 1).unwrap().contains("0 outputs"));
    }
}
