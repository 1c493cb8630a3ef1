//! The frame pipeline thread: drives the exam lifecycle (`exam_lifecycle`) and performs
//! what it asks for. It takes frames from the capture queue and commands from the MQTT
//! session, feeds them to the lifecycle, publishes timing and status, and hands results to the
//! inference worker when the lifecycle asks for one (the key-frame window closed, the exam
//! stopped, a rescore).
//!
//! Exam rules that keep results with their patients:
//! - an exam id is used once; starting an exam first queues, in the durable outbox, the
//!   clearing of what the previous exam left retained (result, heatmap);
//! - a command that does not fit the state (no exam, exam running, no frame yet, window not
//!   passed) is refused with the reason, and changes nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc as tokio_mpsc;

use super::inference::{ScoringDone, ScoringJob};
use super::queue::DropOldest;
use crate::capture::frame::Frame;
use crate::capture::source::SourceEvent;
use crate::capture::InputError;
use crate::exam_lifecycle::{
    Accepted, Effect, ExamLifecycle, ExamOrder, ExamSetup, ExamState, InjectionMark, Recorded,
    Refusal, ScoreRequest, StopReason,
};
use crate::health::{systemd, Heart};
use crate::layout::LayoutSource;
use crate::model::ModelIdentity;
use crate::publish::commands::{Command, Request};
use crate::publish::messages::{
    unix_ms, CommandReply, DaemonState, FrameCounters, OutboxState, PacsState, StatusMessage,
    TimingMessage, Topics, CONTRACT_VERSION,
};
use crate::publish::mqtt::Outbound;
use crate::publish::outbox::{Outbox, OutgoingMessage};
use crate::publish::preview::{Panes, PreviewMessage, PreviewSettings};

/// What the capture thread hands on: the source's next event, or why it cannot go on, with
/// what the source records at that moment.
pub struct Captured {
    pub event: Result<SourceEvent, InputError>,
    pub recorded: Recorded,
}

/// Counters shared with the capture thread.
#[derive(Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub dropped_by_source: AtomicU64,
}

/// Settings of the pipeline, from the configuration.
pub struct PipelineSettings {
    pub device_id: String,
    pub source: String,
    /// How exams are set up and when they start and stop.
    pub exam: ExamSetup,
    pub timing_interval: Duration,
    pub outbox_capacity: usize,
    /// The bound of objects for the PACS; `None` when results are not sent to one.
    pub pacs_capacity: Option<usize>,
    /// Whether start_exam may name the patient (`pacs.patient_id_from_commands`).
    pub patient_id_from_commands: bool,
    /// Where the last exam id is kept across restarts.
    pub state_file: std::path::PathBuf,
    /// The preview for displays, and its wall-clock interval; `None` when turned off.
    pub preview: Option<(PreviewSettings, Duration)>,
}

#[derive(Debug, Clone, PartialEq)]
enum SourceState {
    Live,
    NoSignal(String),
    Ended,
    Failed(String),
}

pub struct Pipeline {
    pub settings: PipelineSettings,
    pub topics: Topics,
    /// The model that scores, as every status says.
    pub model: ModelIdentity,
    pub links: Links,
    lifecycle: ExamLifecycle,
    source_state: SourceState,
    /// The last frame's source time and when it was taken.
    last_frame: Option<(f64, Instant)>,
    /// Size and pixel format of the last frame, to log each change once.
    frame_format: Option<(u32, u32, crate::capture::frame::PixelFormat)>,
    last_status: Option<(String, Option<String>, Option<String>, bool)>,
    last_status_sent: Option<Instant>,
    last_timing: Option<Instant>,
    last_preview: Option<Instant>,
    /// Replies to the latest commands, by id: MQTT delivers a command at least once, and a
    /// display re-sends an unacknowledged one after a reconnection, so a repeated id is
    /// answered as before and not carried out again.
    recent_replies: std::collections::VecDeque<CommandReply>,
    rng: crate::rng::SplitMix64,
}

