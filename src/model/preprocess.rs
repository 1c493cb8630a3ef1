//! Preprocessing exactly as the model file prescribes: gray as Pillow's `convert("L")`, resize
//! to the input size with the declared filter as Pillow's `Image.resize` does it (antialiased
//! when shrinking), scale to [0, 1], normalise per channel.
//!
//! Training pipelines almost always go through Pillow, so matching it is what makes the daemon
//! see what the network was trained on. Resizing uses `fast_image_resize`, whose convolution
//! resampler follows Pillow's (filter support scaled by the shrink factor, two separable
//! passes, 8-bit intermediate); tests check it against Pillow's own output within ±1 level.

use candle_core::{Device, Tensor};
use fast_image_resize as fr;
use image::GrayImage;

use super::error::ModelError;
use super::metadata::{ModelMetadata, ResizeFilter};

/// Resizes a gray image to `size`x`size` as Pillow's `Image.resize((size, size), filter)`.
///
/// Pillow resamples in two one-axis passes, rounding and clipping to 8 bits in between. With
/// filters that overshoot (bicubic) the order of the passes changes the result by up to ~20
/// gray levels near saturated edges, so the passes run here as two one-axis resizes in the
/// order Pillow 13 chooses: vertical first when the height shrinks by more than twice as many
/// pixels as the width, horizontal first otherwise. (Pillow 12 and older ran the horizontal
/// pass first for all but extreme portrait images; for tall ROIs a model trained with them
/// sees up to ±1 level with bilinear, more with bicubic.)
pub fn resize_gray(
    gray: &GrayImage,
    size: u32,
    filter: ResizeFilter,
) -> Result<GrayImage, ModelError> {
    if gray.width() == 0 || gray.height() == 0 {
        return Err(ModelError::Input("cannot resize an empty image".into()));
    }
    let alg = match filter {
        ResizeFilter::Bilinear => fr::ResizeAlg::Convolution(fr::FilterType::Bilinear),
        // Pillow's BICUBIC is the a = -0.5 cubic, i.e. Catmull-Rom.
        ResizeFilter::Bicubic => fr::ResizeAlg::Convolution(fr::FilterType::CatmullRom),
    };
    let (w, h) = (gray.width(), gray.height());
    let shrink_w = w as i64 - size as i64;
    let shrink_h = h as i64 - size as i64;
    let vertical_first = shrink_h > 0 && shrink_h > 2 * shrink_w;
    let pixels = gray.as_raw().clone();
    let both = if vertical_first {
        let vertical = resize_u8(pixels, w, h, w, size, alg)?;
        resize_u8(vertical, w, size, size, size, alg)?
    } else {
        let horizontal = resize_u8(pixels, w, h, size, h, alg)?;
        resize_u8(horizontal, size, h, size, size, alg)?
    };
    GrayImage::from_raw(size, size, both)
        .ok_or_else(|| ModelError::Input("resize produced a wrong-sized buffer".into()))
}

fn resize_u8(
    pixels: Vec<u8>,
    width: u32,
    height: u32,
    to_width: u32,
    to_height: u32,
    alg: fr::ResizeAlg,
) -> Result<Vec<u8>, ModelError> {
    if (width, height) == (to_width, to_height) {
        return Ok(pixels);
    }
    let src = fr::images::Image::from_vec_u8(width, height, pixels, fr::PixelType::U8)
        .map_err(|e| ModelError::Input(format!("resize source: {e}")))?;
    let mut dst = fr::images::Image::new(to_width, to_height, fr::PixelType::U8);
    fr::Resizer::new()
        .resize(&src, &mut dst, &fr::ResizeOptions::new().resize_alg(alg))
        .map_err(|e| ModelError::Input(format!("resize: {e}")))?;
    Ok(dst.into_vec())
}

/// Network-sized gray images to a normalised NHWC batch [b, size, size, channels]; a gray
/// value is replicated into every channel when the model takes three.
pub fn batch_tensor(
    images: &[GrayImage],
    meta: &ModelMetadata,
    device: &Device,
) -> Result<Tensor, ModelError> {
    let size = meta.input_size;
    let channels = meta.input_channels as usize;
    let mut data = Vec::with_capacity(images.len() * (size * size) as usize * channels);
    for (i, img) in images.iter().enumerate() {
        if img.width() != size || img.height() != size {
            return Err(ModelError::Input(format!(
                "image {i} is {}x{}, the model takes {size}x{size}",
                img.width(),
                img.height()
            )));
        }
        for p in img.as_raw() {
            let x = *p as f32 / 255.0;
            for c in 0..channels {
                data.push((x - meta.mean[c]) / meta.std[c]);
            }
        }
    }
    Ok(Tensor::from_vec(
        data,
        (images.len(), size as usize, size as usize, channels),
        device,
    )?)
}
