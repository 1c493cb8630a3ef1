//! Commands from the bedside display on `…/cmd`: parsing and validation of the payload alone.
//! Whether a command fits the daemon's state (an exam running, a frame seen) is decided by the
//! frame pipeline, which owns that state. Every refusal carries a sentence for the operator.

use serde::Deserialize;

use crate::config::is_topic_word;
use crate::exam_lifecycle::ExamOrder;
use crate::roi::Roi;

/// Largest command payload accepted.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// Furthest back an injection may be marked.
pub const MAX_BACKDATE_S: f64 = 600.0;

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Starts an exam; the id is generated when not given.
    StartExam {
        exam_id: Option<String>,
        /// The accession number and (where the site allows) patient id: never echoed.
        order: ExamOrder,
    },
    /// The contrast was injected `seconds_ago` seconds before the command (0 = now).
    MarkInjection {
        seconds_ago: f64,
    },
    /// The lesion's ROI, in frame pixels, on the B-mode or the CEUS pane.
    SetRoi {
        roi: Roi,
    },
    /// Scores the kept frames of the window again, with a new ROI when given.
    Rescore {
        roi: Option<Roi>,
    },
    StopExam,
    Status,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::StartExam { .. } => "start_exam",
            Command::MarkInjection { .. } => "mark_injection",
            Command::SetRoi { .. } => "set_roi",
            Command::Rescore { .. } => "rescore",
            Command::StopExam => "stop_exam",
            Command::Status => "status",
        }
    }
}

/// A command with its correlation id.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: String,
    pub command: Command,
    /// For a command on the running exam (mark_injection, set_roi, rescore, stop_exam): the
    /// exam the sender sees. The command is refused when another exam is current, so that a
    /// mark or a stop sent just before the next exam began never lands on the wrong patient.
    /// (start_exam's `exam_id` is the new exam's id, inside the command.)
    pub exam_id: Option<String>,
}

/// A refused payload: the id and command name when they could be read, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub id: Option<String>,
    pub command: Option<String>,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    id: serde_json::Value,
    command: serde_json::Value,
    #[serde(default)]
    exam_id: Option<serde_json::Value>,
    #[serde(default)]
    seconds_ago: Option<serde_json::Value>,
    #[serde(default)]
    roi: Option<serde_json::Value>,
    #[serde(default)]
    accession_number: Option<serde_json::Value>,
    #[serde(default)]
    patient_id: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRoi {
    x: u32,
    y: u32,
    width: u32,
    height: u32,
}

/// Parses one payload. Never panics, whatever the bytes (fuzzed in `tests/commands.rs`).
pub fn parse_command(payload: &[u8]) -> Result<Request, Refusal> {
    let value = json_object(payload)?;
    // The id first, so that even a command refused for its other fields is answered with it.
    let id = value
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .map(str::to_string);
    let name = value
        .get("command")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let wire: Wire = serde_json::from_value(value).map_err(|e| Refusal {
        id: id.clone(),
        command: name.clone(),
        reason: format!("expected {{\"id\", \"command\", …}}: {e}"),
    })?;
    let Some(id) = id else {
        return Err(Refusal {
            id: None,
            command: name,
            reason: format!(
                "\"id\" must be a string of 1 to 128 characters, got {}",
                wire.id
            ),
        });
    };
    let Some(name) = name else {
        return Err(Refusal {
            id: Some(id),
            command: None,
            reason: format!("\"command\" must be a string, got {}", wire.command),
        });
    };
    let addressed = Addressed { id, name };
    let (command, exam_id) = addressed.command(wire)?;
    Ok(Request {
        id: addressed.id,
        command,
        exam_id,
    })
}

/// The payload as a JSON object: at most `MAX_COMMAND_BYTES` of UTF-8 text.
fn json_object(payload: &[u8]) -> Result<serde_json::Value, Refusal> {
    let refuse = |reason: String| Refusal {
        id: None,
        command: None,
        reason,
    };
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(refuse(format!(
            "command of {} bytes: at most {MAX_COMMAND_BYTES} are accepted",
            payload.len()
        )));
    }
    let text = std::str::from_utf8(payload).map_err(|e| refuse(format!("not UTF-8 text: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| refuse(format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(refuse(
            "expected a JSON object {\"id\", \"command\", …}".into(),
        ));
    }
    Ok(value)
}

/// A payload whose id and command name are known: every refusal from here on carries both.
struct Addressed {
    id: String,
    name: String,
}

impl Addressed {
    fn refuse(&self, reason: String) -> Refusal {
        Refusal {
            id: Some(self.id.clone()),
            command: Some(self.name.clone()),
            reason,
        }
    }

    /// Refuses a field the command does not take.
    fn unexpected(&self, field: &str, present: bool) -> Result<(), Refusal> {
        if present {
            Err(self.refuse(format!("\"{field}\" does not belong to {}", self.name)))
        } else {
            Ok(())
        }
    }

