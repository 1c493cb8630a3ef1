//! The exam lifecycle as a state machine: start, first frame, frames, the key-frame window's
//! close, stop, rescore. Commands and frames go in; the state changes, and what the outside
//! world must do about it comes out as a list of [`Effect`]s (publish the clock, compute a
//! result, say the exam started or stopped). A command that does not fit the state is refused
//! with a typed [`Refusal`] and changes nothing.
//!
//! Nothing here touches a file, a socket or a clock: wall-clock instants and exam ids come in
//! with the calls. The daemon's frame pipeline performs the effects (MQTT, outbox, inference
//! worker); `run_offline` (`ceusd analyze` on a cine) drives the same machine through a
//! finite source, so the two cannot disagree about when an exam starts or where its clock is.

use std::time::{Duration, Instant};

use crate::capture::frame::Frame;
use crate::capture::source::{FrameSource, SourceEvent};
use crate::exam::{layout_of, Exam, ExamError, ExamSettings, FrameShape, TimelineEvent};
use crate::layout::{Layout, LayoutSource, Presets};
use crate::roi::Roi;
use crate::timing::{Phase, PhaseBoundaries, TimingStatus};

/// How exams are set up, and the policies the driver chose.
#[derive(Clone)]
pub struct ExamSetup {
    pub settings: ExamSettings,
    /// A fixed layout, or `None` to find it on each exam's first frame.
    pub layout: Option<Layout>,
    pub presets: Presets,
    /// Source seconds per wall-clock second (replays and synthetic sources play faster).
    pub speed: f64,
    /// Start an exam whenever the recording's exam changes (recordings and the synthetic
    /// scanner; live capture records no exams).
    pub follow_recorded_exams: bool,
    /// Stop the exam when its time is over (the daemon); an offline run reads to the end.
    pub stop_when_over: bool,
}

/// What the source records about the frames it delivers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Recorded {
    /// Which recorded exam the frames come from.
    pub exam: Option<u64>,
    /// The recorded injection, on the frames' own clock.
    pub injection_s: Option<f64>,
}

impl Recorded {
    /// What `source` records now.
    pub fn of(source: &dyn FrameSource) -> Self {
        Self {
            exam: source.recorded_exam(),
            injection_s: source.injection_offset_s(),
        }
    }
}

/// An injection mark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InjectionMark {
    /// The operator's command: the injection was `seconds` before `wall`; `source_now` is the
    /// source's time at `wall`, when a frame has arrived.
    SecondsAgo {
        seconds: f64,
        wall: Instant,
        source_now: Option<f64>,
    },
    /// At this many seconds after the exam's first frame (an offline run's `--inject-at`).
    AfterFirstFrame(f64),
}

/// What the operator said the exam is for (start_exam's fields): the key to the worklist
/// entry, and the patient where the site lets commands name one. Never published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExamOrder {
    pub accession_number: Option<String>,
    pub patient_id: Option<String>,
}

/// The identity of one exam run, in every state but `NoExam`.
#[derive(Debug, Clone)]
pub struct ExamRun {
    pub id: String,
    pub order: ExamOrder,
    /// The lesion's ROI as the operator drew it (B-mode or CEUS pane).
    pub roi: Option<Roi>,
    /// Results asked for so far: 1 for the first, then one per rescore.
    pub revision: u32,
}

/// Where the current exam stands.
#[derive(Clone, Default)]
pub enum ExamState {
    /// No exam since the daemon started.
    #[default]
    NoExam,
    /// Started; waiting for a frame on which the scanner's panes are found.
    AwaitingFrame {
        run: ExamRun,
        /// An injection marked before the first frame.
        pending_mark: Option<PendingMark>,
        /// Why the panes could not be found, while they cannot.
        layout_error: Option<String>,
    },
    /// Frames go into the exam; the key-frame window has not closed.
    Running { run: ExamRun, exam: Box<Exam> },
    /// The window closed and the first result was asked for; frames still go into the exam
    /// until its time is over.
    Scored { run: ExamRun, exam: Box<Exam> },
    /// Stopped and scored; the ROI can still change and a rescore be asked for.
    Stopped {
        run: ExamRun,
        /// `None` when no frame arrived during the exam.
        exam: Option<Box<Exam>>,
    },
}

/// An injection mark waiting for the exam's first frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PendingMark {
    /// At this wall-clock instant.
    Wall(Instant),
    AfterFirstFrame(f64),
}

/// Why an exam stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Command,
    RecordingEnded,
    SourceFailed,
    NextRecordedExam,
    TimeOver,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Command => "stop command",
            StopReason::RecordingEnded => "the recording ended",
            StopReason::SourceFailed => "the source failed",
            StopReason::NextRecordedExam => "the recording's next exam began",
            StopReason::TimeOver => "the exam's time is over",
        })
    }
}

/// A result to compute: the exam as it stands now.
#[derive(Clone)]
pub struct ScoreRequest {
    pub exam_id: String,
    pub result_id: String,
    pub revision: u32,
    /// `None` when no frame arrived during the exam.
    pub exam: Option<Box<Exam>>,
    pub roi: Option<Roi>,
    pub rescore: bool,
    /// What the operator said the exam is for.
    pub order: ExamOrder,
}