/// How many command replies are kept for repeated deliveries.
const RECENT_COMMANDS: usize = 256;

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct PersistedState {
    last_exam_id: Option<String>,
    /// Recent exam ids (the last 1000): an id is never used for a second exam.
    #[serde(default)]
    used_exam_ids: Vec<String>,
}

/// What connects the pipeline thread to the others: the frame queue, the command, job and
/// result channels, the MQTT sender, and the state it shares with them.
pub struct Links {
    pub frames: Arc<DropOldest<Captured>>,
    pub commands: Receiver<Request>,
    pub jobs: SyncSender<ScoringJob>,
    pub done: Receiver<ScoringDone>,
    pub outbound: tokio_mpsc::Sender<Outbound>,
    pub outbox: Arc<Mutex<Outbox>>,
    pub counters: Arc<Counters>,
    pub heart: Arc<Heart>,
    pub stopping: Arc<AtomicBool>,
}

impl Pipeline {
    pub fn new(
        settings: PipelineSettings,
        topics: Topics,
        model: ModelIdentity,
        links: Links,
    ) -> Self {
        let persisted: PersistedState = std::fs::read(&settings.state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let seed = unix_ms() ^ ((std::process::id() as u64) << 32);
        let lifecycle = ExamLifecycle::new(
            settings.exam.clone(),
            persisted.last_exam_id,
            persisted.used_exam_ids,
        );
        Self {
            settings,
            topics,
            model,
            links,
            lifecycle,
            source_state: SourceState::Live,
            last_frame: None,
            frame_format: None,
            last_status: None,
            last_status_sent: None,
            last_timing: None,
            last_preview: None,
            recent_replies: std::collections::VecDeque::new(),
            rng: crate::rng::SplitMix64(seed),
        }
    }

    /// Runs until the daemon stops (the frame queue is closed and drained).
    pub fn run(mut self) {
        self.publish_status(true);
        loop {
            self.links.heart.beat();
            while let Ok(request) = self.links.commands.try_recv() {
                let reply = self.command(request);
                let _ = self.links.outbound.blocking_send(Outbound::Reply(reply));
            }
            while let Ok(done) = self.links.done.try_recv() {
                log::info!(
                    "exam {}: result {} {}",
                    done.exam_id,
                    done.result_id,
                    if done.stored {
                        "queued for the broker"
                    } else {
                        "NOT stored"
                    }
                );
            }
            if self.links.stopping.load(Ordering::Relaxed) {
                break;
            }
            if let Some(event) = self.links.frames.pop(Duration::from_millis(200)) {
                self.event(event);
            }
            self.publish_status(false);
        }
        if let ExamState::AwaitingFrame { run, .. } | ExamState::Running { run, .. } =
            self.lifecycle.state()
        {
            log::warn!(
                "exam {} was running when the daemon stopped, before its key-frame window closed: it has no result",
                run.id
            );
        }
        self.links.heart.finish();
    }

    fn event(&mut self, captured: Captured) {
        match captured.event {
            Ok(SourceEvent::Frame(frame)) => self.frame(&frame, captured.recorded),
            Ok(SourceEvent::NoSignal { reason }) => {
                if self.source_state != SourceState::NoSignal(reason.clone()) {
                    log::warn!("source: {reason}");
                    self.source_state = SourceState::NoSignal(reason.clone());
                }
                self.lifecycle.no_signal(reason);
            }
            Ok(SourceEvent::End) => {
                log::info!("source: the recording ended");
                self.lifecycle.stop(StopReason::RecordingEnded);
                self.source_state = SourceState::Ended;
                let _ = self.perform_effects();
            }
            Err(e) => {
                log::error!("source failed: {e}");
                self.lifecycle.stop(StopReason::SourceFailed);
                self.source_state = SourceState::Failed(e.to_string());
                let _ = self.perform_effects();
            }
        }
    }

    fn frame(&mut self, frame: &Frame, recorded: Recorded) {
        self.links.counters.received.fetch_add(1, Ordering::Relaxed);
        let format = (frame.width, frame.height, frame.format);
        if self.frame_format != Some(format) {
            // The installer's proof that the capture card delivers what it should.
            log::info!(
                "source: frames of {}x{} {}",
                frame.width,
                frame.height,
                frame.format
            );
            self.frame_format = Some(format);
        }
        self.last_frame = Some((frame.timestamp.as_secs_f64(), Instant::now()));
        if self.source_state != SourceState::Live {
            log::info!("source: frames again");
            self.source_state = SourceState::Live;
        }
        if self.lifecycle.recording_moved_on(recorded.exam) {
            self.lifecycle.stop(StopReason::NextRecordedExam);
            let _ = self.perform_effects();
            match self.start_exam(None, ExamOrder::default()) {
                Ok(_) => log::debug!(
                    "exam {}: follows recorded exam {}",
                    self.lifecycle.exam_id().unwrap_or_default(),
                    recorded.exam.unwrap_or_default()
                ),
                Err(e) => log::error!("automatic exam start refused: {e}"),
            }
        }
        self.lifecycle.frame(frame, recorded, Instant::now());
        let _ = self.perform_effects();
        self.preview(frame);
    }

    /// Performs what the lifecycle asked for, in order. Fails when a result could not be
    /// handed to the inference worker.
    fn perform_effects(&mut self) -> Result<(), Refusal> {
        let mut outcome = Ok(());
        for effect in self.lifecycle.take_effects() {
            match effect {
                Effect::Started {
                    exam_id,
                    used_exam_ids,
                } => {
                    self.persist(&exam_id, used_exam_ids);
                    self.last_timing = None;
                    log::info!("exam {exam_id}: started");
                    self.publish_status(true);
                }
                Effect::Timing {
                    exam_id,
                    status,
                    boundaries,
                    frames_kept,
                } => {
                    if self
                        .last_timing
                        .is_some_and(|last| last.elapsed() < self.settings.timing_interval)
                    {
                        continue;
                    }
                    self.last_timing = Some(Instant::now());
                    let message = TimingMessage::new(&exam_id, &status, &boundaries, frames_kept);
                    if let Ok(payload) = serde_json::to_vec(&message) {
                        let _ = self.links.outbound.try_send(Outbound::Transient {
                            topic: self.topics.timing(&exam_id),
                            payload,
                        });
                    }
                }
                Effect::Score(request) => {
                    if !self.submit(request) {
                        outcome = Err(Refusal::WorkerGone);
                    }
                }
                Effect::Stopped { exam_id, reason } => {
                    log::info!("exam {exam_id}: stopped ({reason})");
                    self.publish_status(true);
                }
                Effect::Opened {
                    exam_id,
                    layout,
                    source,
                } => {
                    let panes = format!("B-mode pane {}, CEUS pane {}", layout.bmode, layout.ceus);
                    match source {
                        LayoutSource::Preset { .. } => {
                            log::warn!("exam {exam_id}: {panes}: {source}")
                        }
                        _ => log::info!("exam {exam_id}: {panes} ({source})"),
                    }
                }
                Effect::SourceChanged { exam_id, change } => {
                    log::warn!("exam {exam_id}: {change}")
                }
                Effect::NotOpened { exam_id, error } => log::error!(
                    "exam {exam_id}: {error}; looking for the panes on each frame until found"
                ),
                Effect::RoiDropped { exam_id, error } => {
                    log::warn!("exam {exam_id}: ROI set before the first frame: {error}")
                }
                Effect::FrameRejected {
                    exam_id,
                    sequence,
                    error,
                } => log::warn!("exam {exam_id}: frame {sequence}: {error}"),
            }
        }
        outcome
    }

    /// Publishes a preview of `frame` when the preview is on and its interval has passed.
    /// A preview is transient: dropped, not queued, when the session is busy or offline.
    fn preview(&mut self, frame: &Frame) {
        let Some((settings, interval)) = self.settings.preview else {
            return;
        };
        if self
            .last_preview
            .is_some_and(|last| last.elapsed() < interval)
        {
            return;
        }
        self.last_preview = Some(Instant::now());
        let running = self.lifecycle.is_running();
        let run = self.lifecycle.run().filter(|_| running);
        let panes = self
            .lifecycle
            .exam()
            .filter(|_| running)
            .map(|e| Panes::from(e.layout));
        let message = PreviewMessage::new(
            frame,
            settings,
            run.map(|r| r.id.as_str()),
            panes,
            run.and_then(|r| r.roi),
        );
        match message.map(|m| serde_json::to_vec(&m)) {
            Ok(Ok(payload)) => {
                let _ = self.links.outbound.try_send(Outbound::Transient {
                    topic: self.topics.preview(),
                    payload,
                });
            }
            Ok(Err(e)) => log::warn!("preview: {e}"),
            Err(e) => log::warn!("{e}"),
        }
    }

    /// Hands a result to compute to the inference worker; false when the worker is gone.
    fn submit(&mut self, request: ScoreRequest) -> bool {
        log::info!(
            "exam {}: {} as {}",
            request.exam_id,
            if request.rescore {
                "rescoring"
            } else {
                "scoring"
            },
            request.result_id
        );
        let result_id = request.result_id.clone();
        let job = ScoringJob {
            request,
            requested: Instant::now(),
        };
        if self.links.jobs.send(job).is_err() {
            log::error!("the inference worker is gone; {result_id} is not computed");
            return false;
        }
        true
    }

    fn new_exam_id(&mut self) -> String {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(['-', ':'], "");
        format!("{}-{:04x}", stamp, self.rng.next_u64() & 0xffff)
    }

    /// Starts an exam: clears what the previous one left retained, then begins.
    fn start_exam(
        &mut self,
        requested: Option<String>,
        order: ExamOrder,
    ) -> Result<Accepted, Refusal> {
        if order.patient_id.is_some() && !self.settings.patient_id_from_commands {
            return Err(Refusal::PatientIdNotAllowed);
        }
        let generated = self.new_exam_id();
        let plan = self
            .lifecycle
            .plan_start(requested, generated)?
            .for_order(order);
        if let Some(previous) = plan.clears() {
            self.clear_retained(previous)
                .map_err(Refusal::PreviousNotCleared)?;
        }
        let accepted = self.lifecycle.begin(plan);
        self.perform_effects()?;
        Ok(accepted)
    }

    /// Queues, durably, the clearing of what exam `previous` left retained.
    fn clear_retained(&mut self, previous: &str) -> Result<(), String> {
        let clear = |topic: String| OutgoingMessage {
            topic,
            payload: Vec::new(),
            retain: true,
        };
        let messages = [
            clear(self.topics.result(previous)),
            clear(self.topics.heatmap(previous)),
        ];
        self.links
            .outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enqueue(&format!("clear-{previous}"), &messages)
            .map_err(|e| e.to_string())?;
        let _ = self.links.outbound.blocking_send(Outbound::OutboxChanged);
        Ok(())
    }

    /// Keeps the exam ids used, so that none is used again after a restart.
    fn persist(&self, last_exam_id: &str, used_exam_ids: Vec<String>) {
        let state = PersistedState {
            last_exam_id: Some(last_exam_id.to_string()),
            used_exam_ids,
        };
        if let Ok(bytes) = serde_json::to_vec(&state) {
            if let Err(e) = crate::atomic_file::write_atomically(&self.settings.state_file, |w| {
                std::io::Write::write_all(w, &bytes)
            }) {
                log::warn!("{}: {e}", self.settings.state_file.display());
            }
        }
    }

    /// Source time now: the last frame's time plus the wall time since, at the source's speed.
    fn source_now(&self) -> Option<f64> {
        self.last_frame
            .map(|(t, at)| t + at.elapsed().as_secs_f64() * self.settings.exam.speed)
    }

    fn command(&mut self, request: Request) -> CommandReply {
        let name = request.command.name();
        let id = request.id.clone();
        if let Some(earlier) = self
            .recent_replies
            .iter()
            .find(|r| r.id.as_deref() == Some(id.as_str()))
        {
            log::info!("command {name} ({id}): delivered again; answered as before, not repeated");
            return earlier.clone();
        }
        let reply = self.carry_out(request);
        if self.recent_replies.len() == RECENT_COMMANDS {
            self.recent_replies.pop_front();
        }
        self.recent_replies.push_back(reply.clone());
        reply
    }

    fn carry_out(&mut self, request: Request) -> CommandReply {
        let name = request.command.name();
        let id = request.id.clone();
        let current = self.lifecycle.exam_id();
        let outcome = match request.exam_id {
            Some(meant) if current != Some(meant.as_str()) => Err(Refusal::NotCurrentExam {
                meant,
                current: current.map(String::from),
            }),
            _ => self.apply(request.command),
        };
        let exam_id = self.lifecycle.exam_id().map(String::from);
        match outcome {
            Ok(data) => {
                log::info!("command {name} ({id}): ok");
                CommandReply::ok(&id, name, exam_id, data)
            }
            Err(refusal) => {
                log::warn!("command {name} ({id}) refused: {refusal}");
                let mut reply =
                    CommandReply::error(Some(id), Some(name.into()), refusal.to_string());
                reply.exam_id = exam_id;
                reply
            }
        }
    }

    fn apply(&mut self, command: Command) -> Result<Option<serde_json::Value>, Refusal> {
        let accepted = match command {
            Command::Status => return Ok(serde_json::to_value(self.status_message()).ok()),
            Command::StartExam { exam_id, order } => self.start_exam(exam_id, order)?,
            Command::StopExam => self.lifecycle.stop_command()?,
            Command::MarkInjection { seconds_ago } => {
                self.lifecycle.mark_injection(InjectionMark::SecondsAgo {
                    seconds: seconds_ago,
                    wall: Instant::now(),
                    source_now: self.source_now(),
                })?
            }
            Command::SetRoi { roi } => self.lifecycle.set_roi(roi)?,
            Command::Rescore { roi } => self.lifecycle.rescore(roi)?,
        };
        self.perform_effects()?;
        Ok(Some(reply_data(&accepted)))
    }

    fn state(&self) -> (DaemonState, Option<String>) {
        match &self.source_state {
            SourceState::Failed(r) => (DaemonState::Error, Some(format!("source failed: {r}"))),
            SourceState::NoSignal(r) => (DaemonState::NoSignal, Some(r.clone())),
            SourceState::Ended if !self.lifecycle.is_running() => {
                (DaemonState::Idle, Some("the recording ended".into()))
            }
            _ => match self.lifecycle.layout_error() {
                Some(e) if self.lifecycle.is_running() => (DaemonState::Exam, Some(e.to_string())),
                _ if self.lifecycle.is_running() => (DaemonState::Exam, None),
                _ => (DaemonState::Idle, None),
            },
        }
    }

    pub fn status_message(&self) -> StatusMessage {
        let (state, mut detail) = self.state();
        let (outbox, pacs) = {
            let o = self.links.outbox.lock().unwrap_or_else(|e| e.into_inner());
            let outbox = o.len().ok().map(|pending| OutboxState {
                pending,
                capacity: self.settings.outbox_capacity,
                filling: pending * 10 >= self.settings.outbox_capacity * 8,
            });
            let pacs = self.settings.pacs_capacity.and_then(|capacity| {
                o.archive_counts().ok().map(|c| PacsState {
                    waiting: c.waiting,
                    refused: c.refused,
                    not_kept: c.not_kept,
                    capacity,
                    last_error: c.last_error,
                })
            });
            (outbox, pacs)
        };
        let mut note = |text: String| {
            detail = Some(match detail.take() {
                Some(d) => format!("{d}; {text}"),
                None => text,
            });
        };
        if outbox.is_some_and(|o| o.filling) {
            note("outbox filling: the broker has not acknowledged results for a while".into());
        }
        if let Some(p) = &pacs {
            if p.not_kept > 0 {
                note(format!(
                    "{} DICOM object(s) not kept for the PACS (outbox full)",
                    p.not_kept
                ));
            } else if (p.waiting + p.refused) * 10 >= p.capacity * 8 {
                note(format!(
                    "PACS outbox filling: {} of {} objects wait",
                    p.waiting, p.capacity
                ));
            }
            if p.refused > 0 {
                note(format!("{} DICOM object(s) refused by the PACS", p.refused));
            }
        }
        StatusMessage {
            contract: CONTRACT_VERSION,
            device_id: self.settings.device_id.clone(),
            online: true,
            state: state.as_str().into(),
            detail,
            exam_id: self.lifecycle.exam_id().map(String::from),
            exam_running: self.lifecycle.is_running(),
            source: self.settings.source.clone(),
            model: Some(self.model.clone()),
            software: crate::publish::messages::software(),
            frames: FrameCounters {
                received: self.links.counters.received.load(Ordering::Relaxed),
                dropped_by_source: self
                    .links
                    .counters
                    .dropped_by_source
                    .load(Ordering::Relaxed),
                dropped_in_queue: self.links.frames.dropped(),
            },
            outbox,
            pacs,
            time_ms: unix_ms(),
        }
    }

    /// Publishes the status when it changed (and tells systemd), or every 5 s for the counters.
    fn publish_status(&mut self, force: bool) {
        let (state, detail) = self.state();
        let key = (
            state.as_str().to_string(),
            detail.clone(),
            self.lifecycle.exam_id().map(String::from),
            self.lifecycle.is_running(),
        );
        let changed = self.last_status.as_ref() != Some(&key);
        let due = self
            .last_status_sent
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
        if !(force || changed || due) {
            return;
        }
        let message = self.status_message();
        if changed {
            let line = match (&message.exam_id, &message.detail) {
                (Some(e), Some(d)) => format!("{} (exam {e}): {d}", message.state),
                (Some(e), None) => format!("{} (exam {e})", message.state),
                (None, Some(d)) => format!("{}: {d}", message.state),
                (None, None) => message.state.clone(),
            };
            systemd::status(&line);
        }
        self.last_status = Some(key);
        self.last_status_sent = Some(Instant::now());
        let _ = self
            .links
            .outbound
            .try_send(Outbound::Status(Box::new(message)));
    }
}

/// The data of a command's reply.
fn reply_data(accepted: &Accepted) -> serde_json::Value {
    use serde_json::json;
    match accepted {
        Accepted::Started { exam_id } | Accepted::Stopped { exam_id } => {
            json!({ "exam_id": exam_id })
        }
        Accepted::Marked {
            injection_s,
            source_now_s,
        } => json!({ "injection_s": injection_s, "source_now_s": source_now_s }),
        Accepted::MarkPending {
            mark: InjectionMark::SecondsAgo { seconds, .. },
        } => json!({ "pending": true, "seconds_ago": seconds }),
        Accepted::MarkPending {
            mark: InjectionMark::AfterFirstFrame(at),
        } => json!({ "pending": true, "after_first_frame_s": at }),
        Accepted::RoiSet { roi, ceus_roi } => json!({ "roi": roi, "ceus_roi": ceus_roi }),
        Accepted::Rescoring {
            result_id,
            ceus_roi,
        } => json!({ "result_id": result_id, "ceus_roi": ceus_roi }),
    }
}
