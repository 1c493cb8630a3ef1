//! The frame pipeline thread: owns the exam lifecycle. It takes frames from the capture queue
//! and commands from the MQTT session, runs the exam (quality, contrast clock, phases,
//! key-frame window), publishes timing and status, and hands results to the inference worker
//! when the key-frame window closes, when the exam stops, or on a rescore.
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
use crate::exam::{layout_of, Exam, ExamSettings};
use crate::health::{systemd, Heart};
use crate::layout::{Layout, Presets};
use crate::publish::commands::{Command, Request};
use crate::publish::messages::{
    unix_ms, CommandReply, DaemonState, FrameCounters, ModelInfo, OutboxState, StatusMessage,
    TimingMessage, Topics, CONTRACT_VERSION,
};
use crate::publish::mqtt::Outbound;
use crate::publish::outbox::{Outbox, OutgoingMessage};
use crate::publish::preview::{Panes, PreviewMessage, PreviewSettings};
use crate::roi::Roi;
use crate::timing::Phase;

/// What the capture thread hands on.
pub enum Captured {
    Frame {
        frame: Frame,
        /// The source's recorded exam and injection time at this frame.
        recorded_exam: Option<u64>,
        recorded_injection_s: Option<f64>,
    },
    NoSignal(String),
    End,
    Failed(String),
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
    pub exam: ExamSettings,
    /// A fixed layout, or `None` to find it on each exam's first frame.
    pub layout: Option<Layout>,
    pub presets: Presets,
    pub auto_start: bool,
    /// Source seconds per wall-clock second (replays and synthetic sources).
    pub speed: f64,
    pub timing_interval: Duration,
    pub outbox_capacity: usize,
    /// Where the last exam id is kept across restarts.
    pub state_file: std::path::PathBuf,
    /// The preview for displays, and its wall-clock interval; `None` when turned off.
    pub preview: Option<(PreviewSettings, Duration)>,
}

