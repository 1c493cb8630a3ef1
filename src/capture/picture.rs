//! A decoded picture, in the colour space it came in, and a frame loaded from a file.

use image::{GrayImage, RgbImage};

use crate::pixels::gray_from_rgb;
use crate::roi::{Roi, RoiError};

/// One decoded frame, in the colour space it came in.
#[derive(Debug, Clone)]
pub enum Picture {
    Gray(GrayImage),
    Rgb(RgbImage),
}

impl Picture {
    pub fn width(&self) -> u32 {
        match self {
            Picture::Gray(g) => g.width(),
            Picture::Rgb(c) => c.width(),
        }
    }

    pub fn height(&self) -> u32 {
        match self {
            Picture::Gray(g) => g.height(),
            Picture::Rgb(c) => c.height(),
        }
    }

    /// The ROI in gray, as Pillow's `crop(...).convert("L")` gives it.
    pub fn gray_roi(&self, roi: &Roi) -> Result<GrayImage, RoiError> {
        match self {
            Picture::Gray(g) => roi.crop(g),
            Picture::Rgb(c) => Ok(gray_from_rgb(&roi.crop(c)?)),
        }
    }
}

/// A decoded frame and what the file says about it.
#[derive(Debug, Clone)]
pub struct LoadedFrame {
    pub picture: Picture,
    pub frame: u32,
    pub frames_in_file: u32,
    /// Short description, e.g. "DICOM US, YBR_FULL_422, JPEG Baseline" or "PNG".
    pub format: String,
}
