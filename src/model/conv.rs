//! The one place where a convolution (and the stem's max-pool) is executed.
//!
//! Activations are NHWC. On the CPU a convolution is im2col + one matrix product against the
//! BatchNorm-folded weight matrix: candle's direct `conv2d` is several times slower for this
//! network, while one large GEMM per layer runs near the machine's f32 peak. 1x1 convolutions
//! with stride 1 need no im2col at all (NHWC rows already are the patches). On other devices the
//! folded weights go through candle's own `conv2d`, which the CPU can also run so both paths are
//! tested against each other. Layers of an int8 model file run on the int8 engine
//! (`super::int8`) on the CPU, and are dequantized to f32 for other devices.

use candle_core::{
    CpuStorage, CustomOp1, DType, Device, InplaceOp2, InplaceOp3, Layout, Shape, Tensor,
};
use rayon::prelude::*;

use super::int8::Int8Conv;
use super::kernel_io::{contiguous_f32, contiguous_f32_mut, output_size};

/// How convolutions are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvEngine {
    /// NHWC im2col + matmul (CPU).
    Im2col,
    /// candle's `conv2d` on NCHW (any device).
    Candle,
}

impl ConvEngine {
    pub fn for_device(device: &Device) -> Self {
        if device.is_cpu() {
            ConvEngine::Im2col
        } else {
            ConvEngine::Candle
        }
    }
}

/// A feature map passed from one convolution to the next: the NHWC tensor and, when the layer
/// that made it found them, each pixel's largest value. The int8 engine's epilogue finds them
/// while it writes a ReLU output; the next int8 layer takes its activation scales from them
/// instead of passing over its input again.
#[derive(Debug, Clone)]
pub struct FeatureMap {
    pub tensor: Tensor,
    pub pixel_max: Option<Vec<f32>>,
}

impl From<Tensor> for FeatureMap {
    fn from(tensor: Tensor) -> Self {
        Self {
            tensor,
            pixel_max: None,
        }
    }
}

/// A convolution with its BatchNorm folded in: `y = conv(x, w * s) + (beta - mean * s)` where
/// `s = gamma / sqrt(var + eps)`.
#[derive(Debug, Clone)]
pub struct FoldedConv {
    kernel_size: usize,
    stride: usize,
    padding: usize,
    out_channels: usize,
    body: ConvBody,
}

/// The weights in the form the chosen engine runs.
#[derive(Debug, Clone)]
enum ConvBody {
    /// [k*k*cin, cout], rows ordered (ky, kx, ci).
    Im2col {
        weight: Tensor,
        bias: Tensor,
    },
    /// [cout, cin, k, k].
    Candle {
        weight: Tensor,
        bias: Tensor,
    },
    Int8(Box<Int8Conv>),
}

/// BatchNorm epsilon of torchvision's ResNet.
pub const BN_EPS: f64 = 1e-5;

/// Folds `bn` (gamma, beta, running mean, running variance) into the OIHW weight `w`; returns
/// the folded OIHW weight and the bias, both f32.
pub fn fold_batchnorm(
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (cout, _, _, _) = w.dims4()?;
    let scale = gamma
        .to_dtype(DType::F32)?
        .div(&(var.to_dtype(DType::F32)? + BN_EPS)?.sqrt()?)?;
    let w = w
        .to_dtype(DType::F32)?
        .broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
    let bias = (beta.to_dtype(DType::F32)? - mean.to_dtype(DType::F32)?.mul(&scale)?)?;
    Ok((w, bias))
}

/// An OIHW weight as rows [cout, kh*kw*cin] in (ky, kx, ci) order: the folded file layout and
/// the order im2col reads an NHWC patch.
pub fn oihw_to_rows(w: &Tensor) -> candle_core::Result<Tensor> {
    let (cout, cin, kh, kw) = w.dims4()?;
    w.permute((0, 2, 3, 1))?
        .reshape((cout, kh * kw * cin))?
        .contiguous()
}

