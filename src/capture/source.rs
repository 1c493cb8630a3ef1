//! `FrameSource`: one interface for every place frames come from (capture card, DICOM cine,
//! frame folder, synthetic scanner). Downstream code sees a stream of events and can tell a
//! source with no picture ("no signal": keep waiting) from one that has ended ("end": a replay
//! is over).

use std::time::{Duration, Instant};

use super::frame::Frame;
use super::input_error::InputError;

/// What a source yields next.
#[derive(Debug)]
pub enum SourceEvent {
    Frame(Frame),
    /// Alive but without a picture: the scanner is off, the cable is out, or the device is
    /// being reopened. More frames may come.
    NoSignal {
        reason: String,
    },
    /// A finite source has delivered its last frame; every later call says so again.
    End,
}

/// A stream of frames.
pub trait FrameSource: Send {
    /// What the source is, for logs and status: "dicom:exam.dcm (120 frames, 30.0 fps)".
    fn describe(&self) -> String;

    /// Blocks until the next event. An error means the source cannot go on.
    fn next_event(&mut self) -> Result<SourceEvent, InputError>;

    /// Frames lost before they reached this process (gaps in sequence numbers).
    fn dropped(&self) -> u64 {
        0
    }

    /// Contrast injection, when the source records it (a DICOM cine's Contrast/Bolus Start
    /// Time), in seconds on the frames' own timestamp clock: the same origin as
    /// `Frame::timestamp`, not the first frame (a V4L2 clock starts long before the exam).
    fn injection_offset_s(&self) -> Option<f64> {
        None
    }

    /// For recordings and the synthetic scanner: which recorded exam the frames now come from
    /// (0 for a single cine; a synthetic session plays exam after exam). A daemon can start
    /// its exams on these boundaries. Live capture knows no exams: `None`.
    fn recorded_exam(&self) -> Option<u64> {
        None
    }
}

/// How a recorded source delivers its frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// At the recorded frame times divided by `speed` (1.0 = real time).
    RealTime { speed: f64 },
    /// Each frame as soon as it is decoded (batch work).
    AsFastAsPossible,
}

impl Pacing {
    /// `speed` as given by a user: positive and finite, or an error naming it.
    pub fn real_time(speed: f64) -> Result<Self, String> {
        if speed.is_finite() && speed > 0.0 {
            Ok(Pacing::RealTime { speed })
        } else {
            Err(format!("speed {speed}: expected a positive number"))
        }
    }

    /// When a frame recorded at `timestamp` is due, counted from the start of the replay.
    pub fn due(&self, timestamp: Duration) -> Duration {
        match *self {
            Pacing::RealTime { speed } => timestamp.div_f64(speed),
            Pacing::AsFastAsPossible => Duration::ZERO,
        }
    }
}

/// Delivers a recording's frames on time: the replay's clock starts at its first frame.
#[derive(Debug, Clone)]
pub struct Pacer {
    pacing: Pacing,
    started: Option<Instant>,
}

impl Pacer {
    pub fn new(pacing: Pacing) -> Self {
        Self {
            pacing,
            started: None,
        }
    }

    /// Sleeps until the frame recorded at `timestamp` is due.
    pub fn wait(&mut self, timestamp: Duration) {
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = started + self.pacing.due(timestamp);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

/// A frame size written `WxH` (as in `size=1920x1080`), or None when it is not.
pub fn parse_frame_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?))
}
