//! Where frames come from: still images (PNG, JPEG), DICOM files (one frame, or a cine replayed
//! as a stream), and frame folders; what a frame is and how its pixels become gray; recording
//! any source to a frame folder.

pub mod dicom;
pub mod dicom_write;
pub mod folder;
pub mod frame;
pub mod reconnect;
pub mod record;
pub mod replay;
pub mod source;
pub mod spec;
pub mod still;
pub mod synthetic;
pub mod synthetic_session;
pub mod v4l2;

use image::{GrayImage, RgbImage};
use std::path::{Path, PathBuf};

use crate::pixels::gray_from_rgb;
use crate::roi::{Roi, RoiError};

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable image: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("{path}: DICOM: {reason}")]
    Dicom { path: PathBuf, reason: String },
    #[error("{path}: frame {frame} requested, the file has {frames} frame(s) (numbered from 0)")]
    NoSuchFrame {
        path: PathBuf,
        frame: u32,
        frames: u32,
    },
    #[error("{path}: {what} is not supported: {reason}")]
    Unsupported {
        path: PathBuf,
        what: String,
        reason: String,
    },
    #[error(transparent)]
    Roi(#[from] RoiError),
}

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

/// What a file is, from its first bytes (DICOM Part 10 has "DICM" at offset 128), falling
/// back to the extension for DICOM files written without the preamble.
pub fn is_dicom(path: &Path) -> Result<bool, InputError> {
    use std::io::Read;
    let mut head = [0u8; 132];
    let mut f = std::fs::File::open(path).map_err(|e| InputError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let n = f.read(&mut head).map_err(|e| InputError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if n == 132 && &head[128..132] == b"DICM" {
        return Ok(true);
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    Ok(ext == "dcm" || ext == "dicom")
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

/// Loads frame `frame` of an image or DICOM file.
pub fn load_frame(path: &Path, frame: u32) -> Result<LoadedFrame, InputError> {
    if is_dicom(path)? {
        dicom::load_frame(path, frame)
    } else {
        still::load(path, frame)
    }
}
