//! What goes wrong with an input: a file, a DICOM object, a frame folder's manifest, a device.
//! Its own file so that every source can return it without importing the module that lists
//! them all.

use std::path::PathBuf;

use crate::roi::RoiError;

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