struct ExamRun {
    id: String,
    exam: Option<Exam>,
    roi: Option<Roi>,
    running: bool,
    revision: u32,
    /// The first result (window closed or exam stopped) was handed to the worker.
    scored: bool,
    recorded_exam: Option<u64>,
    /// An injection marked before the first frame: its wall-clock time.
    pending_mark: Option<Instant>,
    last_timing: Option<Instant>,
    /// Why the scanner's panes could not be found, while they cannot.
    layout_error: Option<String>,
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
    pub model_info: ModelInfo,
    pub links: Links,
    current: Option<ExamRun>,
    previous_exam_id: Option<String>,
    used_exam_ids: Vec<String>,
    source_state: SourceState,
    last_frame: Option<(f64, Instant, u32, u32)>,
    /// Size and pixel format of the last frame, to log each change once.
    frame_format: Option<(u32, u32, crate::capture::frame::PixelFormat)>,
    /// The recorded exam of the last frame: an exam started by hand during it belongs to it.
    last_recorded_exam: Option<u64>,
    last_status: Option<(String, Option<String>, Option<String>, bool)>,
    last_status_sent: Option<Instant>,
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
        model_info: ModelInfo,
        links: Links,
    ) -> Self {
        let persisted: PersistedState = std::fs::read(&settings.state_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let seed = unix_ms() ^ ((std::process::id() as u64) << 32);
        Self {
            settings,
            topics,
            model_info,
            links,
            current: None,
            previous_exam_id: persisted.last_exam_id,
            used_exam_ids: persisted.used_exam_ids,
            source_state: SourceState::Live,
            last_frame: None,
            frame_format: None,
            last_recorded_exam: None,
            last_status: None,
            last_status_sent: None,
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
        if let Some(run) = &self.current {
            if run.running && !run.scored {
                log::warn!(
                    "exam {} was running when the daemon stopped, before its key-frame window closed: it has no result",
                    run.id
                );
            }
        }
        self.links.heart.finish();
    }

    fn event(&mut self, event: Captured) {
        match event {
            Captured::Frame {
                frame,
                recorded_exam,
                recorded_injection_s,
            } => {
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
                let t = frame.timestamp.as_secs_f64();
                self.last_frame = Some((t, Instant::now(), frame.width, frame.height));
                if self.source_state != SourceState::Live {
                    log::info!("source: frames again");
                    self.source_state = SourceState::Live;
                }
                self.last_recorded_exam = recorded_exam;
                if self.settings.auto_start && recorded_exam.is_some() {
                    // A recorded exam starts one exam: stopped by hand, it is not restarted.
                    let same = self
                        .current
                        .as_ref()
                        .is_some_and(|r| r.recorded_exam == recorded_exam);
                    if !same {
                        if self.current.as_ref().is_some_and(|r| r.running) {
                            self.stop_exam("the recording's next exam began");
                        }
                        match self.start_exam(None) {
                            Ok(id) => log::debug!(
                                "exam {id}: follows recorded exam {}",
                                recorded_exam.unwrap_or_default()
                            ),
                            Err(e) => log::error!("automatic exam start refused: {e}"),
                        }
                        if let Some(run) = self.current.as_mut() {
                            run.recorded_exam = recorded_exam;
                        }
                    }
                }
                self.frame(&frame, recorded_injection_s);
                self.preview(&frame);
            }
            Captured::NoSignal(reason) => {
                if self.source_state != SourceState::NoSignal(reason.clone()) {
                    log::warn!("source: {reason}");
                    self.source_state = SourceState::NoSignal(reason);
                }
            }
            Captured::End => {
                log::info!("source: the recording ended");
                if self.current.as_ref().is_some_and(|r| r.running) {
                    self.stop_exam("the recording ended");
                }
                self.source_state = SourceState::Ended;
            }
            Captured::Failed(reason) => {
                log::error!("source failed: {reason}");
                if self.current.as_ref().is_some_and(|r| r.running) {
                    self.stop_exam("the source failed");
                }
                self.source_state = SourceState::Failed(reason);
            }
        }
    }

    fn frame(&mut self, frame: &Frame, recorded_injection_s: Option<f64>) {
        let t = frame.timestamp.as_secs_f64();
        let speed = self.settings.speed;
        let Some(run) = self.current.as_mut() else {
            return;
        };
        if !run.running {
            return;
        }
        if run.exam.is_none() {
            let layout = match self.settings.layout {
                Some(l) => Ok(l),
                None => layout_of(frame, &self.settings.presets),
            };
            let exam = layout.and_then(|l| Exam::new(self.settings.exam.clone(), l));
            match exam {
                Ok(mut e) => {
                    if self.settings.exam.use_recorded_injection {
                        if let Some(at) = recorded_injection_s {
                            e.recorded_injection(t, at);
                        }
                    }
                    if let Some(marked) = run.pending_mark.take() {
                        let ago = marked.elapsed().as_secs_f64() * speed;
                        e.mark_injection(t, ago);
                    }
                    if let Some(roi) = run.roi {
                        if let Err(err) = e.ceus_roi(&roi) {
                            log::warn!("exam {}: ROI set before the first frame: {err}", run.id);
                            run.roi = None;
                        }
                    }
                    run.exam = Some(e);
                }
                Err(e) => {
                    // Tried again on the next frame (a CEUS pane can be too dark to find
                    // before the contrast arrives); said once.
                    let message = e.to_string();
                    if run.layout_error.as_deref() != Some(message.as_str()) {
                        log::error!("exam {}: {message}", run.id);
                        run.layout_error = Some(message);
                    }
                    return;
                }
            }
        }
        let Some(exam) = run.exam.as_mut() else {
            return;
        };
        let status = match exam.process(frame) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("exam {}: frame {}: {e}", run.id, frame.sequence);
                return;
            }
        };
        let b = exam.settings.boundaries;
        if run
            .last_timing
            .is_none_or(|last| last.elapsed() >= self.settings.timing_interval)
        {
            run.last_timing = Some(Instant::now());
            let message = TimingMessage::new(&run.id, &status, &b, exam.window.kept().len());
            if let Ok(payload) = serde_json::to_vec(&message) {
                let _ = self.links.outbound.try_send(Outbound::Transient {
                    topic: self.topics.timing(&run.id),
                    payload,
                });
            }
        }
        let window_over = status.elapsed_s.is_some_and(|e| e >= b.window_end_s);
        let done = status.phase == Phase::Done || exam.phases.timed_out;
        if window_over && !run.scored {
            self.submit(false);
        }
        if done {
            self.stop_exam("the exam's time is over");
        }
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
        let run = self.current.as_ref().filter(|r| r.running);
        let panes = run
            .and_then(|r| r.exam.as_ref())
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

    /// Hands the exam to the inference worker.
    fn submit(&mut self, rescore: bool) -> Option<String> {
        let run = self.current.as_mut()?;
        run.revision += 1;
        run.scored = true;
        let result_id = format!("{}-r{}", run.id, run.revision);
        log::info!(
            "exam {}: {} as {result_id}",
            run.id,
            if rescore { "rescoring" } else { "scoring" }
        );
        let job = ScoringJob {
            exam_id: run.id.clone(),
            result_id: result_id.clone(),
            revision: run.revision,
            exam: run.exam.clone(),
            roi: run.roi,
            requested: Instant::now(),
        };
        if self.links.jobs.send(job).is_err() {
            log::error!("the inference worker is gone; {result_id} is not computed");
            return None;
        }
        Some(result_id)
    }

    fn new_exam_id(&mut self) -> String {
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(['-', ':'], "");
        format!("{}-{:04x}", stamp, self.rng.next_u64() & 0xffff)
    }

    /// Starts an exam: clears what the previous one left retained, then begins.
    fn start_exam(&mut self, requested: Option<String>) -> Result<String, String> {
        if let Some(run) = self.current.as_ref().filter(|r| r.running) {
            return Err(format!("exam {} is running; stop it first", run.id));
        }
        let id = match requested {
            Some(id) => {
                if self.previous_exam_id.as_deref() == Some(id.as_str())
                    || self.used_exam_ids.contains(&id)
                    || self.current.as_ref().is_some_and(|r| r.id == id)
                {
                    return Err(format!(
                        "exam id {id} was used already; results of two exams must never share an id"
                    ));
                }
                id
            }
            None => self.new_exam_id(),
        };
        if let Some(previous) = self.previous_exam_id.clone() {
            let clear = |topic: String| OutgoingMessage {
                topic,
                payload: Vec::new(),
                retain: true,
            };
            let messages = [
                clear(self.topics.result(&previous)),
                clear(self.topics.heatmap(&previous)),
            ];
            let stored = self
                .links
                .outbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .enqueue(&format!("clear-{previous}"), &messages);
            if let Err(e) = stored {
                return Err(format!(
                    "the previous exam's retained result cannot be cleared ({e}); not starting"
                ));
            }
            let _ = self.links.outbound.blocking_send(Outbound::OutboxChanged);
        }
        self.used_exam_ids.push(id.clone());
        let excess = self.used_exam_ids.len().saturating_sub(1000);
        self.used_exam_ids.drain(..excess);
        let state = PersistedState {
            last_exam_id: Some(id.clone()),
            used_exam_ids: self.used_exam_ids.clone(),
        };
        if let Ok(bytes) = serde_json::to_vec(&state) {
            if let Err(e) = crate::atomic_file::write_atomically(&self.settings.state_file, |w| {
                std::io::Write::write_all(w, &bytes)
            }) {
                log::warn!("{}: {e}", self.settings.state_file.display());
            }
        }
        self.previous_exam_id = Some(id.clone());
        self.current = Some(ExamRun {
            id: id.clone(),
            exam: None,
            roi: None,
            running: true,
            revision: 0,
            scored: false,
            recorded_exam: self.last_recorded_exam,
            pending_mark: None,
            last_timing: None,
            layout_error: None,
        });
        log::info!("exam {id}: started");
        self.publish_status(true);
        Ok(id)
    }

    fn stop_exam(&mut self, why: &str) {
        let Some(run) = self.current.as_mut() else {
            return;
        };
        if !run.running {
            return;
        }
        run.running = false;
        log::info!("exam {}: stopped ({why})", run.id);
        if !run.scored {
            self.submit(false);
        }
        self.publish_status(true);
    }

    /// Source time now: the last frame's time plus the wall time since, at the source's speed.
    fn source_now(&self) -> Option<f64> {
        self.last_frame
            .map(|(t, at, _, _)| t + at.elapsed().as_secs_f64() * self.settings.speed)
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
        let current = self.current.as_ref().map(|r| r.id.as_str());
        let outcome = match request.exam_id.as_deref() {
            Some(meant) if current != Some(meant) => Err(format!(
                "exam {meant} is not the current exam ({}); nothing was changed",
                current.map_or_else(|| "there is none".to_string(), |c| format!("{c} is"))
            )),
            _ => self.apply(request.command),
        };
        let exam_id = self.current.as_ref().map(|r| r.id.clone());
        match outcome {
            Ok(data) => {
                log::info!("command {name} ({id}): ok");
                CommandReply::ok(&id, name, exam_id, data)
            }
            Err(reason) => {
                log::warn!("command {name} ({id}) refused: {reason}");
                let mut reply = CommandReply::error(Some(id), Some(name.into()), reason);
                reply.exam_id = exam_id;
                reply
            }
        }
    }

    fn apply(&mut self, command: Command) -> Result<Option<serde_json::Value>, String> {
        use serde_json::json;
        match command {
            Command::Status => Ok(Some(
                serde_json::to_value(self.status_message()).map_err(|e| e.to_string())?,
            )),
            Command::StartExam { exam_id } => {
                let id = self.start_exam(exam_id)?;
                Ok(Some(json!({ "exam_id": id })))
            }
            Command::StopExam => {
                let run = self
                    .current
                    .as_ref()
                    .filter(|r| r.running)
                    .ok_or("no exam is running")?;
                let id = run.id.clone();
                self.stop_exam("stop command");
                Ok(Some(json!({ "exam_id": id })))
            }
            Command::MarkInjection { seconds_ago } => {
                let now = self.source_now();
                let speed = self.settings.speed;
                let run = self
                    .current
                    .as_mut()
                    .filter(|r| r.running)
                    .ok_or("no exam is running: start an exam first")?;
                if run.scored {
                    return Err(
                        "the key-frame window has passed and the exam was scored; the clock cannot change now"
                            .into(),
                    );
                }
                match (run.exam.as_mut(), now) {
                    (Some(exam), Some(now)) => {
                        let at = now - seconds_ago * speed;
                        exam.mark_injection_at(now, at);
                        Ok(Some(json!({ "injection_s": at, "source_now_s": now })))
                    }
                    _ => {
                        run.pending_mark =
                            Instant::now().checked_sub(Duration::from_secs_f64(seconds_ago));
                        if run.pending_mark.is_none() {
                            return Err(format!(
                                "seconds_ago {seconds_ago}: before this machine started"
                            ));
                        }
                        Ok(Some(json!({ "pending": true, "seconds_ago": seconds_ago })))
                    }
                }
            }
            Command::SetRoi { roi } => {
                let run = self
                    .current
                    .as_mut()
                    .ok_or("no exam: start an exam first")?;
                let exam = match (run.exam.as_ref(), &run.layout_error) {
                    (Some(e), _) => e,
                    (None, Some(layout)) => {
                        return Err(format!(
                            "the scanner's panes were not found, so the ROI cannot be checked: {layout}"
                        ))
                    }
                    (None, None) => return Err(
                        "no frame has arrived in this exam yet: the ROI cannot be checked against the scanner's panes"
                            .into(),
                    ),
                };
                let ceus = exam.ceus_roi(&roi).map_err(|e| e.to_string())?;
                run.roi = Some(roi);
                Ok(Some(json!({ "roi": roi, "ceus_roi": ceus })))
            }
            Command::Rescore { roi } => {
                let run = self
                    .current
                    .as_mut()
                    .ok_or("no exam: start an exam first")?;
                if !run.scored {
                    return Err(
                        "the exam has not been scored yet: rescoring is for after the key-frame window"
                            .into(),
                    );
                }
                let exam = run
                    .exam
                    .as_ref()
                    .ok_or("no frame arrived in this exam: nothing to rescore")?;
                let roi = roi.or(run.roi).ok_or("no ROI: give one with the rescore")?;
                let ceus = exam.ceus_roi(&roi).map_err(|e| e.to_string())?;
                run.roi = Some(roi);
                let result_id = self.submit(true).ok_or("the inference worker is gone")?;
                Ok(Some(json!({ "result_id": result_id, "ceus_roi": ceus })))
            }
        }
    }

    fn state(&self) -> (DaemonState, Option<String>) {
        match &self.source_state {
            SourceState::Failed(r) => (DaemonState::Error, Some(format!("source failed: {r}"))),
            SourceState::NoSignal(r) => (DaemonState::NoSignal, Some(r.clone())),
            SourceState::Ended if !self.current.as_ref().is_some_and(|r| r.running) => {
                (DaemonState::Idle, Some("the recording ended".into()))
            }
            _ => {
                if let Some(e) = self
                    .current
                    .as_ref()
                    .filter(|r| r.running)
                    .and_then(|r| r.layout_error.as_ref().filter(|_| r.exam.is_none()))
                {
                    (DaemonState::Exam, Some(e.clone()))
                } else if self.current.as_ref().is_some_and(|r| r.running) {
                    (DaemonState::Exam, None)
                } else {
                    (DaemonState::Idle, None)
                }
            }
        }
    }

    pub fn status_message(&self) -> StatusMessage {
        let (state, mut detail) = self.state();
        let outbox = {
            let o = self.links.outbox.lock().unwrap_or_else(|e| e.into_inner());
            o.len().ok().map(|pending| OutboxState {
                pending,
                capacity: self.settings.outbox_capacity,
                filling: pending * 10 >= self.settings.outbox_capacity * 8,
            })
        };
        if outbox.is_some_and(|o| o.filling) {
            let note = "outbox filling: the broker has not acknowledged results for a while";
            detail = Some(match detail {
                Some(d) => format!("{d}; {note}"),
                None => note.into(),
            });
        }
        StatusMessage {
            contract: CONTRACT_VERSION,
            device_id: self.settings.device_id.clone(),
            online: true,
            state: state.as_str().into(),
            detail,
            exam_id: self.current.as_ref().map(|r| r.id.clone()),
            exam_running: self.current.as_ref().is_some_and(|r| r.running),
            source: self.settings.source.clone(),
            model: Some(self.model_info.clone()),
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
            time_ms: unix_ms(),
        }
    }

    /// Publishes the status when it changed (and tells systemd), or every 5 s for the counters.
    fn publish_status(&mut self, force: bool) {
        let (state, detail) = self.state();
        let key = (
            state.as_str().to_string(),
            detail.clone(),
            self.current.as_ref().map(|r| r.id.clone()),
            self.current.as_ref().is_some_and(|r| r.running),
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