/// What the driver must do after a call.
pub enum Effect {
    /// An exam began: make its start durable (the used exam ids) and say so.
    Started {
        exam_id: String,
        used_exam_ids: Vec<String>,
    },
    /// The exam's clock after a frame (the driver decides how often to publish it).
    Timing {
        exam_id: String,
        status: TimingStatus,
        boundaries: PhaseBoundaries,
        frames_kept: usize,
    },
    /// Compute and store a result.
    Score(ScoreRequest),
    Stopped {
        exam_id: String,
        reason: StopReason,
    },
    /// The exam was set up on a frame: its panes, and where they came from.
    Opened {
        exam_id: String,
        layout: Layout,
        source: LayoutSource,
    },
    /// The exam could not be set up on a frame (the scanner's panes were not found); tried
    /// again on the next one. Emitted once per exam, on the first such frame.
    NotOpened {
        exam_id: String,
        error: ExamError,
    },
    /// The source's frames changed size or format and the panes were found again on them
    /// (`change` says how, for the log).
    SourceChanged {
        exam_id: String,
        change: String,
    },
    /// The ROI given before the first frame lies on neither pane and was dropped.
    RoiDropped {
        exam_id: String,
        error: ExamError,
    },
    /// A frame could not be taken into the exam (wrong size for the layout, …).
    FrameRejected {
        exam_id: String,
        sequence: u64,
        error: ExamError,
    },
}

/// Why a command was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("exam {0} is running; stop it first")]
    ExamRunning(String),
    #[error("exam id {0} was used already; results of two exams must never share an id")]
    ExamIdUsed(String),
    #[error("the previous exam's retained result cannot be cleared ({0}); not starting")]
    PreviousNotCleared(String),
    #[error(
        "patient_id is not accepted in commands at this site (pacs.patient_id_from_commands); \
         give the accession number, the worklist names the patient"
    )]
    PatientIdNotAllowed,
    #[error("no exam is running")]
    NothingToStop,
    #[error("no exam is running: start an exam first")]
    NoExamRunning,
    #[error("no exam: start an exam first")]
    NoExam,
    #[error(
        "exam {meant} is not the current exam ({}); nothing was changed",
        current.as_ref().map_or_else(|| "there is none".to_string(), |c| format!("{c} is"))
    )]
    NotCurrentExam {
        meant: String,
        current: Option<String>,
    },
    #[error(
        "the key-frame window has passed and the exam was scored; the clock cannot change now"
    )]
    ClockSettled,
    #[error("seconds_ago {0}: before this machine started")]
    MarkBeforeStartup(f64),
    #[error("seconds_ago {0}: expected a number of seconds, zero or more")]
    BadSecondsAgo(f64),
    #[error("the scanner's panes were not found, so the ROI cannot be checked: {0}")]
    PanesNotFound(String),
    #[error(
        "no frame has arrived in this exam yet: the ROI cannot be checked against the scanner's panes"
    )]
    NoFrameYet,
    #[error("{0}")]
    RoiOutsidePanes(String),
    #[error("the exam has not been scored yet: rescoring is for after the key-frame window")]
    NotScoredYet,
    #[error("no frame arrived in this exam: nothing to rescore")]
    NothingToRescore,
    #[error("no ROI: give one with the rescore")]
    NoRoi,
    #[error("the inference worker is gone")]
    WorkerGone,
}

/// What an accepted command did.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    Started {
        exam_id: String,
    },
    Stopped {
        exam_id: String,
    },
    Marked {
        injection_s: f64,
        source_now_s: f64,
    },
    /// No frame yet: the mark waits for the exam's first frame.
    MarkPending {
        mark: InjectionMark,
    },
    RoiSet {
        roi: Roi,
        ceus_roi: Roi,
    },
    Rescoring {
        result_id: String,
        ceus_roi: Roi,
    },
}

/// A start checked against the state and the used ids, not yet begun: the driver makes the
/// previous exam's retained result cleared (durably) first, then calls [`ExamLifecycle::begin`].
#[derive(Debug)]
pub struct StartPlan {
    exam_id: String,
    clears: Option<String>,
    order: ExamOrder,
}

impl StartPlan {
    /// The exam is for `order`.
    pub fn for_order(self, order: ExamOrder) -> Self {
        Self { order, ..self }
    }

    /// The previous exam, whose retained result and heatmap must be cleared before this one
    /// starts.
    pub fn clears(&self) -> Option<&str> {
        self.clears.as_deref()
    }

    pub fn exam_id(&self) -> &str {
        &self.exam_id
    }
}

/// How many used exam ids are remembered.
const USED_IDS_KEPT: usize = 1000;

/// The machine: the current exam's state, the ids already used, and the effects waiting for
/// the driver.
pub struct ExamLifecycle {
    setup: ExamSetup,
    state: ExamState,
    /// The exam before the current one, or the last one before a restart.
    previous_exam_id: Option<String>,
    used_exam_ids: Vec<String>,
    /// The recorded exam an exam was last started for (or that was running when one was
    /// started by hand): a recorded exam starts one exam, and one stopped by hand stays
    /// stopped.
    followed_recording: Option<u64>,
    /// A changed frame shape on which the panes were not found (said once).
    unreadable_shape: Option<FrameShape>,
    effects: Vec<Effect>,
}

impl ExamLifecycle {
    /// `last_exam_id` and `used_exam_ids` as kept across restarts.
    pub fn new(setup: ExamSetup, last_exam_id: Option<String>, used_exam_ids: Vec<String>) -> Self {
        Self {
            setup,
            state: ExamState::NoExam,
            previous_exam_id: last_exam_id,
            used_exam_ids,
            followed_recording: None,
            unreadable_shape: None,
            effects: Vec::new(),
        }
    }

