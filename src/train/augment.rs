//! Training augmentation for CEUS regions of interest, seeded so that a training run repeats.
//!
//! What varies between exams and readers at the bedside, and only that:
//! - where the reader drew the ROI: the box shifts by up to ±6% of its size and grows or
//!   shrinks by up to ±10% (the ROI is "lesion plus surrounding tissue", drawn by hand);
//! - the scanner's gain and dynamic range: brightness ×0.85–1.15, contrast ×0.85–1.15 about
//!   the ROI's mean;
//! - speckle: multiplicative noise with a 12% standard deviation, as coherent ultrasound
//!   imaging produces.
//!
//! No flips or rotations. Vertical flips put the far field on top: attenuation, acoustic
//! shadowing and the enhancement gradient of a CEUS image run from the probe downwards, and a
//! flipped image is one no scanner produces. Horizontal flips mirror the convention that
//! transverse views show the patient's right on the screen's left, so the lesion's relation
//! to the vessels and the duodenum would become an anatomy never seen at the bedside.
//! Rotations beyond a few degrees tilt the depth axis for the same reason.

use image::GrayImage;

use crate::rng::{mix64, SplitMix64};
use crate::roi::Roi;

/// A case's pixels for training: a gray crop holding the ROI with a margin around it, so that
/// shifted and enlarged boxes stay inside real tissue.
#[derive(Debug, Clone)]
pub struct RoiCrop {
    pub gray: GrayImage,
    /// The ROI within `gray`.
    pub roi: Roi,
}

/// Margin kept around the ROI: enough for the largest shift plus growth.
pub const MARGIN: f64 = 0.12;

/// The ROI with its margin, clamped to a `width`x`height` picture.
pub fn margin_box(roi: &Roi, width: u32, height: u32) -> Roi {
    let mx = (roi.width as f64 * MARGIN).ceil() as u32;
    let my = (roi.height as f64 * MARGIN).ceil() as u32;
    let x0 = roi.x.saturating_sub(mx);
    let y0 = roi.y.saturating_sub(my);
    let x1 = (roi.x + roi.width + mx).min(width);
    let y1 = (roi.y + roi.height + my).min(height);
    Roi::new(x0, y0, x1 - x0, y1 - y0)
}

impl RoiCrop {
    /// Cuts the ROI and its margin (clamped to the picture) out of a whole gray picture.
    pub fn from_picture(picture: &GrayImage, roi: &Roi) -> Self {
        let outer = margin_box(roi, picture.width(), picture.height());
        let gray = image::imageops::crop_imm(picture, outer.x, outer.y, outer.width, outer.height)
            .to_image();
        RoiCrop {
            gray,
            roi: Roi::new(roi.x - outer.x, roi.y - outer.y, roi.width, roi.height),
        }
    }

    /// The ROI exactly as drawn.
    pub fn plain(&self) -> GrayImage {
        image::imageops::crop_imm(
            &self.gray,
            self.roi.x,
            self.roi.y,
            self.roi.width,
            self.roi.height,
        )
        .to_image()
    }

    /// One augmented view, determined by `seed`.
    pub fn augmented(&self, seed: u64) -> GrayImage {
        let mut rng = SplitMix64(mix64(seed));
        let mut sym = || 2.0 * rng.unit() - 1.0;
        let scale = 1.0 + 0.10 * sym();
        let (w, h) = (
            self.roi.width as f64 * scale,
            self.roi.height as f64 * scale,
        );
        let cx =
            self.roi.x as f64 + self.roi.width as f64 / 2.0 + 0.06 * self.roi.width as f64 * sym();
        let cy = self.roi.y as f64
            + self.roi.height as f64 / 2.0
            + 0.06 * self.roi.height as f64 * sym();
        let (gw, gh) = (self.gray.width() as f64, self.gray.height() as f64);
        let bw = w.round().clamp(1.0, gw);
        let bh = h.round().clamp(1.0, gh);
        let x0 = (cx - bw / 2.0).round().clamp(0.0, gw - bw) as u32;
        let y0 = (cy - bh / 2.0).round().clamp(0.0, gh - bh) as u32;
        let mut out =
            image::imageops::crop_imm(&self.gray, x0, y0, bw as u32, bh as u32).to_image();

        let gain = 1.0 + 0.15 * sym();
        let contrast = 1.0 + 0.15 * sym();
        let mean = out.as_raw().iter().map(|&v| v as f64).sum::<f64>() / out.len().max(1) as f64;
        let noise_seed = rng.next_u64();
        for (i, p) in out.as_mut().iter_mut().enumerate() {
            // Speckle: the sum of three uniforms is close to normal (sd 0.5 for U(-0.5, 0.5)s).
            let mut n = SplitMix64(noise_seed ^ mix64(i as u64));
            let z = (n.unit() + n.unit() + n.unit() - 1.5) * 2.0;
            let v = ((*p as f64 - mean) * contrast + mean) * gain * (1.0 + 0.12 * z);
            *p = v.round().clamp(0.0, 255.0) as u8;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 2 + y) % 256) as u8]))
    }

    #[test]
    fn the_margin_is_clamped_and_the_roi_kept_exactly() {
        let picture = gradient(200, 100);
        let roi = Roi::new(5, 40, 100, 50);
        let crop = RoiCrop::from_picture(&picture, &roi);
        assert_eq!(crop.roi, Roi::new(5, 6, 100, 50));
        assert_eq!(crop.gray.dimensions(), (117, 62));
        assert_eq!(crop.plain(), roi.crop(&picture).unwrap());
    }

    #[test]
    fn views_are_seeded_and_stay_near_the_roi() {
        let picture = gradient(300, 300);
        let crop = RoiCrop::from_picture(&picture, &Roi::new(100, 100, 100, 80));
        let a = crop.augmented(1);
        assert_eq!(a, crop.augmented(1), "same seed, same view");
        assert_ne!(a, crop.augmented(2));
        for seed in 0..50 {
            let v = crop.augmented(seed);
            assert!((89..=111).contains(&v.width()) && (71..=89).contains(&v.height()));
        }
    }
}
