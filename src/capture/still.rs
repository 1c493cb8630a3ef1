//! Still images (PNG, JPEG) through the `image` crate.

use image::{DynamicImage, ImageReader};
use std::path::Path;

use super::input_error::InputError;
use super::picture::{LoadedFrame, Picture};

pub fn load(path: &Path, frame: u32) -> Result<LoadedFrame, InputError> {
    let bad = |reason: String| InputError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let reader = ImageReader::open(path)
        .map_err(|e| InputError::Io {
            path: path.to_path_buf(),
            source: e,
        })?
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let format = reader
        .format()
        .map(|f| format!("{f:?}").to_uppercase())
        .ok_or_else(|| bad("unknown format (expected PNG, JPEG or DICOM)".into()))?;
    let decoded = reader.decode().map_err(|e| bad(e.to_string()))?;
    if frame != 0 {
        return Err(InputError::NoSuchFrame {
            path: path.to_path_buf(),
            frame,
            frames: 1,
        });
    }
    let picture = match decoded {
        DynamicImage::ImageLuma8(g) => Picture::Gray(g),
        // Pillow opens a 16-bit gray PNG as "I;16" and its convert("L") clips at 255; do the
        // same so a site's exported training images and the daemon agree.
        DynamicImage::ImageLuma16(g) => Picture::Gray(image::ImageBuffer::from_fn(
            g.width(),
            g.height(),
            |x, y| image::Luma([g.get_pixel(x, y).0[0].min(255) as u8]),
        )),
        // Transparency carries no image content in an exported frame: drop it, as
        // `convert("L")` does.
        other => Picture::Rgb(other.to_rgb8()),
    };
    Ok(LoadedFrame {
        picture,
        frame,
        frames_in_file: 1,
        format,
    })
}
