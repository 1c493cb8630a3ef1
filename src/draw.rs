//! Drawing on RGB images without font files: pixels clipped to the image, thick or dashed
//! lines, and text in an 8x8 bitmap font. The ROC plot and the key image burned into the
//! PACS's copy use it; a cart has no font or plotting system to rely on.

use font8x8::legacy::BASIC_LEGACY;
use image::{Rgb, RgbImage};

/// Sets one pixel; outside the image, nothing.
pub fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

/// A straight line `width` pixels thick, dashed every 12 steps if asked.
pub fn line(
    img: &mut RgbImage,
    (x0, y0): (f64, f64),
    (x1, y1): (f64, f64),
    c: [u8; 3],
    width: i64,
    dash: bool,
) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) * 2.0).ceil().max(1.0) as usize;
    for i in 0..=steps {
        if dash && (i / 12) % 2 == 1 {
            continue;
        }
        let t = i as f64 / steps as f64;
        let (x, y) = (
            (x0 + t * (x1 - x0)).round() as i64,
            (y0 + t * (y1 - y0)).round() as i64,
        );
        for dx in -(width / 2)..=(width - 1) / 2 {
            for dy in -(width / 2)..=(width - 1) / 2 {
                put(img, x + dx, y + dy, c);
            }
        }
    }
}

/// `s` in the 8x8 bitmap font scaled by `scale`, top-left at (x, y); characters outside ASCII
/// are left blank.
pub fn text(img: &mut RgbImage, x: f64, y: f64, s: &str, c: [u8; 3], scale: i64) {
    for (i, ch) in s.chars().enumerate() {
        let glyph = BASIC_LEGACY.get(ch as usize).copied().unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    for sy in 0..scale {
                        for sx in 0..scale {
                            put(
                                img,
                                x as i64 + (i as i64 * 8 + col) * scale + sx,
                                y as i64 + row as i64 * scale + sy,
                                c,
                            );
                        }
                    }
                }
            }
        }
    }
}