/// A BatchNorm's per-channel tensors, as PyTorch names them `weight` (gamma), `bias` (beta),
/// `running_mean` and `running_var`.
pub struct BatchNorm<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub mean: &'a Tensor,
    pub var: &'a Tensor,
}

impl FoldedConv {
    /// Folds `bn` into the OIHW weight `w`.
    pub fn fold(
        w: &Tensor,
        bn: BatchNorm,
        stride: usize,
        padding: usize,
        engine: ConvEngine,
    ) -> candle_core::Result<Self> {
        let (w, bias) = fold_batchnorm(w, bn.gamma, bn.beta, bn.mean, bn.var)?;
        Self::from_rows(&oihw_to_rows(&w)?, bias, w.dim(2)?, stride, padding, engine)
    }

    /// An already folded convolution: `rows` [cout, kernel_size²·cin] in (ky, kx, ci) order.
    pub fn from_rows(
        rows: &Tensor,
        bias: Tensor,
        kernel_size: usize,
        stride: usize,
        padding: usize,
        engine: ConvEngine,
    ) -> candle_core::Result<Self> {
        let (cout, kk) = rows.dims2()?;
        let cin = kk / (kernel_size * kernel_size);
        let rows = rows.to_dtype(DType::F32)?;
        let bias = bias.to_dtype(DType::F32)?;
        let body = match engine {
            ConvEngine::Im2col => ConvBody::Im2col {
                weight: rows.t()?.contiguous()?,
                bias,
            },
            ConvEngine::Candle => ConvBody::Candle {
                weight: rows
                    .reshape((cout, kernel_size, kernel_size, cin))?
                    .permute((0, 3, 1, 2))?
                    .contiguous()?,
                bias,
            },
        };
        Ok(Self {
            kernel_size,
            stride,
            padding,
            out_channels: cout,
            body,
        })
    }

    /// A convolution run by the int8 engine.
    pub fn int8(conv: Int8Conv) -> Self {
        Self {
            kernel_size: conv.kernel_size(),
            stride: conv.stride(),
            padding: conv.padding(),
            out_channels: conv.out_channels(),
            body: ConvBody::Int8(Box::new(conv)),
        }
    }

    /// Output height and width for an `h` x `w` input.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        output_size(h, w, self.kernel_size, self.stride, self.padding)
    }

    /// The int8 engine's layer, if this convolution runs on it.
    pub fn as_int8(&self) -> Option<&Int8Conv> {
        match &self.body {
            ConvBody::Int8(c) => Some(c),
            _ => None,
        }
    }

    pub fn as_int8_mut(&mut self) -> Option<&mut Int8Conv> {
        match &mut self.body {
            ConvBody::Int8(c) => Some(c),
            _ => None,
        }
    }

    /// Applies the convolution to NHWC `x`, then adds `residual` (a bottleneck's shortcut) if
    /// given, then ReLU if asked.
    pub fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        match &self.body {
            ConvBody::Im2col { weight, bias } => {
                self.forward_im2col(x, weight, bias, residual, relu)
            }
            ConvBody::Int8(conv) => conv.forward(x, residual, relu),
            ConvBody::Candle { weight, bias } => {
                let nchw = x.permute((0, 3, 1, 2))?;
                let y = nchw.conv2d(weight, self.padding, self.stride, 1, 1)?;
                let y = y.broadcast_add(&bias.reshape((1, self.out_channels, 1, 1))?)?;
                let mut y = y.permute((0, 2, 3, 1))?.contiguous()?;
                if let Some(r) = residual {
                    y = (y + r)?;
                }
                if relu {
                    y = y.relu()?;
                }
                Ok(y)
            }
        }
    }

    /// `forward` on a feature map, passing per-pixel maxima through the int8 engine.
    pub fn forward_map(
        &self,
        x: &FeatureMap,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<FeatureMap> {
        match &self.body {
            ConvBody::Int8(conv) => {
                let (tensor, pixel_max) =
                    conv.forward_with_maxima(&x.tensor, x.pixel_max.as_deref(), residual, relu)?;
                Ok(FeatureMap { tensor, pixel_max })
            }
            _ => Ok(self.forward(&x.tensor, residual, relu)?.into()),
        }
    }

    fn forward_im2col(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        residual: Option<&Tensor>,
        relu: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let (ho, wo) = self.output_size(h, w);
        let rows = if self.kernel_size == 1 && self.stride == 1 && self.padding == 0 {
            x.reshape((b * h * w, c))?
        } else {
            x.contiguous()?.apply_op1_no_bwd(&Im2col {
                kernel_size: self.kernel_size,
                stride: self.stride,
                padding: self.padding,
            })?
        };
        // The product is a fresh tensor that nothing else holds: the epilogue (bias, shortcut,
        // ReLU) runs in place over it in one pass instead of three.
        let y = rows.matmul(weight)?;
        let epilogue = Epilogue { relu };
        match residual {
            Some(r) => {
                let r = r.reshape((b * ho * wo, self.out_channels))?;
                y.inplace_op3(bias, &r, &epilogue)?
            }
            None => y.inplace_op2(bias, &epilogue)?,
        }
        y.reshape((b, ho, wo, self.out_channels))
    }
}

