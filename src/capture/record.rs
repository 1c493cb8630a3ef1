//! Recording any source to a frame folder (`ceusd capture`).

use image::{GrayImage, RgbImage};
use std::path::Path;
use std::time::Duration;

use super::folder::{Manifest, ManifestFrame, MANIFEST, MANIFEST_VERSION};
use super::frame::{Frame, LumaRange, PixelFormat};
use super::input_error::InputError;
use super::source::{FrameSource, SourceEvent};
use crate::atomic_file::write_atomically;
use crate::roi::Roi;
use std::io::Write;

/// When to stop recording (whichever comes first; the source's end always stops it).
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordLimit {
    pub frames: Option<u64>,
    /// Recorded time, by the frames' own timestamps.
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordSummary {
    pub frames: u64,
    pub dropped: u64,
    /// Span between the first and last frame.
    pub seconds: f64,
    /// Frames per second over that span.
    pub fps: f64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> InputError + '_ {
    move |e| InputError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Writes one frame as PNG, in gray or RGB as it came. Formats without an RGB path here (YUV,
/// MJPEG) are stored as the full-range gray of the whole frame, which is what the pipeline uses.
fn write_frame(frame: &Frame, path: &Path) -> Result<(), InputError> {
    let fail = |reason: String| InputError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let (w, h) = (frame.width, frame.height);
    let tight = |bpp: usize| -> Vec<u8> {
        (0..h as usize)
            .flat_map(|r| {
                frame.data[r * frame.stride..r * frame.stride + w as usize * bpp]
                    .iter()
                    .copied()
            })
            .collect()
    };
    frame.validate().map_err(|e| fail(e.to_string()))?;
    let result = match frame.format {
        PixelFormat::Grey => GrayImage::from_raw(w, h, tight(1)).map(|g| g.save(path)),
        PixelFormat::Rgb24 => RgbImage::from_raw(w, h, tight(3)).map(|c| c.save(path)),
        PixelFormat::Bgr24 => RgbImage::from_raw(w, h, tight(3))
            .map(|mut c| {
                c.pixels_mut().for_each(|p| p.0.swap(0, 2));
                c
            })
            .map(|c| c.save(path)),
        _ => {
            let gray = frame
                .gray_region(&Roi::full(w, h), LumaRange::Limited)
                .map_err(|e| fail(e.to_string()))?;
            Some(gray.save(path))
        }
    };
    match result {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(fail(e.to_string())),
        None => Err(fail("frame buffer does not match its size".into())),
    }
}

/// Records `source` into the new or empty folder `out`. The manifest is written last, under a
/// temporary name then renamed, so a folder with a manifest is always complete.
pub fn record(
    source: &mut dyn FrameSource,
    out: &Path,
    limit: RecordLimit,
) -> Result<RecordSummary, InputError> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(io(out))?;
        if entries.next().is_some() {
            return Err(InputError::Io {
                path: out.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the output folder is not empty: a recording is never overwritten",
                ),
            });
        }
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut frames = Vec::new();
    let mut first: Option<Duration> = None;
    let mut no_signal = 0u64;
    loop {
        if limit.frames.is_some_and(|n| frames.len() as u64 >= n) {
            break;
        }
        match source.next_event()? {
            SourceEvent::End => break,
            SourceEvent::NoSignal { reason } => {
                no_signal += 1;
                log::warn!("no signal while recording: {reason}");
                continue;
            }
            SourceEvent::Frame(frame) => {
                let t0 = *first.get_or_insert(frame.timestamp);
                let t = frame.timestamp.saturating_sub(t0).as_secs_f64();
                if limit.seconds.is_some_and(|s| t > s) {
                    break;
                }
                let file = format!("{:08}.png", frame.sequence);
                write_frame(&frame, &out.join(&file))?;
                frames.push(ManifestFrame {
                    file,
                    sequence: frame.sequence,
                    timestamp_s: t,
                });
            }
        }
    }
    let gaps: u64 = frames
        .windows(2)
        .map(|p| p[1].sequence.saturating_sub(p[0].sequence + 1))
        .sum();
    let dropped = source.dropped().max(gaps);
    let seconds = frames.last().map(|f| f.timestamp_s).unwrap_or(0.0);
    let manifest = Manifest {
        format_version: MANIFEST_VERSION,
        source: source.describe(),
        // Timestamps restart at the first recorded frame; the injection moves with them.
        injection_offset_s: source
            .injection_offset_s()
            .map(|o| o - first.unwrap_or_default().as_secs_f64()),
        dropped,
        frames,
    };
    let manifest_path = out.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| InputError::Manifest {
        path: manifest_path.clone(),
        reason: e.to_string(),
    })?;
    write_atomically(&manifest_path, |w| w.write_all(text.as_bytes()))
        .map_err(io(&manifest_path))?;
    if no_signal > 0 {
        log::warn!("{no_signal} no-signal event(s) while recording");
    }
    let n = manifest.frames.len() as u64;
    Ok(RecordSummary {
        frames: n,
        dropped,
        seconds,
        fps: if seconds > 0.0 {
            (n.saturating_sub(1)) as f64 / seconds
        } else {
            0.0
        },
    })
}