    /// The command with its fields checked, and for a command on the running exam the exam
    /// the sender means.
    fn command(&self, wire: Wire) -> Result<(Command, Option<String>), Refusal> {
        let exam_id = self.exam_id(wire.exam_id.clone())?;
        if self.name != "start_exam" {
            self.unexpected("accession_number", wire.accession_number.is_some())?;
            self.unexpected("patient_id", wire.patient_id.is_some())?;
        }
        // Set below for the commands on the running exam.
        let mut meant_exam = None;
        let command = match self.name.as_str() {
            "start_exam" => {
                self.unexpected("seconds_ago", wire.seconds_ago.is_some())?;
                self.unexpected("roi", wire.roi.is_some())?;
                let order = ExamOrder {
                    accession_number: self.dicom_text(
                        "accession_number",
                        wire.accession_number.clone(),
                        16,
                    )?,
                    patient_id: self.dicom_text("patient_id", wire.patient_id.clone(), 64)?,
                };
                Command::StartExam { exam_id, order }
            }
            "mark_injection" => {
                meant_exam = exam_id;
                self.unexpected("roi", wire.roi.is_some())?;
                Command::MarkInjection {
                    seconds_ago: self.seconds_ago(wire.seconds_ago)?,
                }
            }
            "set_roi" | "rescore" => {
                meant_exam = exam_id;
                self.unexpected("seconds_ago", wire.seconds_ago.is_some())?;
                let roi = match wire.roi {
                    None | Some(serde_json::Value::Null) => None,
                    Some(v) => Some(parse_roi(v).map_err(|e| self.refuse(e))?),
                };
                if self.name == "set_roi" {
                    Command::SetRoi {
                        roi: roi.ok_or_else(|| {
                            self.refuse("set_roi needs \"roi\": {x, y, width, height}".into())
                        })?,
                    }
                } else {
                    Command::Rescore { roi }
                }
            }
            "stop_exam" => {
                meant_exam = exam_id;
                self.unexpected("seconds_ago", wire.seconds_ago.is_some())?;
                self.unexpected("roi", wire.roi.is_some())?;
                Command::StopExam
            }
            "status" => {
                self.unexpected("exam_id", wire.exam_id.is_some())?;
                self.unexpected("seconds_ago", wire.seconds_ago.is_some())?;
                self.unexpected("roi", wire.roi.is_some())?;
                Command::Status
            }
            other => {
                return Err(self.refuse(format!(
                    "unknown command '{other}' (expected start_exam, mark_injection, set_roi, rescore, stop_exam or status)"
                )))
            }
        };
        Ok((command, meant_exam))
    }

    /// The `exam_id` field: absent or null, or a topic word.
    fn exam_id(&self, value: Option<serde_json::Value>) -> Result<Option<String>, Refusal> {
        match value {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if is_topic_word(&s) => Ok(Some(s)),
            Some(other) => Err(self.refuse(format!(
                "exam_id {other}: use 1 to 64 letters, digits, '-' or '_'"
            ))),
        }
    }

    /// start_exam's accession number or patient id: absent or null, or 1 to `max` characters
    /// of DICOM's default repertoire without a backslash. A refusal never repeats the value:
    /// the reply goes on MQTT, where no patient data may appear.
    fn dicom_text(
        &self,
        field: &str,
        value: Option<serde_json::Value>,
        max: usize,
    ) -> Result<Option<String>, Refusal> {
        match value {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s))
                if !s.trim().is_empty()
                    && s.trim().len() <= max
                    && s.chars()
                        .all(|c| c.is_ascii() && !c.is_ascii_control() && c != '\\') =>
            {
                Ok(Some(s.trim().to_string()))
            }
            Some(_) => Err(self.refuse(format!(
                "{field}: expected 1 to {max} ASCII characters without '\\' (value not repeated)"
            ))),
        }
    }

    /// mark_injection's `seconds_ago`: absent or null is now, else 0 to `MAX_BACKDATE_S`.
    fn seconds_ago(&self, value: Option<serde_json::Value>) -> Result<f64, Refusal> {
        let seconds_ago = match value {
            None | Some(serde_json::Value::Null) => 0.0,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.refuse(format!("seconds_ago {v}: expected a number")))?,
        };
        if !(0.0..=MAX_BACKDATE_S).contains(&seconds_ago) {
            return Err(self.refuse(format!(
                "seconds_ago {seconds_ago}: expected 0 to {MAX_BACKDATE_S} seconds"
            )));
        }
        Ok(seconds_ago)
    }
}

fn parse_roi(v: serde_json::Value) -> Result<Roi, String> {
    let text = v.to_string();
    let r: WireRoi = serde_json::from_value(v).map_err(|e| {
        format!("roi {text}: expected {{x, y, width, height}} in whole pixels: {e}")
    })?;
    if r.width < 8 || r.height < 8 {
        return Err(format!(
            "roi {text}: {}x{} is too small (at least 8x8 pixels)",
            r.width, r.height
        ));
    }
    if r.x.checked_add(r.width).is_none() || r.y.checked_add(r.height).is_none() {
        return Err(format!("roi {text}: extends past any frame"));
    }
    Ok(Roi::new(r.x, r.y, r.width, r.height))
}