/// `y[m, n] = act(y[m, n] + bias[n] (+ residual[m, n]))`, in place over a GEMM's output.
struct Epilogue {
    relu: bool,
}

impl Epilogue {
    fn apply(&self, y: &mut [f32], bias: &[f32], residual: Option<&[f32]>) {
        let n = bias.len();
        let relu = self.relu;
        y.par_chunks_mut(n * 64)
            .enumerate()
            .for_each(|(chunk, rows)| {
                let first = chunk * n * 64;
                for (r, row) in rows.chunks_mut(n).enumerate() {
                    let res = residual.map(|res| &res[first + r * n..first + (r + 1) * n]);
                    for j in 0..n {
                        let mut v = row[j] + bias[j];
                        if let Some(res) = res {
                            v += res[j];
                        }
                        row[j] = if relu { v.max(0.0) } else { v };
                    }
                }
            });
    }
}

impl InplaceOp2 for Epilogue {
    fn name(&self) -> &'static str {
        "conv-epilogue"
    }

    fn cpu_fwd(
        &self,
        y: &mut CpuStorage,
        ly: &Layout,
        bias: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<()> {
        let bias = contiguous_f32(bias, lb, InplaceOp2::name(self))?;
        self.apply(
            contiguous_f32_mut(y, ly, InplaceOp2::name(self))?,
            bias,
            None,
        );
        Ok(())
    }
}

impl InplaceOp3 for Epilogue {
    fn name(&self) -> &'static str {
        "conv-epilogue-residual"
    }

    fn cpu_fwd(
        &self,
        y: &mut CpuStorage,
        ly: &Layout,
        bias: &CpuStorage,
        lb: &Layout,
        residual: &CpuStorage,
        lr: &Layout,
    ) -> candle_core::Result<()> {
        let bias = contiguous_f32(bias, lb, InplaceOp3::name(self))?;
        let residual = contiguous_f32(residual, lr, InplaceOp3::name(self))?;
        let y = contiguous_f32_mut(y, ly, InplaceOp3::name(self))?;
        if residual.len() != y.len() {
            return Err(candle_core::Error::Msg(format!(
                "{}: shortcut has {} values, output {}",
                InplaceOp3::name(self),
                residual.len(),
                y.len()
            )));
        }
        self.apply(y, bias, Some(residual));
        Ok(())
    }
}

/// NHWC im2col: [b, h, w, c] -> [b*ho*wo, k*k*c], zero padding, columns ordered (ky, kx, ci).
struct Im2col {
    kernel_size: usize,
    stride: usize,
    padding: usize,
}

