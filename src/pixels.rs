//! Pixel conversions shared by the frame sources and the model's preprocessing: gray exactly as
//! Pillow's `convert("L")` makes it, so that what a source hands on and what the network was
//! trained on agree to the level.

use image::{GrayImage, RgbImage};

/// ITU-R 601-2 luma with Pillow's fixed-point rounding:
/// `L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16`.
#[inline]
pub fn pillow_luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `Image.convert("L")` of an RGB image.
pub fn gray_from_rgb(rgb: &RgbImage) -> GrayImage {
    let mut out = GrayImage::new(rgb.width(), rgb.height());
    for (o, p) in out.pixels_mut().zip(rgb.pixels()) {
        o.0[0] = pillow_luma(p.0[0], p.0[1], p.0[2]);
    }
    out
}
