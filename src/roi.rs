//! Regions of interest: the lesion rectangle (lesion plus surrounding tissue) drawn on the
//! B-mode pane and taken at the same place on the CEUS pane.

use image::{GenericImageView, ImageBuffer, Pixel};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RoiError {
    #[error("ROI '{0}': expected x,y,w,h as four non-negative integers")]
    Syntax(String),
    #[error("ROI {roi} is empty: width and height must be at least 1")]
    Empty { roi: Roi },
    #[error("ROI {roi} lies outside the {width}x{height} image")]
    OutOfBounds { roi: Roi, width: u32, height: u32 },
}

/// A rectangle in pixels: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roi {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl std::fmt::Display for Roi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{},{}", self.x, self.y, self.width, self.height)
    }
}

impl std::str::FromStr for Roi {
    type Err = RoiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let nums: Option<Vec<u32>> = parts.iter().map(|p| p.parse::<u32>().ok()).collect();
        match nums.as_deref() {
            Some([x, y, w, h]) => Ok(Roi {
                x: *x,
                y: *y,
                width: *w,
                height: *h,
            }),
            _ => Err(RoiError::Syntax(s.to_string())),
        }
    }
}

impl Roi {
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Roi {
            x,
            y,
            width,
            height,
        }
    }

    /// True when `other` is non-empty and lies wholly inside this rectangle.
    pub fn contains(&self, other: &Roi) -> bool {
        other.width > 0
            && other.height > 0
            && other.x >= self.x
            && other.y >= self.y
            && other.x as u64 + other.width as u64 <= self.x as u64 + self.width as u64
            && other.y as u64 + other.height as u64 <= self.y as u64 + self.height as u64
    }

    /// Pixels shared with `other`.
    pub fn intersection_area(&self, other: &Roi) -> u64 {
        let span = |a0: u32, a_len: u32, b0: u32, b_len: u32| {
            let end = (a0 as i64 + a_len as i64).min(b0 as i64 + b_len as i64);
            (end - a0.max(b0) as i64).max(0) as u64
        };
        span(self.x, self.width, other.x, other.width)
            * span(self.y, self.height, other.y, other.height)
    }

    pub fn full(width: u32, height: u32) -> Self {
        Roi {
            x: 0,
            y: 0,
            width,
            height,
        }
    }

    /// Checks that the ROI is non-empty and lies wholly inside a `width`x`height` image: a ROI
    /// that sticks out is an error, never silently clamped (it would score another region).
    pub fn check_within(&self, width: u32, height: u32) -> Result<(), RoiError> {
        if self.width == 0 || self.height == 0 {
            return Err(RoiError::Empty { roi: *self });
        }
        let right = self.x as u64 + self.width as u64;
        let bottom = self.y as u64 + self.height as u64;
        if right > width as u64 || bottom > height as u64 {
            return Err(RoiError::OutOfBounds {
                roi: *self,
                width,
                height,
            });
        }
        Ok(())
    }

    /// The ROI's pixels, copied out of `image`.
    pub fn crop<P: Pixel + 'static>(
        &self,
        image: &ImageBuffer<P, Vec<P::Subpixel>>,
    ) -> Result<ImageBuffer<P, Vec<P::Subpixel>>, RoiError> {
        self.check_within(image.width(), image.height())?;
        Ok(image
            .view(self.x, self.y, self.width, self.height)
            .to_image())
    }
}
