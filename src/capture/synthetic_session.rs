//! A live feed from the synthetic scanner: exam after exam on one continuous clock, as a cart
//! connected to a scanner sees them. Each exam is a `SyntheticScanner` (PDAC-like and CP-like
//! in the order given, seeds counting up); the session marks where each recorded exam begins
//! and when its injection was, so a daemon can start its exams on them.
//!
//! Two faults of real capture hardware can be scripted for tests of the daemon: a no-signal
//! episode (the cable pulled: the source says "no signal" twice a second, then frames resume)
//! and a stall (a driver call that never returns, which only a watchdog can catch). A third,
//! `switch=T:WxH[:FORMAT]`, changes the output's size (and pixel format) at session time T, as
//! a scanner switching preset or an HDMI link re-negotiating does; the exams after it keep
//! the new output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::input_error::InputError;
use super::source::{FrameSource, Pacer, Pacing, SourceEvent};
use super::synthetic::{
    parse_spec, GroundTruth, LesionKind, Span, SyntheticConfig, SyntheticScanner,
};

/// What the session plays.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpec {
    /// The exams of one round, in order (kinds as listed, seeds counting up).
    pub exams: Vec<SyntheticConfig>,
    /// Rounds of `exams`; `None` plays forever.
    pub rounds: Option<u64>,
    /// Source-time episodes (seconds from the session's start) without a picture.
    pub no_signal: Vec<Span>,
    /// Source time at which a call for the next frame never returns.
    pub stall_at_s: Option<f64>,
    /// A change of the output's size and format during the session.
    pub switch: Option<OutputSwitch>,
}

/// From session time `at_s` on, frames are `width`x`height` in `format`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputSwitch {
    pub at_s: f64,
    pub width: u32,
    pub height: u32,
    pub format: Option<super::frame::PixelFormat>,
}

impl OutputSwitch {
    /// `T:WxH` or `T:WxH:FORMAT`.
    fn parse(value: &str) -> Result<Self, String> {
        let bad = || format!("switch={value}: expected SECONDS:WxH or SECONDS:WxH:FORMAT");
        let mut parts = value.split(':');
        let at_s: f64 = parts.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
        let (width, height) = parts
            .next()
            .and_then(super::source::parse_frame_size)
            .ok_or_else(bad)?;
        let format = parts.next().map(str::parse).transpose()?;
        if parts.next().is_some() || !(at_s.is_finite() && at_s >= 0.0) {
            return Err(bad());
        }
        Ok(Self {
            at_s,
            width,
            height,
            format,
        })
    }

    /// `config` with this output.
    fn apply(&self, config: &mut SyntheticConfig) {
        (config.width, config.height) = (self.width, self.height);
        if let Some(format) = self.format {
            config.format = format;
        }
    }
}

impl SessionSpec {
    /// The `i`-th exam of the session (0-based), or `None` after the last.
    pub fn exam(&self, i: u64) -> Option<SyntheticConfig> {
        let per_round = self.exams.len() as u64;
        if self.rounds.is_some_and(|r| i >= r * per_round) {
            return None;
        }
        let mut c = self.exams[(i % per_round) as usize].clone();
        c.seed = c.seed.wrapping_add(i - i % per_round);
        Some(c)
    }

    /// Total exams, `None` when endless.
    pub fn exam_count(&self) -> Option<u64> {
        self.rounds.map(|r| r * self.exams.len() as u64)
    }
}