impl CustomOp1 for Im2col {
    fn name(&self) -> &'static str {
        "im2col-nhwc"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = layout.shape().dims4()?;
        let src = contiguous_f32(storage, layout, self.name())?;
        let (k, s, p) = (self.kernel_size, self.stride, self.padding);
        let (ho, wo) = output_size(h, w, k, s, p);
        let row_len = k * k * c;
        let mut dst = vec![0f32; b * ho * wo * row_len];
        // One output image row (wo patches) per task: enough work per task, no shared writes.
        dst.par_chunks_mut(wo * row_len)
            .enumerate()
            .for_each(|(task, out_row)| {
                let (bi, oy) = (task / ho, task % ho);
                let image = &src[bi * h * w * c..(bi + 1) * h * w * c];
                for ox in 0..wo {
                    let patch = &mut out_row[ox * row_len..(ox + 1) * row_len];
                    // The taps kx whose column is inside the image: one run of pixels per
                    // kernel row, copied at once (the stem's are 7 pixels of 3 channels).
                    let x0 = (ox * s) as isize - p as isize;
                    let first = (-x0).clamp(0, k as isize) as usize;
                    let last = (w as isize - x0).clamp(0, k as isize) as usize;
                    for ky in 0..k {
                        let iy = (oy * s + ky) as isize - p as isize;
                        if iy < 0 || iy >= h as isize || first >= last {
                            continue; // stays zero: padding
                        }
                        let from = (iy as usize * w + (x0 + first as isize) as usize) * c;
                        let to = (ky * k + first) * c;
                        let len = (last - first) * c;
                        patch[to..to + len].copy_from_slice(&image[from..from + len]);
                    }
                }
            });
        Ok((CpuStorage::F32(dst), Shape::from((b * ho * wo, row_len))))
    }
}

/// The stem's 3x3 stride-2 max-pool with padding 1 (padding never wins), NHWC.
pub fn max_pool_3x3_s2(x: &Tensor, engine: ConvEngine) -> candle_core::Result<Tensor> {
    match engine {
        ConvEngine::Im2col => x.contiguous()?.apply_op1_no_bwd(&MaxPool3x3S2),
        ConvEngine::Candle => {
            // Inputs follow a ReLU, so zero padding cannot win a max over a window that always
            // holds at least one real (non-negative) value.
            let nchw = x
                .permute((0, 3, 1, 2))?
                .pad_with_zeros(2, 1, 1)?
                .pad_with_zeros(3, 1, 1)?;
            let y = nchw.max_pool2d_with_stride(3, 2)?;
            y.permute((0, 2, 3, 1))?.contiguous()
        }
    }
}

struct MaxPool3x3S2;

impl CustomOp1 for MaxPool3x3S2 {
    fn name(&self) -> &'static str {
        "maxpool3x3s2-nhwc"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = layout.shape().dims4()?;
        let src = contiguous_f32(storage, layout, self.name())?;
        let (ho, wo) = output_size(h, w, 3, 2, 1);
        let mut dst = vec![f32::NEG_INFINITY; b * ho * wo * c];
        dst.par_chunks_mut(wo * c)
            .enumerate()
            .for_each(|(task, out_row)| {
                let (bi, oy) = (task / ho, task % ho);
                let image = &src[bi * h * w * c..(bi + 1) * h * w * c];
                for ox in 0..wo {
                    let out = &mut out_row[ox * c..(ox + 1) * c];
                    for ky in 0..3 {
                        let iy = (oy * 2 + ky) as isize - 1;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..3 {
                            let ix = (ox * 2 + kx) as isize - 1;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let from = (iy as usize * w + ix as usize) * c;
                            for (o, v) in out.iter_mut().zip(&image[from..from + c]) {
                                *o = o.max(*v);
                            }
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(dst), Shape::from((b, ho, wo, c))))
    }
}
