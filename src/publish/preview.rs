//! The preview: a few small JPEG images a second of the whole captured frame, on
//! `…/preview`, so that a display can show the scanner's panes and the operator can draw the
//! lesion's ROI on them. Off unless the configuration turns it on (`[preview]`).
//!
//! Each message is JSON carrying the image as base64, with the captured frame's size, the
//! panes and the ROI in frame pixels: a display maps a rectangle drawn on the image back to
//! frame pixels by the ratio of the two sizes, and sends it with `set_roi` or `rescore`.

use base64::Engine as _;
use serde::Serialize;

use crate::capture::frame::{ConvertError, Frame, LumaRange};
use crate::layout::Layout;
use crate::roi::Roi;

use super::messages::{unix_ms, CONTRACT_VERSION};

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("preview of frame {sequence}: {source}")]
    Convert {
        sequence: u64,
        #[source]
        source: ConvertError,
    },
    #[error("preview of frame {sequence}: JPEG encoding: {reason}")]
    Jpeg { sequence: u64, reason: String },
}

/// Standard deviation of the blur applied after scaling, in preview pixels.
const PREVIEW_BLUR_SIGMA: f32 = 1.0;

/// How previews are made: the image width and the JPEG quality.
#[derive(Debug, Clone, Copy)]
pub struct PreviewSettings {
    pub width: u32,
    pub quality: u8,
}

/// The size of a frame, in pixels.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
}

/// The scanner's two panes, in frame pixels.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Panes {
    pub b_mode: Roi,
    pub ceus: Roi,
}

impl From<Layout> for Panes {
    fn from(layout: Layout) -> Self {
        Self {
            b_mode: layout.bmode,
            ceus: layout.ceus,
        }
    }
}

/// `…/preview`, QoS 0, not retained.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewMessage {
    pub contract: u32,
    /// The running exam, or null between exams.
    pub exam_id: Option<String>,
    pub sequence: u64,
    /// Source time of the frame, seconds.
    pub at_s: f64,
    /// The captured frame's size: the coordinates of `panes`, `roi` and of commands.
    pub frame: FrameSize,
    /// The JPEG's size.
    pub image: FrameSize,
    /// Null until the exam has found the scanner's panes.
    pub panes: Option<Panes>,
    /// The ROI the exam scores, in frame pixels; null when none is set.
    pub roi: Option<Roi>,
    /// Base64 (standard alphabet, padded) of an 8-bit grayscale JPEG.
    pub jpeg: String,
    pub time_ms: u64,
}

/// The frame in gray, scaled to `settings.width` (never enlarged), as JPEG bytes.
pub fn preview_jpeg(
    frame: &Frame,
    settings: PreviewSettings,
) -> Result<(FrameSize, Vec<u8>), PreviewError> {
    let sequence = frame.sequence;
    let gray = frame
        .gray_region(&Roi::full(frame.width, frame.height), LumaRange::Full)
        .map_err(|source| PreviewError::Convert { sequence, source })?;
    let width = settings.width.min(frame.width).max(1);
    let height = ((u64::from(frame.height) * u64::from(width)) / u64::from(frame.width)).max(1);
    let height = u32::try_from(height).unwrap_or(frame.height);
    let small = if width == frame.width {
        gray
    } else {
        image::imageops::resize(&gray, width, height, image::imageops::FilterType::Triangle)
    };
    // Speckle is noise to someone placing an ROI, and the costliest thing to encode: a light
    // blur halves the JPEG, which matters because Mosquitto 2.0's websockets listener moves
    // only some tens of kB/s to a browser (eclipse-mosquitto issue 2252).
    let small = image::imageops::blur(&small, PREVIEW_BLUR_SIGMA);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, settings.quality.clamp(1, 100))
        .encode_image(&small)
        .map_err(|e| PreviewError::Jpeg {
            sequence,
            reason: e.to_string(),
        })?;
    Ok((
        FrameSize {
            width: small.width(),
            height: small.height(),
        },
        jpeg,
    ))
}

impl PreviewMessage {
    pub fn new(
        frame: &Frame,
        settings: PreviewSettings,
        exam_id: Option<&str>,
        panes: Option<Panes>,
        roi: Option<Roi>,
    ) -> Result<Self, PreviewError> {
        let (image, jpeg) = preview_jpeg(frame, settings)?;
        Ok(Self {
            contract: CONTRACT_VERSION,
            exam_id: exam_id.map(str::to_string),
            sequence: frame.sequence,
            at_s: frame.timestamp.as_secs_f64(),
            frame: FrameSize {
                width: frame.width,
                height: frame.height,
            },
            image,
            panes,
            roi,
            jpeg: base64::engine::general_purpose::STANDARD.encode(jpeg),
            time_ms: unix_ms(),
        })
    }
}