/// Parses `pdac,cp?seed=7&rounds=2&nosignal=70-75&stall=90&switch=30:1280x720&…` : one or
/// more kinds, the session's options (`rounds`, 0 = endless; `nosignal`; `stall`; `switch`) and every option of
/// `synthetic::parse_spec`, which applies to each exam. One exam's seed is `seed + i`.
pub fn parse_session_spec(spec: &str) -> Result<SessionSpec, String> {
    let (kinds, query) = spec.split_once('?').unwrap_or((spec, ""));
    let mut exam_options = Vec::new();
    let mut rounds = Some(1);
    let mut no_signal = Vec::new();
    let mut stall_at_s = None;
    let mut switch = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "rounds" => {
                let n: u64 = value.parse().map_err(|_| {
                    format!("rounds={value}: expected a whole number (0 = endless)")
                })?;
                rounds = (n > 0).then_some(n);
            }
            "nosignal" => {
                for s in value.split(',').filter(|s| !s.is_empty()) {
                    let parsed = s.split_once('-').and_then(|(a, b)| {
                        Some(Span {
                            start_s: a.parse().ok()?,
                            end_s: b.parse().ok()?,
                        })
                    });
                    match parsed {
                        Some(span) if span.start_s.is_finite() && span.start_s < span.end_s => {
                            no_signal.push(span)
                        }
                        _ => {
                            return Err(format!(
                                "nosignal segment '{s}': expected START-END seconds"
                            ))
                        }
                    }
                }
            }
            "stall" => {
                let t: f64 = value
                    .parse()
                    .map_err(|_| format!("stall={value}: not a number"))?;
                if !(t.is_finite() && t >= 0.0) {
                    return Err(format!("stall={value}: expected seconds >= 0"));
                }
                stall_at_s = Some(t);
            }
            "switch" => switch = Some(OutputSwitch::parse(value)?),
            _ => exam_options.push(pair),
        }
    }
    let query = exam_options.join("&");
    let mut exams = Vec::new();
    for (i, kind) in kinds.split(',').enumerate() {
        let kind = kind.trim();
        kind.parse::<LesionKind>()?;
        let mut c = parse_spec(&format!("{kind}?{query}"))?;
        c.seed = c.seed.wrapping_add(i as u64);
        if let Some(switch) = &switch {
            // The new output must be one the scanner can render.
            let mut switched = c.clone();
            switch.apply(&mut switched);
            switched.validate()?;
        }
        exams.push(c);
    }
    Ok(SessionSpec {
        exams,
        rounds,
        no_signal,
        stall_at_s,
        switch,
    })
}

/// Lets a controller decide when a session's next exam begins: the demo starts the next exam
/// only once the previous result has been on screen long enough, however long scoring took.
/// Until then the scanner keeps playing the finished exam past its end (the washout goes on),
/// as a scanner left running between patients would.
#[derive(Debug, Default)]
pub struct ExamGate {
    /// Exams whose index is below this may begin.
    open_below: AtomicU64,
}

impl ExamGate {
    /// A gate that lets exam 0 begin and holds the ones after it.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            open_below: AtomicU64::new(1),
        })
    }

    /// Lets exam `index` (and those before it) begin.
    pub fn open(&self, index: u64) {
        self.open_below.fetch_max(index + 1, Ordering::SeqCst);
    }

    fn is_open(&self, index: u64) -> bool {
        index < self.open_below.load(Ordering::SeqCst)
    }
}

/// How long a gated exam goes on past its end while its gate stays closed (source seconds);
/// after that the next exam begins anyway.
pub const GATE_HOLD_LIMIT_S: f64 = 1800.0;

/// The synthetic scanner as a live feed of exams.
pub struct SyntheticSession {
    spec: SessionSpec,
    pacer: Pacer,
    /// When set, the next exam begins only once the gate lets it.
    gate: Option<Arc<ExamGate>>,
    /// Index of the exam playing, its scanner and its start on the session clock.
    current: Option<(u64, SyntheticScanner, f64)>,
    /// Next frame's sequence number on the session.
    sequence: u64,
    /// Session time of the next frame.
    now_s: f64,
    last_no_signal_s: Option<f64>,
    ended: bool,
}

impl SyntheticSession {
    pub fn new(spec: SessionSpec, pacing: Pacing) -> Result<Self, String> {
        Self::start(spec, pacing, None)
    }

    /// The same session, whose exams after the first begin only when `gate` lets them.
    pub fn gated(spec: SessionSpec, pacing: Pacing, gate: Arc<ExamGate>) -> Result<Self, String> {
        Self::start(spec, pacing, Some(gate))
    }

    fn start(
        spec: SessionSpec,
        pacing: Pacing,
        gate: Option<Arc<ExamGate>>,
    ) -> Result<Self, String> {
        if spec.exams.is_empty() {
            return Err("a synthetic session needs at least one exam".into());
        }
        let mut s = Self {
            spec,
            pacer: Pacer::new(pacing),
            gate,
            current: None,
            sequence: 0,
            now_s: 0.0,
            last_no_signal_s: None,
            ended: false,
        };
        s.begin_exam(0)?;
        Ok(s)
    }

    /// Begins exam `index`, as a source error when its configuration is refused.
    fn advance_to(&mut self, index: u64) -> Result<(), InputError> {
        self.begin_exam(index)
            .map_err(|reason| InputError::Unsupported {
                path: "synthetic".into(),
                what: "configuration".into(),
                reason,
            })
    }

    fn begin_exam(&mut self, index: u64) -> Result<(), String> {
        match self.spec.exam(index) {
            None => {
                // The last exam stays `current`: its injection time is still what was recorded.
                self.ended = true;
            }
            Some(mut config) => {
                if self.gate.is_some() {
                    // Rendered past its end for as long as the gate may stay closed.
                    config.duration_s = (config.duration_s + GATE_HOLD_LIMIT_S).min(3600.0);
                }
                let scanner = SyntheticScanner::new(config, Pacing::AsFastAsPossible)?;
                self.current = Some((index, scanner, self.now_s));
            }
        }
        Ok(())
    }

