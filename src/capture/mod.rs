//! Where frames come from: still images (PNG, JPEG), DICOM files (one frame, or a cine replayed
//! as a stream), and frame folders; what a frame is and how its pixels become gray; recording
//! any source to a frame folder.

pub mod dicom;
pub mod dicom_write;
pub mod folder;
pub mod frame;
pub mod input_error;
pub mod mjpeg;
pub mod picture;
pub mod reconnect;
pub mod record;
pub mod replay;
pub mod source;
pub mod spec;
pub mod still;
pub mod synthetic;
pub mod synthetic_session;
pub mod v4l2;
pub mod v4l2_signal;

use std::path::Path;

// Where the rest of the crate has always named them; the sources import their own files,
// never this one.
pub use input_error::InputError;
pub use picture::{LoadedFrame, Picture};

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

/// Loads frame `frame` of an image or DICOM file.
pub fn load_frame(path: &Path, frame: u32) -> Result<LoadedFrame, InputError> {
    if is_dicom(path)? {
        dicom::load_frame(path, frame)
    } else {
        still::load(path, frame)
    }
}
