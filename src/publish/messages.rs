//! The MQTT contract: topics and the JSON payloads published on them. `docs/asyncapi.yaml`
//! writes the same contract down for display makers; `tests/asyncapi.rs` checks that what is
//! built here validates against that document's schemas.

use serde::{Deserialize, Serialize};

use crate::exam::ExamResult;
use crate::model::ModelIdentity;
use crate::timing::{ClockSource, Phase, PhaseBoundaries, TimingStatus};

/// Version of the payloads; bumped on any incompatible change.
pub const CONTRACT_VERSION: u32 = 1;

/// Topic names under `<root>/<device-id>`.
#[derive(Debug, Clone)]
pub struct Topics {
    pub base: String,
}

impl Topics {
    pub fn new(root: &str, device_id: &str) -> Self {
        Self {
            base: format!("{root}/{device_id}"),
        }
    }
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    pub fn cmd(&self) -> String {
        format!("{}/cmd", self.base)
    }
    pub fn reply(&self) -> String {
        format!("{}/cmd/reply", self.base)
    }
    pub fn timing(&self, exam: &str) -> String {
        format!("{}/exam/{exam}/timing", self.base)
    }
    pub fn result(&self, exam: &str) -> String {
        format!("{}/exam/{exam}/result", self.base)
    }
    pub fn heatmap(&self, exam: &str) -> String {
        format!("{}/exam/{exam}/heatmap", self.base)
    }
    pub fn preview(&self) -> String {
        format!("{}/preview", self.base)
    }
}

/// What the daemon is doing, as the status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaemonState {
    Starting,
    Idle,
    Exam,
    NoSignal,
    Error,
    Stopping,
}

impl DaemonState {
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonState::Starting => "starting",
            DaemonState::Idle => "idle",
            DaemonState::Exam => "exam",
            DaemonState::NoSignal => "no-signal",
            DaemonState::Error => "error",
            DaemonState::Stopping => "stopping",
        }
    }
}

/// Frame counters.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FrameCounters {
    pub received: u64,
    /// Lost before they reached the daemon (gaps in the driver's sequence numbers).
    pub dropped_by_source: u64,
    /// Dropped oldest-first because the frame pipeline fell behind.
    pub dropped_in_queue: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutboxState {
    pub pending: usize,
    pub capacity: usize,
    /// Above 80 % full: the broker has not acknowledged for a long time.
    pub filling: bool,
}

/// What waits for the hospital's archive (PACS), in the status when results go to one.
/// Counts only: no patient data and no UIDs leave the cart on MQTT.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PacsState {
    /// DICOM objects the PACS has not kept yet.
    pub waiting: usize,
    /// Objects the PACS refused for good (kept in the outbox, reported by `ceusd check`).
    pub refused: usize,
    /// Objects not kept because `capacity` objects were already waiting.
    pub not_kept: usize,
    pub capacity: usize,
    /// Why the oldest waiting object has not been sent yet.
    pub last_error: Option<String>,
}

/// `…/status`, retained. The last will publishes `online: false` with the state "offline".
#[derive(Debug, Clone, Serialize)]
pub struct StatusMessage {
    pub contract: u32,
    pub device_id: String,
    pub online: bool,
    pub state: String,
    /// Why the state is what it is ("no signal: …", an error).
    pub detail: Option<String>,
    /// The exam running or last run; a display shows results of this exam only.
    pub exam_id: Option<String>,
    pub exam_running: bool,
    pub source: String,
    pub model: Option<ModelIdentity>,
    pub software: String,
    pub frames: FrameCounters,
    pub outbox: Option<OutboxState>,
    /// Absent when results are not sent to a PACS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacs: Option<PacsState>,
    /// Unix time, milliseconds.
    pub time_ms: u64,
}

impl StatusMessage {
    /// The retained will: what the broker publishes when the daemon vanishes.
    pub fn last_will(device_id: &str) -> Self {
        Self {
            contract: CONTRACT_VERSION,
            device_id: device_id.to_string(),
            online: false,
            state: "offline".into(),
            detail: Some("connection to the daemon lost".into()),
            exam_id: None,
            exam_running: false,
            source: String::new(),
            model: None,
            software: software(),
            frames: FrameCounters::default(),
            outbox: None,
            pacs: None,
            time_ms: 0,
        }
    }
}

/// `…/exam/<id>/timing`, about twice a second while an exam runs (QoS 0, not retained: a
/// stale clock must not be shown).
#[derive(Debug, Clone, Serialize)]
pub struct TimingMessage {
    pub contract: u32,
    pub exam_id: String,
    /// Source time of the frame, seconds.
    pub at_s: f64,
    pub phase: Phase,
    /// Seconds since injection; null until the injection is known.
    pub elapsed_s: Option<f64>,
    pub clock_source: Option<ClockSource>,
    pub estimated: bool,
    pub window: WindowInfo,
    /// Where the phases end, so that a display draws the same bands the daemon uses.
    pub phases: PhaseBands,
    pub time_ms: u64,
}

