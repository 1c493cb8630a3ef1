//! Grad-CAM (Selvaraju et al. 2017) on the last stage, for the positive (PDAC) class, as the
//! paper shows it: channel weights are the spatial means of the gradient of the PDAC logit with
//! respect to the 7x7x2048 feature map; the map is the ReLU of the weighted channel sum,
//! upsampled to the ROI and scaled to [0, 1].
//!
//! Between the feature map and the logit there are only a global average pool and the head's
//! two linear layers (with an optional ReLU), so the gradient has a closed form and needs no
//! backward pass:
//!   d logit_k / d F[h,w,c] = (1/HW) * sum_j W2[k,j] * act'(z_j) * W1[j,c],   z = W1·mean(F) + b1
//! and it is the same at every (h, w). The channel weight is therefore that value itself.

use candle_core::Tensor;
use fast_image_resize as fr;
use image::{GrayImage, Rgb, RgbImage};

use super::error::ModelError;
use super::metadata::HeadActivation;
use super::network::{ForwardOutput, Head};

/// Grad-CAM maps at feature resolution for every image of the batch: [b, h, w], not normalised.
pub fn class_activation(
    head: &Head,
    out: &ForwardOutput,
    class: usize,
) -> candle_core::Result<Tensor> {
    let (_, h, w, c) = out.features.dims4()?;
    let z = head.hidden_pre(&out.pooled)?; // [b, hidden]
    let slope = match head.activation {
        HeadActivation::None => z.ones_like()?,
        HeadActivation::Relu => z.gt(0f64)?.to_dtype(z.dtype())?,
    };
    let w2k = head.fc2_weight.narrow(0, class, 1)?; // [1, hidden]
    let upstream = slope.broadcast_mul(&w2k)?; // [b, hidden]
    let channel_grad = upstream.matmul(&head.fc1_weight)?; // [b, 2048] = d logit / d pooled
    let alpha = (channel_grad / (h * w) as f64)?;
    let b = alpha.dim(0)?;
    let weighted = out
        .features
        .broadcast_mul(&alpha.reshape((b, 1, 1, c))?)?
        .sum(3)?;
    weighted.relu()
}

/// A Grad-CAM map scaled to [0, 1] at the ROI's size, row-major.
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub width: u32,
    pub height: u32,
    pub values: Vec<f32>,
    /// True when the class had no positive evidence anywhere (the map is all zero).
    pub empty: bool,
}

/// Upsamples one feature-resolution map ([h, w]) to `width`x`height` bilinearly and divides by
/// its maximum.
pub fn upsample_normalised(cam: &Tensor, width: u32, height: u32) -> Result<Heatmap, ModelError> {
    let (h, w) = cam.dims2()?;
    let small: Vec<f32> = cam.flatten_all()?.to_vec1()?;
    let mut src = fr::images::Image::new(w as u32, h as u32, fr::PixelType::F32);
    for (px, v) in src.buffer_mut().chunks_exact_mut(4).zip(&small) {
        px.copy_from_slice(&v.to_ne_bytes());
    }
    let mut dst = fr::images::Image::new(width, height, fr::PixelType::F32);
    let options =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Interpolation(fr::FilterType::Bilinear));
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| ModelError::Heatmap(e.to_string()))?;
    let mut values: Vec<f32> = dst
        .buffer()
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]).max(0.0))
        .collect();
    let max = values.iter().cloned().fold(0f32, f32::max);
    let empty = max <= 0.0;
    if !empty {
        values.iter_mut().for_each(|v| *v /= max);
    }
    Ok(Heatmap {
        width,
        height,
        values,
        empty,
    })
}

/// The "jet" colour map used by Grad-CAM figures (blue = 0, red = 1).
fn jet(v: f32) -> [f32; 3] {
    let v = v.clamp(0.0, 1.0);
    let channel = |centre: f32| (1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0);
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// The heatmap drawn over the gray ROI: the colour's weight grows with the heat, so cold areas
/// leave the ultrasound image readable.
pub fn overlay(gray_roi: &GrayImage, heat: &Heatmap) -> Result<RgbImage, ModelError> {
    if gray_roi.width() != heat.width || gray_roi.height() != heat.height {
        return Err(ModelError::Heatmap(format!(
            "ROI is {}x{}, heatmap {}x{}",
            gray_roi.width(),
            gray_roi.height(),
            heat.width,
            heat.height
        )));
    }
    let mut out = RgbImage::new(heat.width, heat.height);
    for (i, (px, g)) in out.pixels_mut().zip(gray_roi.pixels()).enumerate() {
        let v = heat.values[i];
        let alpha = 0.25 + 0.45 * v;
        let colour = jet(v);
        let gray = g.0[0] as f32;
        let mix = |c: f32| {
            ((1.0 - alpha) * gray + alpha * c * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8
        };
        *px = Rgb([mix(colour[0]), mix(colour[1]), mix(colour[2])]);
    }
    Ok(out)
}
