//! Keeping a live device source alive: a device that times out, disappears (ENODEV), fails
//! with EIO or any other error is closed, reported as "no signal", and reopened with
//! exponential backoff, forever. The process never goes down because a cable was pulled; the
//! consumer sees `NoSignal` events on time while the scanner is away.

use std::time::{Duration, Instant};

use super::frame::Frame;
use super::input_error::InputError;
use super::source::{FrameSource, SourceEvent};

/// How a "no signal" reason starts when the device could not even be opened (`ceusd check`
/// tells that apart from an open device without a picture).
pub const CANNOT_OPEN: &str = "cannot open";

/// A live device: opened, read frame by frame, closed by dropping.
pub trait Device: Send {
    type Stream: Send;
    fn describe(&self) -> String;
    /// Opens and starts streaming.
    fn open(&mut self) -> Result<Self::Stream, String>;
    /// The next frame; `Ok(None)` means nothing arrived within the device's timeout. The
    /// frame's `sequence` is the driver's, and its `timestamp` is on a monotonic clock that
    /// keeps running across reopens (CLOCK_MONOTONIC for V4L2).
    fn read(&mut self, stream: &mut Self::Stream) -> Result<Option<Frame>, String>;
}

/// Backoff between reopen attempts: 0.25 s doubling to 5 s.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(250),
            max: Duration::from_secs(5),
        }
    }
}

/// A `FrameSource` over a `Device` that recovers from every failure.
pub struct Reconnecting<D: Device> {
    device: D,
    stream: Option<D::Stream>,
    backoff: Backoff,
    delay: Duration,
    next_attempt: Option<Instant>,
    /// Sequence numbers continue across reopens.
    sequence: u64,
    /// The driver's sequence number of the last frame of the current stream.
    driver_sequence: Option<u64>,
    dropped: u64,
    /// Device timestamp of the first frame: timestamps count from it.
    origin: Option<Duration>,
    pub reopens: u64,
}

impl<D: Device> Reconnecting<D> {
    pub fn new(device: D, backoff: Backoff) -> Self {
        Self {
            device,
            stream: None,
            backoff,
            delay: backoff.first,
            next_attempt: None,
            sequence: 0,
            driver_sequence: None,
            dropped: 0,
            origin: None,
            reopens: 0,
        }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    fn lost(&mut self, reason: String) -> SourceEvent {
        self.stream = None;
        self.driver_sequence = None;
        self.next_attempt = Some(Instant::now() + self.delay);
        log::warn!(
            "{}: no signal: {reason}; reopening in {:?}",
            self.device.describe(),
            self.delay
        );
        self.delay = (self.delay * 2).min(self.backoff.max);
        SourceEvent::NoSignal { reason }
    }
}

impl<D: Device> FrameSource for Reconnecting<D> {
    fn describe(&self) -> String {
        self.device.describe()
    }

    fn next_event(&mut self) -> Result<SourceEvent, InputError> {
        if self.stream.is_none() {
            if let Some(at) = self.next_attempt {
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
            }
            match self.device.open() {
                Ok(s) => {
                    if self.next_attempt.is_some() {
                        self.reopens += 1;
                        log::info!("{}: reopened", self.device.describe());
                    }
                    self.stream = Some(s);
                }
                Err(reason) => return Ok(self.lost(format!("{CANNOT_OPEN}: {reason}"))),
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(self.lost("no stream".into()));
        };
        match self.device.read(stream) {
            Ok(Some(mut frame)) => {
                self.delay = self.backoff.first;
                if let Some(last) = self.driver_sequence {
                    self.dropped += frame.sequence.saturating_sub(last + 1);
                }
                self.driver_sequence = Some(frame.sequence);
                let origin = *self.origin.get_or_insert(frame.timestamp);
                frame.timestamp = frame.timestamp.saturating_sub(origin);
                frame.sequence = self.sequence;
                self.sequence += 1;
                Ok(SourceEvent::Frame(frame))
            }
            Ok(None) => {
                Ok(self.lost("no frame within the timeout (scanner off or cable out?)".into()))
            }
            Err(reason) => Ok(self.lost(reason)),
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }
}