/// Ends of the phases, seconds since injection (each starts where the previous ends; the
/// vascular phase starts at the injection).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PhaseBands {
    pub vascular_end_s: f64,
    pub pancreatic_end_s: f64,
    pub delayed_end_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowInfo {
    pub start_s: f64,
    pub end_s: f64,
    pub target_s: f64,
    /// Seconds until the window opens (negative once open).
    pub countdown_s: Option<f64>,
    pub open: bool,
    /// Frames kept so far (the best K).
    pub frames_kept: usize,
}

impl TimingMessage {
    pub fn new(
        exam_id: &str,
        status: &TimingStatus,
        boundaries: &PhaseBoundaries,
        frames_kept: usize,
    ) -> Self {
        Self {
            contract: CONTRACT_VERSION,
            exam_id: exam_id.to_string(),
            at_s: status.at_s,
            phase: status.phase,
            elapsed_s: status.elapsed_s,
            clock_source: status.clock_source,
            estimated: status.estimated,
            window: WindowInfo {
                start_s: boundaries.window_start_s,
                end_s: boundaries.window_end_s,
                target_s: boundaries.window_target_s,
                countdown_s: status.window_countdown_s,
                open: status.in_window,
                frames_kept,
            },
            phases: PhaseBands {
                vascular_end_s: boundaries.vascular_end_s,
                pancreatic_end_s: boundaries.pancreatic_end_s,
                delayed_end_s: boundaries.delayed_end_s,
            },
            time_ms: unix_ms(),
        }
    }
}

/// `…/exam/<id>/result`, QoS 1, retained: the exam's result in its envelope. No
/// patient-identifying data.
#[derive(Debug, Clone, Serialize)]
pub struct ResultMessage {
    pub contract: u32,
    /// Unique per result; a subscriber that sees an id again has seen this result before.
    pub result_id: String,
    pub exam_id: String,
    /// 1 for the exam's first result, then counting rescores.
    pub revision: u32,
    #[serde(flatten)]
    pub result: ExamResult,
    /// The heatmap published with this result, when there is one.
    pub heatmap: Option<HeatmapInfo>,
    /// Wall-clock ms from the window's close (or the rescore command) to the result.
    pub window_to_result_ms: Option<u64>,
    pub time_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeatmapInfo {
    pub topic: String,
    /// SHA-256 of the PNG bytes, to match the image with its result.
    pub sha256: String,
    pub width: u32,
    pub height: u32,
}

impl ResultMessage {
    pub fn new(
        result_id: &str,
        exam_id: &str,
        revision: u32,
        result: ExamResult,
        heatmap: Option<HeatmapInfo>,
    ) -> Self {
        Self {
            contract: CONTRACT_VERSION,
            result_id: result_id.to_string(),
            exam_id: exam_id.to_string(),
            revision,
            result,
            heatmap,
            window_to_result_ms: None,
            time_ms: unix_ms(),
        }
    }
}

/// `…/cmd/reply`, QoS 1: the answer to one command.
#[derive(Debug, Clone, Serialize)]
pub struct CommandReply {
    pub contract: u32,
    /// The command's correlation id (null when the command was too malformed to carry one).
    pub id: Option<String>,
    pub command: Option<String>,
    pub ok: bool,
    /// Why the command was refused; nothing was changed.
    pub error: Option<String>,
    pub exam_id: Option<String>,
    /// Command-specific data (the status for "status", the ROI set, …).
    pub data: Option<serde_json::Value>,
    pub time_ms: u64,
}

impl CommandReply {
    pub fn ok(
        id: &str,
        command: &str,
        exam_id: Option<String>,
        data: Option<serde_json::Value>,
    ) -> Self {
        Self {
            contract: CONTRACT_VERSION,
            id: Some(id.to_string()),
            command: Some(command.to_string()),
            ok: true,
            error: None,
            exam_id,
            data,
            time_ms: unix_ms(),
        }
    }

    pub fn error(id: Option<String>, command: Option<String>, error: String) -> Self {
        Self {
            contract: CONTRACT_VERSION,
            id,
            command,
            ok: false,
            error: Some(error),
            exam_id: None,
            data: None,
            time_ms: unix_ms(),
        }
    }
}

pub fn software() -> String {
    format!("ceusd {}", env!("CARGO_PKG_VERSION"))
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A result in words, for logs and terminals: "P(PDAC) 0.930 → PDAC" or "no score: reason".
pub fn score_text(score: Option<f32>, label: Option<&str>, reason: Option<&str>) -> String {
    match (score, label, reason) {
        (Some(s), Some(l), _) => format!("P(PDAC) {s:.3} → {l}"),
        (_, _, Some(r)) => format!("no score: {r}"),
        _ => "no score".into(),
    }
}
