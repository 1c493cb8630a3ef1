//! Replay of recorded exams: multi-frame DICOM cines, paced by their own frame timing.
//!
//! Frame times come from, in order of precedence, Frame Time Vector (0018,1065: the interval
//! before each frame, ms), Frame Time (0018,1063: a constant interval, ms) or Cine Rate
//! (0018,0040: frames per second). A cine with none of them is refused: replaying it at a
//! guessed rate would put every frame at the wrong time since injection.
//!
//! The contrast injection time, when the file records it, is Contrast/Bolus Start Time
//! (0018,1042) taken relative to the clip's first frame, Acquisition Time (0008,0032) or,
//! failing that, Content Time (0008,0033), on the same day.

use dicom_dictionary_std::tags;
use std::path::Path;
use std::time::Duration;

use super::dicom::DicomFile;
use super::frame::Frame;
use super::input_error::InputError;
use super::source::{FrameSource, Pacer, Pacing, SourceEvent};

/// Timing read from a cine's header.
#[derive(Debug, Clone, PartialEq)]
pub struct CineTiming {
    /// Time of each frame from the first, which is at zero.
    pub frame_times: Vec<Duration>,
    /// Which attribute gave the frame times.
    pub source: &'static str,
    /// Contrast injection relative to the first frame, in seconds (negative: before it).
    pub injection_offset_s: Option<f64>,
}

/// Parses a DICOM TM value (HH, HHMM, HHMMSS, HHMMSS.FFFFFF; also the old HH:MM:SS) to seconds
/// since midnight.
pub fn parse_tm(value: &str) -> Option<f64> {
    let v: String = value.trim().chars().filter(|c| *c != ':').collect();
    let (main, fraction) = match v.split_once('.') {
        Some((m, f)) => (m, f),
        None => (v.as_str(), ""),
    };
    if main.is_empty()
        || main.len() % 2 != 0
        || main.len() > 6
        || !main.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || (!fraction.is_empty() && main.len() != 6) {
        return None;
    }
    let field = |i: usize| {
        main.get(i..i + 2)
            .map(|s| s.parse::<u32>().unwrap_or(0))
            .unwrap_or(0)
    };
    let (h, m, s) = (field(0), field(2), field(4));
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let frac = if fraction.is_empty() {
        0.0
    } else {
        format!("0.{fraction}").parse::<f64>().ok()?
    };
    Some(h as f64 * 3600.0 + m as f64 * 60.0 + s as f64 + frac)
}

fn text(file: &DicomFile, tag: dicom_core::Tag) -> Option<String> {
    file.object()
        .element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
}

fn numbers(file: &DicomFile, tag: dicom_core::Tag) -> Result<Option<Vec<f64>>, String> {
    match file.object().element_opt(tag).ok().flatten() {
        None => Ok(None),
        Some(e) => e
            .to_multi_float64()
            .map(Some)
            .map_err(|err| format!("{tag}: not a number: {err}")),
    }
}

/// Reads the frame timing and injection time of a cine.
pub fn cine_timing(file: &DicomFile) -> Result<CineTiming, String> {
    let n = file.frames() as usize;
    let from_intervals = |intervals_ms: &[f64]| -> Result<Vec<Duration>, String> {
        let mut t = 0f64;
        let mut out = Vec::with_capacity(n);
        for (i, ms) in intervals_ms.iter().enumerate() {
            if !ms.is_finite() || *ms < 0.0 {
                return Err(format!(
                    "frame interval {ms} ms at frame {i} is not a non-negative number"
                ));
            }
            // The first entry is the interval before the first frame: it is at zero by definition.
            if i > 0 {
                t += ms;
            }
            out.push(Duration::from_secs_f64(t / 1e3));
        }
        Ok(out)
    };
    let (frame_times, source) = if let Some(v) = numbers(file, tags::FRAME_TIME_VECTOR)? {
        if v.len() != n {
            return Err(format!(
                "Frame Time Vector has {} values for {n} frames",
                v.len()
            ));
        }
        (from_intervals(&v)?, "Frame Time Vector")
    } else if let Some(v) = numbers(file, tags::FRAME_TIME)? {
        let ms = *v.first().ok_or("Frame Time is empty")?;
        if !(ms.is_finite() && ms > 0.0) {
            return Err(format!("Frame Time {ms} ms is not positive"));
        }
        (
            (0..n)
                .map(|i| Duration::from_secs_f64(i as f64 * ms / 1e3))
                .collect(),
            "Frame Time",
        )
    } else if let Some(v) = numbers(file, tags::CINE_RATE)? {
        let fps = *v.first().ok_or("Cine Rate is empty")?;
        if !(fps.is_finite() && fps > 0.0) {
            return Err(format!("Cine Rate {fps} is not positive"));
        }
        (
            (0..n)
                .map(|i| Duration::from_secs_f64(i as f64 / fps))
                .collect(),
            "Cine Rate",
        )
    } else if n == 1 {
        (vec![Duration::ZERO], "single frame")
    } else {
        return Err(format!(
            "{n} frames but no Frame Time Vector, Frame Time or Cine Rate: cannot replay with correct timing"
        ));
    };
    let start = text(file, tags::ACQUISITION_TIME).or_else(|| text(file, tags::CONTENT_TIME));
    let injection_offset_s = match text(file, tags::CONTRAST_BOLUS_START_TIME) {
        None => None,
        Some(bolus) => {
            let bolus_s = parse_tm(&bolus).ok_or_else(|| {
                format!("Contrast/Bolus Start Time '{bolus}' is not a DICOM time")
            })?;
            let start = start.ok_or(
                "Contrast/Bolus Start Time without an Acquisition or Content Time to relate it to",
            )?;
            let start_s = parse_tm(&start)
                .ok_or_else(|| format!("Acquisition/Content Time '{start}' is not a DICOM time"))?;
            Some(bolus_s - start_s)
        }
    };
    Ok(CineTiming {
        frame_times,
        source,
        injection_offset_s,
    })
}

/// A DICOM cine played back as a frame source.
pub struct DicomReplay {
    file: DicomFile,
    timing: CineTiming,
    pacer: Pacer,
    next: u32,
}

impl DicomReplay {
    pub fn open(path: &Path, pacing: Pacing) -> Result<Self, InputError> {
        let file = DicomFile::open(path)?;
        let timing = cine_timing(&file).map_err(|reason| InputError::Dicom {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(Self {
            file,
            timing,
            pacer: Pacer::new(pacing),
            next: 0,
        })
    }

    pub fn timing(&self) -> &CineTiming {
        &self.timing
    }
}

impl FrameSource for DicomReplay {
    fn describe(&self) -> String {
        let n = self.timing.frame_times.len();
        let span = self.timing.frame_times.last().copied().unwrap_or_default();
        format!(
            "dicom:{} ({n} frames over {:.2} s, timing from {})",
            self.file.path().display(),
            span.as_secs_f64(),
            self.timing.source
        )
    }

    fn next_event(&mut self) -> Result<SourceEvent, InputError> {
        if self.next >= self.file.frames() {
            return Ok(SourceEvent::End);
        }
        let index = self.next;
        let timestamp = self.timing.frame_times[index as usize];
        let loaded = self.file.frame(index)?;
        self.pacer.wait(timestamp);
        self.next += 1;
        Ok(SourceEvent::Frame(Frame::from_picture(
            loaded.picture,
            index as u64,
            timestamp,
        )))
    }

    fn recorded_exam(&self) -> Option<u64> {
        Some(0)
    }

    fn injection_offset_s(&self) -> Option<f64> {
        self.timing.injection_offset_s
    }
}