    pub fn state(&self) -> &ExamState {
        &self.state
    }

    pub fn setup(&self) -> &ExamSetup {
        &self.setup
    }

    /// The effects of the calls so far, in order; the driver performs them.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The current (or last) exam's run.
    pub fn run(&self) -> Option<&ExamRun> {
        match &self.state {
            ExamState::NoExam => None,
            ExamState::AwaitingFrame { run, .. }
            | ExamState::Running { run, .. }
            | ExamState::Scored { run, .. }
            | ExamState::Stopped { run, .. } => Some(run),
        }
    }

    pub fn exam_id(&self) -> Option<&str> {
        self.run().map(|r| r.id.as_str())
    }

    /// The exam's frames so far, once one has arrived.
    pub fn exam(&self) -> Option<&Exam> {
        match &self.state {
            ExamState::Running { exam, .. } | ExamState::Scored { exam, .. } => Some(exam),
            ExamState::Stopped { exam, .. } => exam.as_deref(),
            ExamState::NoExam | ExamState::AwaitingFrame { .. } => None,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(
            self.state,
            ExamState::AwaitingFrame { .. } | ExamState::Running { .. } | ExamState::Scored { .. }
        )
    }

    /// A running exam's reason for waiting: the panes not found on its frames.
    pub fn layout_error(&self) -> Option<&str> {
        match &self.state {
            ExamState::AwaitingFrame { layout_error, .. } => layout_error.as_deref(),
            _ => None,
        }
    }

    /// Checks a start: no exam running, and an asked-for id never used. `generated` is the
    /// id to use when none is asked for. Changes nothing.
    pub fn plan_start(
        &self,
        requested: Option<String>,
        generated: String,
    ) -> Result<StartPlan, Refusal> {
        if self.is_running() {
            return Err(Refusal::ExamRunning(
                self.exam_id().unwrap_or_default().to_string(),
            ));
        }
        let exam_id = match requested {
            Some(id) => {
                if self.previous_exam_id.as_deref() == Some(id.as_str())
                    || self.used_exam_ids.contains(&id)
                    || self.exam_id() == Some(id.as_str())
                {
                    return Err(Refusal::ExamIdUsed(id));
                }
                id
            }
            None => generated,
        };
        Ok(StartPlan {
            exam_id,
            clears: self.previous_exam_id.clone(),
            order: ExamOrder::default(),
        })
    }

    /// Begins the exam `plan` was made for (the previous exam's retained result is cleared).
    pub fn begin(&mut self, plan: StartPlan) -> Accepted {
        let id = plan.exam_id;
        self.used_exam_ids.push(id.clone());
        let excess = self.used_exam_ids.len().saturating_sub(USED_IDS_KEPT);
        self.used_exam_ids.drain(..excess);
        self.previous_exam_id = Some(id.clone());
        self.unreadable_shape = None;
        self.state = ExamState::AwaitingFrame {
            run: ExamRun {
                id: id.clone(),
                order: plan.order,
                roi: None,
                revision: 0,
            },
            pending_mark: None,
            layout_error: None,
        };
        self.effects.push(Effect::Started {
            exam_id: id.clone(),
            used_exam_ids: self.used_exam_ids.clone(),
        });
        Accepted::Started { exam_id: id }
    }

    /// Notes the recorded exam of the next frame; true when an exam should start for it
    /// (following recorded exams, and this one has not had its exam yet).
    pub fn recording_moved_on(&mut self, recorded_exam: Option<u64>) -> bool {
        let Some(recorded) = recorded_exam else {
            return false;
        };
        let moved = self.followed_recording != Some(recorded);
        self.followed_recording = Some(recorded);
        moved && self.setup.follow_recorded_exams
    }

    /// Takes one frame into the running exam; `wall` is when it is taken.
    pub fn frame(&mut self, frame: &Frame, recorded: Recorded, wall: Instant) {
        if let ExamState::AwaitingFrame { .. } = self.state {
            if !self.open_exam(frame, recorded, wall) {
                return;
            }
        }
        if !self.follow_source(frame) {
            return;
        }
        let (run, exam) = match &mut self.state {
            ExamState::Running { run, exam } | ExamState::Scored { run, exam } => (run, exam),
            _ => return,
        };
        let status = match exam.process(frame) {
            Ok(s) => s,
            Err(error) => {
                self.effects.push(Effect::FrameRejected {
                    exam_id: run.id.clone(),
                    sequence: frame.sequence,
                    error,
                });
                return;
            }
        };
        let boundaries = exam.settings.boundaries;
        self.effects.push(Effect::Timing {
            exam_id: run.id.clone(),
            status,
            boundaries,
            frames_kept: exam.window.kept().len(),
        });
        let over = status.phase == Phase::Done || exam.phases.timed_out;
        if status
            .elapsed_s
            .is_some_and(|e| e >= boundaries.window_end_s)
        {
            self.window_closed();
        }
        if over && self.setup.stop_when_over {
            self.stop(StopReason::TimeOver);
        }
    }

    /// Follows a change of the frames' size or format: the panes are found again (a fixed
    /// layout is kept where it fits). False while they cannot be: the frame is rejected, said
    /// once per new shape.
    fn follow_source(&mut self, frame: &Frame) -> bool {
        let (ExamState::Running { run, exam } | ExamState::Scored { run, exam }) = &mut self.state
        else {
            return true;
        };
        let shape = FrameShape::of(frame);
        if exam.shape.is_none_or(|s| s == shape) {
            return true;
        }
        let found = match self.setup.layout {
            Some(l) => l
                .bmode
                .check_within(frame.width, frame.height)
                .and(l.ceus.check_within(frame.width, frame.height))
                .map(|_| (l, LayoutSource::Fixed))
                .map_err(|e| ExamError::Layout(format!("the configured layout: {e}"))),
            None => layout_of(frame, &self.setup.presets),
        };
        match found {
            Ok((layout, source)) => {
                let at_s = frame.timestamp.as_secs_f64();
                let change = exam.source_changed(at_s, shape, layout, source).to_string();
                self.unreadable_shape = None;
                let exam_id = run.id.clone();
                self.effects.push(Effect::SourceChanged { exam_id, change });
                true
            }
            Err(error) => {
                if self.unreadable_shape != Some(shape) {
                    self.unreadable_shape = Some(shape);
                    let exam_id = run.id.clone();
                    let error = ExamError::Layout(format!(
                        "the source changed from {} to {shape}: {error}; frames are left out \
                         until the panes are found",
                        exam.shape.map(|s| s.to_string()).unwrap_or_default()
                    ));
                    let sequence = frame.sequence;
                    self.effects.push(Effect::FrameRejected {
                        exam_id,
                        sequence,
                        error,
                    });
                }
                false
            }
        }
    }

    /// Builds the exam on its first frame (layout, clock); false while the panes cannot be
    /// found.
    fn open_exam(&mut self, frame: &Frame, recorded: Recorded, wall: Instant) -> bool {
        let ExamState::AwaitingFrame {
            run,
            pending_mark,
            layout_error,
        } = &mut self.state
        else {
            return false;
        };
        let layout = match self.setup.layout {
            Some(l) => Ok((l, LayoutSource::Fixed)),
            None => layout_of(frame, &self.setup.presets),
        };
        let opened = layout.and_then(|(layout, source)| {
            let mut exam = Exam::new(self.setup.settings.clone(), layout)?;
            exam.layout_source = source;
            Ok(exam)
        });
        let mut exam = match opened {
            Ok(e) => e,
            Err(e) => {
                // Said once per exam: the panes are looked for again on every frame, and
                // the reason can change from one frame to the next.
                let first = layout_error.is_none();
                *layout_error = Some(e.to_string());
                if first {
                    self.effects.push(Effect::NotOpened {
                        exam_id: run.id.clone(),
                        error: e,
                    });
                }
                return false;
            }
        };
        let t = frame.timestamp.as_secs_f64();
        exam.timeline.push(TimelineEvent::Panes {
            at_s: t,
            layout: exam.layout,
            source: exam.layout_source.clone(),
        });
        self.effects.push(Effect::Opened {
            exam_id: run.id.clone(),
            layout: exam.layout,
            source: exam.layout_source.clone(),
        });
        // The operator's mark wins over the recorded time; the recorded time is not offered
        // beside it.
        match *pending_mark {
            Some(PendingMark::Wall(marked)) => {
                let ago = wall.saturating_duration_since(marked).as_secs_f64() * self.setup.speed;
                exam.mark_injection(t, ago);
            }
            Some(PendingMark::AfterFirstFrame(at)) => exam.mark_injection_at(t, t + at),
            None => {
                if let Some(at) = recorded
                    .injection_s
                    .filter(|_| self.setup.settings.use_recorded_injection)
                {
                    exam.recorded_injection(t, at);
                }
            }
        }
        let mut run = run.clone();
        if let Some(roi) = run.roi {
            if let Err(error) = exam.ceus_roi(&roi) {
                self.effects.push(Effect::RoiDropped {
                    exam_id: run.id.clone(),
                    error,
                });
                run.roi = None;
            }
        }
        self.state = ExamState::Running {
            run,
            exam: Box::new(exam),
        };
        true
    }

    /// The key-frame window has closed: the first result is asked for.
    fn window_closed(&mut self) {
        match std::mem::take(&mut self.state) {
            ExamState::Running { run, exam } => {
                let request = score_request(&run, Some(&exam), false);
                self.effects.push(Effect::Score(request));
                self.state = ExamState::Scored {
                    run: bump(run),
                    exam,
                };
            }
            other => self.state = other,
        }
    }

    /// Stops a running exam, asking for its result when the window had not closed. Does
    /// nothing when no exam runs.
    pub fn stop(&mut self, reason: StopReason) {
        let (run, exam) = match std::mem::take(&mut self.state) {
            ExamState::AwaitingFrame { run, .. } => {
                let request = score_request(&run, None, false);
                self.effects.push(Effect::Score(request));
                (bump(run), None)
            }
            ExamState::Running { run, exam } => {
                let request = score_request(&run, Some(&exam), false);
                self.effects.push(Effect::Score(request));
                (bump(run), Some(exam))
            }
            ExamState::Scored { run, exam } => (run, Some(exam)),
            other => {
                self.state = other;
                return;
            }
        };
        self.effects.push(Effect::Stopped {
            exam_id: run.id.clone(),
            reason,
        });
        self.state = ExamState::Stopped { run, exam };
    }

    /// The stop command.
    pub fn stop_command(&mut self) -> Result<Accepted, Refusal> {
        if !self.is_running() {
            return Err(Refusal::NothingToStop);
        }
        let exam_id = self.exam_id().unwrap_or_default().to_string();
        self.stop(StopReason::Command);
        Ok(Accepted::Stopped { exam_id })
    }

    /// The source said it has no picture: noted in the exam's timeline at its last frame's
    /// time (the source's clock has no other).
    pub fn no_signal(&mut self, reason: String) {
        if let ExamState::Running { exam, .. } | ExamState::Scored { exam, .. } = &mut self.state {
            let at_s = exam.last_s.unwrap_or_default();
            exam.timeline.push(TimelineEvent::NoSignal { at_s, reason });
        }
    }

    /// Marks the injection.
    pub fn mark_injection(&mut self, mark: InjectionMark) -> Result<Accepted, Refusal> {
        let speed = self.setup.speed;
        match &mut self.state {
            ExamState::NoExam | ExamState::Stopped { .. } => Err(Refusal::NoExamRunning),
            ExamState::Scored { .. } => Err(Refusal::ClockSettled),
            ExamState::AwaitingFrame { pending_mark, .. } => {
                let pending = match mark {
                    InjectionMark::SecondsAgo { seconds, wall, .. } => {
                        let ago = seconds_duration(seconds)?;
                        let at = wall
                            .checked_sub(ago)
                            .ok_or(Refusal::MarkBeforeStartup(seconds))?;
                        PendingMark::Wall(at)
                    }
                    InjectionMark::AfterFirstFrame(at) => PendingMark::AfterFirstFrame(at),
                };
                *pending_mark = Some(pending);
                Ok(Accepted::MarkPending { mark })
            }
            ExamState::Running { exam, .. } => {
                let (now, at) = match mark {
                    InjectionMark::SecondsAgo {
                        seconds,
                        source_now,
                        ..
                    } => {
                        seconds_duration(seconds)?;
                        // A frame is in the exam, so the driver knows the source's time; the
                        // last frame's time stands in should it not.
                        let now = source_now.or(exam.last_s).unwrap_or_default();
                        (now, now - seconds * speed)
                    }
                    InjectionMark::AfterFirstFrame(at) => {
                        let first = exam.first_s.unwrap_or_default();
                        (exam.last_s.unwrap_or(first), first + at)
                    }
                };
                exam.mark_injection_at(now, at);
                Ok(Accepted::Marked {
                    injection_s: at,
                    source_now_s: now,
                })
            }
        }
    }

    /// Sets the lesion's ROI, checked against the scanner's panes of the exam's frames.
    pub fn set_roi(&mut self, roi: Roi) -> Result<Accepted, Refusal> {
        let ceus_roi = match &self.state {
            ExamState::NoExam => return Err(Refusal::NoExam),
            ExamState::AwaitingFrame {
                layout_error: Some(reason),
                ..
            } => return Err(Refusal::PanesNotFound(reason.clone())),
            ExamState::AwaitingFrame { .. } | ExamState::Stopped { exam: None, .. } => {
                return Err(Refusal::NoFrameYet)
            }
            ExamState::Running { exam, .. }
            | ExamState::Scored { exam, .. }
            | ExamState::Stopped {
                exam: Some(exam), ..
            } => exam
                .ceus_roi(&roi)
                .map_err(|e| Refusal::RoiOutsidePanes(e.to_string()))?,
        };
        if let Some(run) = self.run_mut() {
            run.roi = Some(roi);
        }
        Ok(Accepted::RoiSet { roi, ceus_roi })
    }

    /// Asks for a new result of a scored exam, at `roi` or the ROI set before.
    pub fn rescore(&mut self, roi: Option<Roi>) -> Result<Accepted, Refusal> {
        let (run, exam) = match &mut self.state {
            ExamState::NoExam => return Err(Refusal::NoExam),
            ExamState::AwaitingFrame { .. } | ExamState::Running { .. } => {
                return Err(Refusal::NotScoredYet)
            }
            ExamState::Stopped { exam: None, .. } => return Err(Refusal::NothingToRescore),
            ExamState::Scored { run, exam }
            | ExamState::Stopped {
                run,
                exam: Some(exam),
            } => (run, exam),
        };
        let roi = roi.or(run.roi).ok_or(Refusal::NoRoi)?;
        let ceus_roi = exam
            .ceus_roi(&roi)
            .map_err(|e| Refusal::RoiOutsidePanes(e.to_string()))?;
        run.roi = Some(roi);
        let request = score_request(run, Some(exam), true);
        run.revision = request.revision;
        let result_id = request.result_id.clone();
        self.effects.push(Effect::Score(request));
        Ok(Accepted::Rescoring {
            result_id,
            ceus_roi,
        })
    }

    /// The exam, once the machine is done with it.
    pub fn into_exam(self) -> Option<Exam> {
        match self.state {
            ExamState::Running { exam, .. } | ExamState::Scored { exam, .. } => Some(*exam),
            ExamState::Stopped { exam, .. } => exam.map(|e| *e),
            ExamState::NoExam | ExamState::AwaitingFrame { .. } => None,
        }
    }

    fn run_mut(&mut self) -> Option<&mut ExamRun> {
        match &mut self.state {
            ExamState::NoExam => None,
            ExamState::AwaitingFrame { run, .. }
            | ExamState::Running { run, .. }
            | ExamState::Scored { run, .. }
            | ExamState::Stopped { run, .. } => Some(run),
        }
    }
}

/// The run with one more result asked for.
fn bump(run: ExamRun) -> ExamRun {
    ExamRun {
        revision: run.revision + 1,
        ..run
    }
}

/// The next result of `run`: its revision counts the results asked for.
fn score_request(run: &ExamRun, exam: Option<&Exam>, rescore: bool) -> ScoreRequest {
    let revision = run.revision + 1;
    ScoreRequest {
        exam_id: run.id.clone(),
        result_id: format!("{}-r{revision}", run.id),
        revision,
        exam: exam.map(|e| Box::new(e.clone())),
        roi: run.roi,
        rescore,
        order: run.order.clone(),
    }
}

/// `seconds` as a duration, or the refusal naming it.
fn seconds_duration(seconds: f64) -> Result<Duration, Refusal> {
    Duration::try_from_secs_f64(seconds).map_err(|_| Refusal::BadSecondsAgo(seconds))
}

/// How an offline run is told about the injection.
#[derive(Debug, Clone, Copy, Default)]
pub struct InjectionHint {
    /// Operator mark: injection at this many seconds from the first frame.
    pub marked_at_s: Option<f64>,
}

/// Runs a whole finite source through one exam, as the daemon would run it from its first
/// frame, reading on to the source's end. The layout comes from `layout` or, when `None`,
/// from the first frame (detection, then presets); `roi`, when given, is checked against it
/// at the first frame.
pub fn run_offline(
    source: &mut dyn FrameSource,
    settings: ExamSettings,
    layout: Option<Layout>,
    presets: &Presets,
    hint: InjectionHint,
    roi: Option<Roi>,
    mut on_status: impl FnMut(&TimingStatus),
) -> Result<Exam, ExamError> {
    let setup = ExamSetup {
        settings,
        layout,
        presets: presets.clone(),
        speed: 1.0,
        follow_recorded_exams: false,
        stop_when_over: false,
    };
    let mut lifecycle = ExamLifecycle::new(setup, None, Vec::new());
    let plan = lifecycle
        .plan_start(None, "offline".into())
        .map_err(|e| ExamError::Settings(e.to_string()))?;
    lifecycle.begin(plan);
    if let Some(at) = hint.marked_at_s {
        lifecycle
            .mark_injection(InjectionMark::AfterFirstFrame(at))
            .map_err(|e| ExamError::Settings(e.to_string()))?;
    }
    let mut roi_unchecked = roi;
    loop {
        match source.next_event()? {
            SourceEvent::End => break,
            SourceEvent::NoSignal { reason } => lifecycle.no_signal(reason),
            SourceEvent::Frame(frame) => {
                lifecycle.frame(&frame, Recorded::of(source), Instant::now());
                for effect in lifecycle.take_effects() {
                    match effect {
                        Effect::Timing { status, .. } => on_status(&status),
                        Effect::NotOpened { error, .. } | Effect::FrameRejected { error, .. } => {
                            return Err(error)
                        }
                        Effect::Started { .. }
                        | Effect::Opened { .. }
                        | Effect::SourceChanged { .. }
                        | Effect::Score(_)
                        | Effect::Stopped { .. }
                        | Effect::RoiDropped { .. } => {}
                    }
                }
                // A ROI that fits neither pane is refused at the first frame, before the
                // cine is read.
                if let (Some(r), Some(exam)) = (roi_unchecked, lifecycle.exam()) {
                    exam.ceus_roi(&r)?;
                    roi_unchecked = None;
                }
            }
        }
    }
    lifecycle
        .into_exam()
        .ok_or_else(|| ExamError::Settings("the source delivered no frame".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::source::Pacing;
    use crate::capture::synthetic::{GroundTruth, LesionKind, SyntheticConfig, SyntheticScanner};

    /// A small synthetic exam: its frames, what the scanner records with them, and the truth.
    fn exam_frames(injection_s: f64, duration_s: f64) -> (Vec<Frame>, Recorded, GroundTruth) {
        let mut config = SyntheticConfig::new(LesionKind::Pdac, 3);
        (config.width, config.height, config.fps) = (320, 240, 5.0);
        config.injection_s = injection_s;
        config.duration_s = duration_s;
        let mut scanner = SyntheticScanner::new(config, Pacing::AsFastAsPossible).unwrap();
        let truth = scanner.truth().clone();
        let recorded = Recorded::of(&scanner);
        let mut frames = Vec::new();
        while let SourceEvent::Frame(f) = scanner.next_event().unwrap() {
            frames.push(f);
        }
        (frames, recorded, truth)
    }

    fn lifecycle(truth: &GroundTruth) -> ExamLifecycle {
        let setup = ExamSetup {
            settings: ExamSettings::default(),
            layout: Some(Layout {
                bmode: truth.bmode_pane,
                ceus: truth.ceus_pane,
            }),
            presets: Presets::default(),
            speed: 1.0,
            follow_recorded_exams: true,
            stop_when_over: true,
        };
        ExamLifecycle::new(setup, None, Vec::new())
    }

    fn start(l: &mut ExamLifecycle, id: &str) {
        let plan = l.plan_start(Some(id.into()), "unused".into()).unwrap();
        l.begin(plan);
    }

    fn scores(effects: &[Effect]) -> Vec<(String, u32, bool, bool)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Score(r) => {
                    Some((r.result_id.clone(), r.revision, r.rescore, r.exam.is_some()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn commands_that_do_not_fit_the_state_are_refused_and_change_nothing() {
        let (frames, recorded, truth) = exam_frames(2.0, 6.0);
        let mut l = lifecycle(&truth);
        let roi = truth.lesion_bmode;
        assert_eq!(l.stop_command(), Err(Refusal::NothingToStop));
        assert_eq!(l.set_roi(roi), Err(Refusal::NoExam));
        assert_eq!(l.rescore(Some(roi)), Err(Refusal::NoExam));
        let mark = InjectionMark::SecondsAgo {
            seconds: 1.0,
            wall: Instant::now(),
            source_now: None,
        };
        assert_eq!(l.mark_injection(mark), Err(Refusal::NoExamRunning));
        assert!(matches!(l.state(), ExamState::NoExam));

        start(&mut l, "exam-1");
        assert_eq!(
            l.plan_start(None, "exam-2".into()).unwrap_err(),
            Refusal::ExamRunning("exam-1".into())
        );
        assert_eq!(l.set_roi(roi), Err(Refusal::NoFrameYet));
        assert_eq!(l.rescore(Some(roi)), Err(Refusal::NotScoredYet));
        l.frame(&frames[0], recorded, Instant::now());
        assert!(matches!(l.state(), ExamState::Running { .. }));
        assert_eq!(l.rescore(None), Err(Refusal::NotScoredYet));
        let outside = Roi::new(0, 0, 2, 2);
        assert!(matches!(
            l.set_roi(outside),
            Err(Refusal::RoiOutsidePanes(_))
        ));
        assert_eq!(l.run().unwrap().roi, None);
        assert!(matches!(l.set_roi(roi), Ok(Accepted::RoiSet { .. })));

        assert_eq!(
            l.stop_command(),
            Ok(Accepted::Stopped {
                exam_id: "exam-1".into()
            })
        );
        // Stopped before its window: the result is asked for once, with the exam as it stood.
        assert_eq!(
            scores(&l.take_effects()),
            vec![("exam-1-r1".into(), 1, false, true)]
        );
        assert_eq!(l.mark_injection(mark), Err(Refusal::NoExamRunning));
        assert_eq!(l.stop_command(), Err(Refusal::NothingToStop));
        // An id is never used twice, even for the exam just stopped.
        assert_eq!(
            l.plan_start(Some("exam-1".into()), "x".into()).unwrap_err(),
            Refusal::ExamIdUsed("exam-1".into())
        );
        let plan = l.plan_start(None, "exam-2".into()).unwrap();
        assert_eq!((plan.exam_id(), plan.clears()), ("exam-2", Some("exam-1")));
    }

    #[test]
    fn the_window_closing_asks_for_one_result_and_rescores_count_revisions() {
        let (frames, recorded, truth) = exam_frames(2.0, 45.0);
        let mut l = lifecycle(&truth);
        start(&mut l, "exam-1");
        l.set_roi(truth.lesion_bmode).unwrap_err();
        let started = l.take_effects();
        assert!(matches!(
            started.as_slice(),
            [Effect::Started { exam_id, used_exam_ids }] if exam_id == "exam-1" && used_exam_ids == &["exam-1"]
        ));
        let mut effects = Vec::new();
        for f in &frames {
            l.frame(f, recorded, Instant::now());
            effects.extend(l.take_effects());
        }
        // 45 s of frames, injection at 2 s: the window (30–40 s) closed, the exam's time did not
        // end.
        assert_eq!(scores(&effects), vec![("exam-1-r1".into(), 1, false, true)]);
        assert!(matches!(l.state(), ExamState::Scored { .. }));
        let timing = effects
            .iter()
            .filter(|e| matches!(e, Effect::Timing { .. }))
            .count();
        assert_eq!(timing, frames.len());
        let mark = InjectionMark::SecondsAgo {
            seconds: 1.0,
            wall: Instant::now(),
            source_now: Some(40.0),
        };
        assert_eq!(l.mark_injection(mark), Err(Refusal::ClockSettled));
        assert_eq!(l.rescore(None), Err(Refusal::NoRoi));
        let rescoring = l.rescore(Some(truth.lesion_bmode)).unwrap();
        assert!(
            matches!(&rescoring, Accepted::Rescoring { result_id, .. } if result_id == "exam-1-r2")
        );
        assert_eq!(
            scores(&l.take_effects()),
            vec![("exam-1-r2".into(), 2, true, true)]
        );
        // Stopping a scored exam asks for no further result; a rescore still can.
        l.stop_command().unwrap();
        assert_eq!(scores(&l.take_effects()), vec![]);
        l.rescore(None).unwrap();
        assert_eq!(
            scores(&l.take_effects()),
            vec![("exam-1-r3".into(), 3, true, true)]
        );
    }

    #[test]
    fn a_mark_before_the_first_frame_waits_for_it_at_the_sources_speed() {
        let (frames, recorded, truth) = exam_frames(2.0, 4.0);
        let mut l = lifecycle(&truth);
        l.setup.speed = 2.0;
        start(&mut l, "exam-1");
        let marked = Instant::now();
        let accepted = l
            .mark_injection(InjectionMark::SecondsAgo {
                seconds: 3.0,
                wall: marked,
                source_now: None,
            })
            .unwrap();
        assert!(matches!(accepted, Accepted::MarkPending { .. }));
        // The first frame arrives 1.5 s (wall) after the mark: the injection was 4.5 s of wall
        // time, 9 s of a double-speed source's time, before it.
        l.frame(&frames[0], recorded, marked + Duration::from_millis(1500));
        let t = frames[0].timestamp.as_secs_f64();
        let injection = l.exam().unwrap().clock.injection().unwrap();
        assert_eq!(injection.source, crate::timing::ClockSource::Manual);
        assert!((injection.at_s - (t - 9.0)).abs() < 1e-9, "{injection:?}");
        // The mark wins: the recorded time is not offered beside it.
        assert_eq!(l.exam().unwrap().clock.switches.len(), 1);
    }

    #[test]
    fn a_recorded_exam_starts_one_exam_and_its_time_running_out_stops_it() {
        let (frames, recorded, truth) = exam_frames(2.0, 50.0);
        let mut l = lifecycle(&truth);
        l.setup.settings.boundaries = PhaseBoundaries {
            vascular_end_s: 10.0,
            pancreatic_end_s: 20.0,
            delayed_end_s: 44.0,
            ..PhaseBoundaries::default()
        };
        assert!(!l.recording_moved_on(None));
        assert!(l.recording_moved_on(Some(0)));
        assert!(!l.recording_moved_on(Some(0)));
        start(&mut l, "exam-1");
        let mut stopped = Vec::new();
        for f in &frames {
            l.frame(f, recorded, Instant::now());
            for e in l.take_effects() {
                if let Effect::Stopped { reason, .. } = e {
                    stopped.push((f.timestamp.as_secs_f64(), reason));
                }
            }
        }
        assert_eq!(stopped.len(), 1, "{stopped:?}");
        let (at, reason) = stopped[0];
        assert_eq!(reason, StopReason::TimeOver);
        assert!(
            at - truth.injection_s > 44.0 && at - truth.injection_s < 44.5,
            "{at}"
        );
        // A recorded exam stopped (by its time or by hand) is not restarted; the next one is.
        assert!(!l.recording_moved_on(Some(0)));
        assert!(l.recording_moved_on(Some(1)));
        // Without the policy, no recorded exam starts one.
        l.setup.follow_recorded_exams = false;
        assert!(!l.recording_moved_on(Some(2)));
    }

    #[test]
    fn an_exam_without_frames_gets_a_result_that_says_so_and_cannot_be_rescored() {
        let (_, _, truth) = exam_frames(2.0, 1.0);
        let mut l = lifecycle(&truth);
        start(&mut l, "exam-1");
        l.take_effects();
        l.stop(StopReason::RecordingEnded);
        let effects = l.take_effects();
        assert_eq!(
            scores(&effects),
            vec![("exam-1-r1".into(), 1, false, false)]
        );
        assert!(matches!(
            effects.last(),
            Some(Effect::Stopped {
                reason: StopReason::RecordingEnded,
                ..
            })
        ));
        assert_eq!(
            l.rescore(Some(truth.lesion_bmode)),
            Err(Refusal::NothingToRescore)
        );
        assert_eq!(l.set_roi(truth.lesion_bmode), Err(Refusal::NoFrameYet));
    }

    fn black_frame(width: u32, height: u32, sequence: u64) -> Frame {
        let picture = crate::capture::picture::Picture::Gray(image::GrayImage::new(width, height));
        Frame::from_picture(picture, sequence, Duration::from_millis(200 * sequence))
    }

    /// (not opened, opened from detection, opened from a preset) among `effects`.
    fn openings(effects: &[Effect]) -> (usize, usize, Vec<String>) {
        let not_opened = effects
            .iter()
            .filter(|e| matches!(e, Effect::NotOpened { .. }))
            .count();
        let detected = effects
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Effect::Opened {
                        source: LayoutSource::Detected,
                        ..
                    }
                )
            })
            .count();
        let presets = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Opened {
                    source: LayoutSource::Preset { name, .. },
                    ..
                } => Some(name.clone()),
                _ => None,
            })
            .collect();
        (not_opened, detected, presets)
    }

    #[test]
    fn panes_not_found_are_said_once_per_exam_and_found_panes_once() {
        let (frames, recorded, truth) = exam_frames(2.0, 4.0);
        let mut l = lifecycle(&truth);
        l.setup.layout = None;
        // The synthetic exam's first frame, before the contrast, gives its panes.
        start(&mut l, "exam-1");
        for f in &frames {
            l.frame(f, recorded, Instant::now());
        }
        let effects = l.take_effects();
        assert_eq!(openings(&effects), (0, 1, vec![]));
        let layout = l.exam().unwrap().layout;
        assert_eq!(
            (layout.bmode, layout.ceus),
            (truth.bmode_pane, truth.ceus_pane)
        );
        l.stop(StopReason::Command);

        // No picture for a while (no preset is for 320x240): said once, however many frames.
        start(&mut l, "exam-2");
        for sequence in 0..20 {
            l.frame(&black_frame(320, 240, sequence), recorded, Instant::now());
        }
        assert!(l.layout_error().unwrap().contains("320x240"));
        for f in &frames {
            l.frame(f, recorded, Instant::now());
        }
        assert_eq!(openings(&l.take_effects()), (1, 1, vec![]));
        l.stop(StopReason::Command);

        // A size a preset is for: the preset, said once, and the exam records why.
        start(&mut l, "exam-3");
        for sequence in 0..3 {
            l.frame(&black_frame(1280, 720, sequence), recorded, Instant::now());
        }
        let effects = l.take_effects();
        assert_eq!(
            openings(&effects),
            (0, 0, vec!["synthetic-720p".to_string()])
        );
        assert!(matches!(
            &l.exam().unwrap().layout_source,
            LayoutSource::Preset { detection, .. } if detection.contains("no textured image area")
        ));
    }
}