    /// The exam playing now: its index and ground truth (times on the exam's own clock; add
    /// `exam_start_s` for the session clock).
    pub fn playing(&self) -> Option<(u64, &GroundTruth, f64)> {
        self.current
            .as_ref()
            .map(|(i, s, start)| (*i, s.truth(), *start))
    }

    pub fn spec(&self) -> &SessionSpec {
        &self.spec
    }

    /// Switches the output: the exam playing goes on from its frame `index` in the new size
    /// and format, and so do the exams after it. Returns that frame.
    fn switch_output(
        &mut self,
        switch: OutputSwitch,
        index: u64,
    ) -> Result<super::frame::Frame, InputError> {
        self.spec.switch = None;
        self.spec.exams.iter_mut().for_each(|c| switch.apply(c));
        let refused = |reason: String| InputError::Unsupported {
            path: "synthetic".into(),
            what: "switch".into(),
            reason,
        };
        let Some((_, scanner, _)) = self.current.as_mut() else {
            return Err(refused("no exam is playing".into()));
        };
        let mut config = scanner.truth().config.clone();
        switch.apply(&mut config);
        let mut switched =
            SyntheticScanner::new(config, Pacing::AsFastAsPossible).map_err(refused)?;
        let frame = switched.frame(index);
        switched.resume_after(index);
        *scanner = switched;
        Ok(frame)
    }
}

impl FrameSource for SyntheticSession {
    fn describe(&self) -> String {
        let kinds: Vec<&str> = self.spec.exams.iter().map(|c| c.kind.as_str()).collect();
        let c = &self.spec.exams[0];
        format!(
            "synthetic session {} ({}, {}x{} at {} fps, {} s per exam, injection at {} s)",
            kinds.join(","),
            match self.spec.rounds {
                None => "endless".to_string(),
                Some(r) => format!("{r} round(s)"),
            },
            c.width,
            c.height,
            c.fps,
            c.duration_s,
            c.injection_s
        )
    }

    fn next_event(&mut self) -> Result<SourceEvent, InputError> {
        loop {
            if self.ended {
                return Ok(SourceEvent::End);
            }
            let Some((index, scanner, start)) = self.current.as_mut() else {
                return Ok(SourceEvent::End);
            };
            let mut frame = match scanner.next_event()? {
                SourceEvent::Frame(frame) => frame,
                SourceEvent::End => {
                    let next = *index + 1;
                    self.advance_to(next)?;
                    continue;
                }
                other => return Ok(other),
            };
            let exam_t = frame.timestamp.as_secs_f64();
            let index = *index;
            let nominal_end_s =
                self.spec.exams[(index % self.spec.exams.len() as u64) as usize].duration_s;
            if exam_t >= nominal_end_s && self.gate.as_ref().is_some_and(|g| g.is_open(index + 1)) {
                self.advance_to(index + 1)?;
                continue;
            }
            let t = *start + exam_t;
            if let Some(switch) = self.spec.switch.filter(|s| t >= s.at_s) {
                frame = self.switch_output(switch, frame.sequence)?;
            }
            self.now_s = t + 1.0 / self.spec.exams[0].fps;
            if self.spec.stall_at_s.is_some_and(|at| t >= at) {
                // A driver call that never returns: the thread stays here until the process
                // ends.
                log::warn!("synthetic session: capture stalls at {t:.1} s (scripted)");
                loop {
                    std::thread::park();
                }
            }
            // The scanner goes on while the cable is out: its frames in a gap are lost.
            if let Some(gap) = self.spec.no_signal.iter().find(|s| s.contains(t)) {
                if self.last_no_signal_s.is_none_or(|last| t - last >= 0.5) {
                    self.last_no_signal_s = Some(t);
                    self.pacer.wait(Duration::from_secs_f64(t));
                    return Ok(SourceEvent::NoSignal {
                        reason: format!(
                            "no signal (scripted episode {}–{} s)",
                            gap.start_s, gap.end_s
                        ),
                    });
                }
                continue;
            }
            frame.timestamp = Duration::from_secs_f64(t);
            frame.sequence = self.sequence;
            self.sequence += 1;
            self.pacer.wait(frame.timestamp);
            return Ok(SourceEvent::Frame(frame));
        }
    }

    fn injection_offset_s(&self) -> Option<f64> {
        self.current
            .as_ref()
            .map(|(_, s, start)| start + s.truth().injection_s)
    }

    fn recorded_exam(&self) -> Option<u64> {
        self.current.as_ref().map(|(i, _, _)| *i)
    }
}
