//! The daemon's configuration: one TOML file (`/etc/ceusd/ceusd.toml`, documented field by
//! field in `systemd/ceusd.example.toml`), a few fields overridable by flags for one session.
//!
//! The file deserialises into [`ConfigFile`], its sections as written (strings, numbers);
//! unknown keys and wrong types are refused by the parser with the field's name and line.
//! `Config::try_from` then checks every value once and turns it into what the daemon uses (a
//! parsed source, a fixed layout or presets, a broker address, a content hash, exam settings,
//! durations), naming the field at fault the same way (`mqtt.keep_alive_s`). Nothing later
//! parses a configuration string again. Every default is written once, in the raw sections'
//! `default_*` functions (the exam's come from the library's own defaults).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::capture::source::Pacing;
use crate::capture::spec::SourceSpec;
use crate::exam::ExamSettings;
use crate::layout::{Layout, Presets};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// The configuration file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub device: DeviceSection,
    pub source: SourceSection,
    pub model: ModelSection,
    #[serde(default)]
    pub mqtt: MqttSection,
    #[serde(default)]
    pub exam: ExamSection,
    #[serde(default)]
    pub state: StateSection,
    #[serde(default)]
    pub pipeline: PipelineSection,
    #[serde(default)]
    pub preview: PreviewSection,
    /// Absent: results are not sent to a PACS.
    #[serde(default)]
    pub pacs: Option<PacsSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// Names the cart in topics (`ceus/<id>/…`) and logs.
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// `v4l2:/dev/video0?format=YUYV&size=1920x1080&fps=60`, `dicom:…`, `frames:…`,
    /// `synthetic:pdac,cp?…`.
    pub uri: String,
    /// Replays and the synthetic scanner: recorded time runs this many times faster.
    #[serde(default = "one")]
    pub speed: f64,
    /// A scanner preset name, or "auto" (detect the panes, else the preset for the frame size).
    #[serde(default = "auto")]
    pub layout: String,
    /// Site presets (TOML) added to the built-in ones.
    #[serde(default)]
    pub layouts_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A model file (GGUF), or "demo" for the embedded demo model (not for clinical use).
    pub path: String,
    /// The expected content hash (`sha256:…`); a model with another hash is refused.
    #[serde(default)]
    pub sha256: Option<String>,
    /// "cpu" or "cuda[:N]".
    #[serde(default = "cpu")]
    pub device: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS).
    #[serde(default = "default_broker")]
    pub broker: String,
    /// Topics live under `<topic_root>/<device.id>/`.
    #[serde(default = "default_root")]
    pub topic_root: String,
    /// Defaults to `ceusd-<device.id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (one line); never the password itself.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) for `mqtts://`; the system's roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for brokers that require them.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Reconnect backoff: doubles from the first to the longest wait.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_s: f64,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_s: f64,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            broker: default_broker(),
            topic_root: default_root(),
            client_id: None,
            keep_alive_s: default_keep_alive(),
            username: None,
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            reconnect_min_s: default_reconnect_min(),
            reconnect_max_s: default_reconnect_max(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExamSection {
    /// Frames of the key-frame window that are scored (K).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Start (and stop) exams where a recording or the synthetic scanner marks them, without
    /// a command. Live capture has no such marks: exams start by command.
    #[serde(default)]
    pub auto_start: bool,
    /// Take the injection time a recording carries.
    #[serde(default = "yes")]
    pub use_recorded_injection: bool,
    /// Assumed delay from injection to contrast arrival, for the estimated clock.
    #[serde(default = "default_transit")]
    pub transit_s: f64,
    /// How often timing messages are published.
    #[serde(default = "default_timing_interval")]
    pub timing_interval_s: f64,
    /// An exam without any injection time is stopped after this long.
    #[serde(default = "default_exam_timeout")]
    pub timeout_s: f64,
}

impl Default for ExamSection {
    fn default() -> Self {
        Self {
            keep: default_keep(),
            auto_start: false,
            use_recorded_injection: true,
            transit_s: default_transit(),
            timing_interval_s: default_timing_interval(),
            timeout_s: default_exam_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// Where the outbox (SQLite) lives; must be writable.
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
    /// Messages the outbox holds before it refuses new results.
    #[serde(default = "default_outbox_capacity")]
    pub outbox_capacity: usize,
}

impl Default for StateSection {
    fn default() -> Self {
        Self {
            dir: default_state_dir(),
            outbox_capacity: default_outbox_capacity(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    /// Frames waiting between capture and the frame pipeline; the oldest is dropped when full.
    #[serde(default = "default_frame_queue")]
    pub frame_queue: usize,
    /// A stage that shows no progress for this long stops the watchdog pings.
    #[serde(default = "default_stall")]
    pub stall_s: f64,
    /// Longest an inference job may run before it counts as stuck.
    #[serde(default = "default_inference_stall")]
    pub inference_stall_s: f64,
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            frame_queue: default_frame_queue(),
            stall_s: default_stall(),
            inference_stall_s: default_inference_stall(),
        }
    }
}

/// The low-rate preview of whole frames a display draws the ROI on (`…/preview`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewSection {
    /// Off by default: frames of the scanner's screen leave the daemon only when a site
    /// turns this on for a display on its own network.
    #[serde(default)]
    pub enabled: bool,
    /// Preview frames per second of wall-clock time.
    #[serde(default = "default_preview_fps")]
    pub fps: f64,
    /// Width of the preview image in pixels (the height keeps the frame's aspect ratio);
    /// frames narrower than this are sent at their own size.
    #[serde(default = "default_preview_width")]
    pub width: u32,
    /// JPEG quality, 1 to 100.
    #[serde(default = "default_preview_quality")]
    pub quality: u8,
}

impl Default for PreviewSection {
    fn default() -> Self {
        Self {
            enabled: false,
            fps: default_preview_fps(),
            width: default_preview_width(),
            quality: default_preview_quality(),
        }
    }
}

/// The hospital's archive that results are sent to (C-STORE), as DICOM objects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacsSection {
    pub host: String,
    #[serde(default = "default_dicom_port")]
    pub port: u16,
    /// The PACS's AE title.
    pub called_ae_title: String,
    /// This cart's AE title, as the PACS knows it.
    #[serde(default = "default_calling_ae_title")]
    pub calling_ae_title: String,
    /// Root of the objects' UIDs: the site's registered root, or 2.25 (UUID-derived UIDs,
    /// which need no registration).
    #[serde(default = "default_uid_root")]
    pub uid_root: String,
    /// Written as Institution Name in the objects.
    #[serde(default)]
    pub institution_name: Option<String>,
    /// Longest wait to connect, and for each answer.
    #[serde(default = "default_pacs_timeout")]
    pub timeout_s: f64,
    /// Objects kept for the PACS (waiting or refused) before new results' objects are
    /// recorded as not kept.
    #[serde(default = "default_pacs_capacity")]
    pub capacity: usize,
    /// Retry backoff while the PACS is unreachable: doubles from the first to the longest.
    #[serde(default = "default_pacs_retry_min")]
    pub retry_min_s: f64,
    #[serde(default = "default_pacs_retry_max")]
    pub retry_max_s: f64,
    /// DICOM TLS: the CA (PEM) that signed the PACS's certificate. Absent: plain TCP.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// The cart's certificate and key (PEM), for a PACS that asks for one.
    #[serde(default)]
    pub tls_client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_client_key_file: Option<PathBuf>,
    /// Whether start_exam may carry a patient id (else only an accession number, and the
    /// worklist names the patient).
    #[serde(default)]
    pub patient_id_from_commands: bool,
    /// The modality worklist SCP that start_exam's accession number is looked up in.
    #[serde(default)]
    pub worklist: Option<WorklistSection>,
}

/// `[pacs.worklist]`: the RIS's modality worklist, queried with this cart's AE title.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorklistSection {
    pub host: String,
    #[serde(default = "default_dicom_port")]
    pub port: u16,
    pub called_ae_title: String,
    /// Over DICOM TLS, with the PACS's `tls_*` files.
    #[serde(default)]
    pub tls: bool,
}

fn default_dicom_port() -> u16 {
    104
}
fn default_calling_ae_title() -> String {
    "CEUSD".into()
}
fn default_uid_root() -> String {
    crate::pacs::UidRoot::default().to_string()
}
fn default_pacs_timeout() -> f64 {
    10.0
}
// Two objects a result: a hundred results, some hundreds of MB at most.
fn default_pacs_capacity() -> usize {
    200
}
fn default_pacs_retry_min() -> f64 {
    2.0
}
fn default_pacs_retry_max() -> f64 {
    300.0
}

// About 15 kB a second: Mosquitto 2.0's websockets listener moves only some tens of kB/s to
// a browser.
fn default_preview_fps() -> f64 {
    1.0
}
fn default_preview_width() -> u32 {
    480
}
fn default_preview_quality() -> u8 {
    60
}

fn one() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn auto() -> String {
    "auto".into()
}
fn cpu() -> String {
    "cpu".into()
}
fn default_broker() -> String {
    "mqtt://127.0.0.1:1883".into()
}
fn default_root() -> String {
    "ceus".into()
}
fn default_keep_alive() -> u64 {
    10
}
fn default_reconnect_min() -> f64 {
    0.5
}
fn default_reconnect_max() -> f64 {
    10.0
}
// The exam's defaults are the library's own, written once where they are used.
fn default_keep() -> usize {
    crate::exam::ExamSettings::default().keep
}
fn default_transit() -> f64 {
    crate::timing::arrival::ArrivalSettings::default().transit_s
}
fn default_timing_interval() -> f64 {
    0.5
}
fn default_exam_timeout() -> f64 {
    crate::timing::phase::PhaseBoundaries::default().exam_timeout_s
}
fn default_state_dir() -> PathBuf {
    "/var/lib/ceusd".into()
}
fn default_outbox_capacity() -> usize {
    1000
}
fn default_frame_queue() -> usize {
    8
}
fn default_stall() -> f64 {
    10.0
}
fn default_inference_stall() -> f64 {
    60.0
}

/// The broker address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for BrokerAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "'{s}': expected mqtt://host:port or mqtts://host:port"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("'{s}': port '{p}' is not a number from 1 to 65535"))?,
            ),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || port == 0 {
            return Err(format!("'{s}': expected mqtt://host:port"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

/// Flags that override the file for one session.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub source: Option<String>,
    pub broker: Option<String>,
    pub device_id: Option<String>,
    pub model: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub speed: Option<f64>,
}

/// The configuration, checked: what the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub device: DeviceSection,
    pub source: Source,
    pub model: Model,
    pub mqtt: Mqtt,
    pub exam: Exam,
    pub state: StateSection,
    pub pipeline: Pipeline,
    /// `None` when the preview is off.
    pub preview: Option<Preview>,
    /// `None` when results are not sent to a PACS.
    pub pacs: Option<Pacs>,
}

/// The PACS, checked.
#[derive(Debug, Clone)]
pub struct Pacs {
    pub peer: crate::pacs::network::PacsPeer,
    pub uid_root: crate::pacs::UidRoot,
    pub institution_name: Option<String>,
    pub capacity: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub patient_id_from_commands: bool,
    /// The modality worklist SCP; `None` when exams take their context from commands alone.
    pub worklist: Option<crate::pacs::network::PacsPeer>,
}

/// Where frames come from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The source as configured, for status and logs.
    pub uri: String,
    pub spec: SourceSpec,
    /// How a recording is paced (`source.speed`).
    pub pacing: Pacing,
    /// Source seconds per wall-clock second: `source.speed` for recordings and the synthetic
    /// scanner, 1 for live capture (which cannot run faster).
    pub clock_speed: f64,
    pub layout: LayoutChoice,
}

/// The scanner presets (built in, and the site's file) and the layout `source.layout` fixes:
/// `None` for "auto", where each exam finds its panes on its first frame.
#[derive(Debug, Clone)]
pub struct LayoutChoice {
    pub presets: Presets,
    pub fixed: Option<Layout>,
}

/// A model's content hash as a site pins it: `sha256:` and 64 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentHash(String);

impl ContentHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for ContentHash {
    type Err = String;
    /// Accepts the digest with or without its "sha256:" prefix.
    fn from_str(h: &str) -> Result<Self, String> {
        let digest = h.strip_prefix("sha256:").unwrap_or(h);
        if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("'{h}': expected sha256: and 64 hexadecimal digits"));
        }
        Ok(Self(format!("sha256:{digest}")))
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    /// A model file, or "demo".
    pub path: String,
    pub sha256: Option<ContentHash>,
    /// "cpu" or "cuda[:N]" (checked; the device itself is opened with the model).
    pub device: String,
}

#[derive(Debug, Clone)]
pub struct Mqtt {
    pub broker: BrokerAddress,
    pub topic_root: String,
    /// `mqtt.client_id`, or `ceusd-<device.id>`.
    pub client_id: String,
    pub keep_alive: Duration,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Both or neither (checked).
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

#[derive(Debug, Clone)]
pub struct Exam {
    pub settings: ExamSettings,
    pub auto_start: bool,
    pub timing_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub frame_queue: usize,
    pub stall: Duration,
    pub inference_stall: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct Preview {
    /// Wall-clock time between previews.
    pub interval: Duration,
    pub width: u32,
    pub quality: u8,
}

/// A value the configuration cannot take: the field (`mqtt.keep_alive_s`) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field,
        reason: reason.into(),
    }
}

impl Config {
    /// Reads, applies `overrides`, and checks.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file = ConfigFile::parse(&text, path)?;
        file.apply(overrides);
        Self::checked(file, path)
    }

    /// Parses and checks TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Self::checked(ConfigFile::parse(text, path)?, path)
    }

    fn checked(file: ConfigFile, path: &Path) -> Result<Self, ConfigError> {
        Self::try_from(file).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            field: e.field.to_string(),
            reason: e.reason,
        })
    }
}

impl ConfigFile {
    /// Parses TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.source {
            self.source.uri = v.clone();
        }
        if let Some(v) = &o.broker {
            self.mqtt.broker = v.clone();
        }
        if let Some(v) = &o.device_id {
            self.device.id = v.clone();
        }
        if let Some(v) = &o.model {
            self.model.path = v.clone();
        }
        if let Some(v) = &o.state_dir {
            self.state.dir = v.clone();
        }
        if let Some(v) = o.speed {
            self.source.speed = v;
        }
    }
}

impl TryFrom<ConfigFile> for Config {
    type Error = FieldError;

    /// Checks every value a parser cannot (ranges, formats, files that must exist) and
    /// converts it, section by section in the file's order; the first field at fault is named.
    fn try_from(file: ConfigFile) -> Result<Self, FieldError> {
        if !is_topic_word(&file.device.id) {
            return Err(invalid(
                "device.id",
                format!(
                    "'{}': use 1 to 64 letters, digits, '-' or '_' (it becomes an MQTT topic level)",
                    file.device.id
                ),
            ));
        }
        Ok(Self {
            source: Source::try_from(&file.source)?,
            model: Model::try_from(&file.model)?,
            mqtt: Mqtt::checked(&file.mqtt, &file.device.id)?,
            exam: Exam::try_from(&file.exam)?,
            state: checked_state(file.state)?,
            pipeline: Pipeline::try_from(&file.pipeline)?,
            preview: checked_preview(&file.preview)?,
            pacs: file.pacs.as_ref().map(Pacs::try_from).transpose()?,
            device: file.device,
        })
    }
}

impl TryFrom<&PacsSection> for Pacs {
    type Error = FieldError;

    fn try_from(raw: &PacsSection) -> Result<Self, FieldError> {
        if raw.host.trim().is_empty() {
            return Err(invalid(
                "pacs.host",
                "empty: the PACS's host name or address",
            ));
        }
        if raw.port == 0 {
            return Err(invalid("pacs.port", "0: expected 1 to 65535"));
        }
        let ae_title = |field: &'static str, title: &str| {
            crate::pacs::network::check_ae_title(title)
                .map(|()| title.trim().to_string())
                .map_err(|reason| invalid(field, format!("'{title}': {reason}")))
        };
        let uid_root = raw
            .uid_root
            .parse::<crate::pacs::UidRoot>()
            .map_err(|e| invalid("pacs.uid_root", e.to_string()))?;
        let seconds = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(invalid(
                    field,
                    format!("{v}: expected a positive number of seconds"),
                ))
            }
        };
        let retry_min = seconds("pacs.retry_min_s", raw.retry_min_s)?;
        let retry_max = seconds("pacs.retry_max_s", raw.retry_max_s)?;
        if retry_max < retry_min {
            return Err(invalid(
                "pacs.retry_max_s",
                format!("{}: less than pacs.retry_min_s", raw.retry_max_s),
            ));
        }
        if raw.capacity == 0 {
            return Err(invalid("pacs.capacity", "0: at least one object must fit"));
        }
        let calling_ae_title = ae_title("pacs.calling_ae_title", &raw.calling_ae_title)?;
        let tls =
            match (
                &raw.tls_ca_file,
                &raw.tls_client_cert_file,
                &raw.tls_client_key_file,
            ) {
                (Some(ca), cert, key) => {
                    if cert.is_some() != key.is_some() {
                        return Err(invalid(
                            "pacs.tls_client_key_file",
                            "tls_client_cert_file and tls_client_key_file go together",
                        ));
                    }
                    Some(crate::pacs::network::TlsFiles {
                        ca_file: ca.clone(),
                        client_cert_file: cert.clone(),
                        client_key_file: key.clone(),
                    })
                }
                (None, None, None) => None,
                (None, _, _) => return Err(invalid(
                    "pacs.tls_ca_file",
                    "a client certificate needs DICOM TLS: name the CA of the PACS's certificate",
                )),
            };
        let timeout = seconds("pacs.timeout_s", raw.timeout_s)?;
        let worklist = match &raw.worklist {
            Some(w) => {
                if w.host.trim().is_empty() || w.port == 0 {
                    return Err(invalid(
                        "pacs.worklist.host",
                        "expected the worklist SCP's host and a port from 1 to 65535",
                    ));
                }
                Some(crate::pacs::network::PacsPeer {
                    host: w.host.trim().to_string(),
                    port: w.port,
                    called_ae_title: ae_title("pacs.worklist.called_ae_title", &w.called_ae_title)?,
                    calling_ae_title: calling_ae_title.clone(),
                    timeout,
                    tls: if w.tls {
                        Some(tls.clone().ok_or_else(|| {
                            invalid("pacs.worklist.tls", "DICOM TLS needs pacs.tls_ca_file")
                        })?)
                    } else {
                        None
                    },
                })
            }
            None => None,
        };
        Ok(Self {
            peer: crate::pacs::network::PacsPeer {
                host: raw.host.trim().to_string(),
                port: raw.port,
                called_ae_title: ae_title("pacs.called_ae_title", &raw.called_ae_title)?,
                calling_ae_title,
                timeout,
                tls,
            },
            patient_id_from_commands: raw.patient_id_from_commands,
            worklist,
            uid_root,
            institution_name: raw.institution_name.clone(),
            capacity: raw.capacity,
            retry_min,
            retry_max,
        })
    }
}

impl TryFrom<&SourceSection> for Source {
    type Error = FieldError;

    fn try_from(raw: &SourceSection) -> Result<Self, FieldError> {
        let spec: SourceSpec = raw.uri.parse().map_err(|e| invalid("source.uri", e))?;
        let speed = raw.speed;
        if !(speed.is_finite() && speed > 0.0 && speed <= 100.0) {
            return Err(invalid(
                "source.speed",
                format!("{speed}: expected more than 0 and at most 100"),
            ));
        }
        let presets = match &raw.layouts_file {
            None => Presets::default(),
            Some(p) => Presets::with_site_file(p)
                .map_err(|e| invalid("source.layouts_file", e.to_string()))?,
        };
        let fixed = match raw.layout.as_str() {
            "auto" => None,
            name => Some(
                presets
                    .get(name)
                    .map_err(|e| invalid("source.layout", e.to_string()))?
                    .layout,
            ),
        };
        Ok(Self {
            clock_speed: match spec {
                SourceSpec::V4l2(_) => 1.0,
                _ => speed,
            },
            uri: raw.uri.clone(),
            spec,
            // `speed` is positive and finite, as checked above.
            pacing: Pacing::RealTime { speed },
            layout: LayoutChoice { presets, fixed },
        })
    }
}

impl TryFrom<&ModelSection> for Model {
    type Error = FieldError;

    fn try_from(raw: &ModelSection) -> Result<Self, FieldError> {
        if raw.path.is_empty() {
            return Err(invalid(
                "model.path",
                "empty: give a model file or \"demo\"",
            ));
        }
        let sha256 = match &raw.sha256 {
            Some(h) => Some(h.parse().map_err(|e| invalid("model.sha256", e))?),
            None => None,
        };
        crate::model::parse_device(&raw.device)
            .map_err(|e| invalid("model.device", e.to_string()))?;
        Ok(Self {
            path: raw.path.clone(),
            sha256,
            device: raw.device.clone(),
        })
    }
}

impl Mqtt {
    /// `mqtt`: the address, topics, credentials and certificates, reconnection.
    fn checked(raw: &MqttSection, device_id: &str) -> Result<Self, FieldError> {
        let broker: BrokerAddress = raw.broker.parse().map_err(|e| invalid("mqtt.broker", e))?;
        if !raw
            .topic_root
            .split('/')
            .all(|level| !level.is_empty() && !level.contains(['+', '#']))
        {
            return Err(invalid(
                "mqtt.topic_root",
                format!(
                    "'{}': expected topic levels without wildcards or empty levels",
                    raw.topic_root
                ),
            ));
        }
        if let Some(id) = &raw.client_id {
            if id.is_empty() || id.len() > 128 {
                return Err(invalid("mqtt.client_id", "expected 1 to 128 characters"));
            }
        }
        if !(5..=3600).contains(&raw.keep_alive_s) {
            return Err(invalid(
                "mqtt.keep_alive_s",
                format!("{}: expected 5 to 3600 seconds", raw.keep_alive_s),
            ));
        }
        if raw.password_file.is_some() && raw.username.is_none() {
            return Err(invalid(
                "mqtt.password_file",
                "a password without mqtt.username",
            ));
        }
        for (field, file) in [
            ("mqtt.password_file", &raw.password_file),
            ("mqtt.ca_file", &raw.ca_file),
            ("mqtt.client_cert_file", &raw.client_cert_file),
            ("mqtt.client_key_file", &raw.client_key_file),
        ] {
            if let Some(f) = file {
                if !f.is_file() {
                    return Err(invalid(field, format!("{}: no such file", f.display())));
                }
            }
        }
        if raw.client_cert_file.is_some() != raw.client_key_file.is_some() {
            return Err(invalid(
                "mqtt.client_cert_file",
                "a client certificate needs its key (mqtt.client_key_file) and the other way round",
            ));
        }
        if !broker.tls && (raw.ca_file.is_some() || raw.client_cert_file.is_some()) {
            return Err(invalid(
                "mqtt.broker",
                "certificates are configured but the broker address is mqtt://; use mqtts://",
            ));
        }
        let (lo, hi) = (raw.reconnect_min_s, raw.reconnect_max_s);
        if !(lo.is_finite() && lo > 0.0) {
            return Err(invalid(
                "mqtt.reconnect_min_s",
                format!("{lo}: expected more than 0"),
            ));
        }
        if !(hi.is_finite() && hi >= lo && hi <= 600.0) {
            return Err(invalid(
                "mqtt.reconnect_max_s",
                format!("{hi}: expected from reconnect_min_s ({lo}) to 600"),
            ));
        }
        Ok(Self {
            broker,
            topic_root: raw.topic_root.clone(),
            client_id: raw
                .client_id
                .clone()
                .unwrap_or_else(|| format!("ceusd-{device_id}")),
            keep_alive: Duration::from_secs(raw.keep_alive_s),
            username: raw.username.clone(),
            password_file: raw.password_file.clone(),
            ca_file: raw.ca_file.clone(),
            client_cert_file: raw.client_cert_file.clone(),
            client_key_file: raw.client_key_file.clone(),
            reconnect_min: Duration::from_secs_f64(lo),
            reconnect_max: Duration::from_secs_f64(hi),
        })
    }
}

impl TryFrom<&ExamSection> for Exam {
    type Error = FieldError;

    fn try_from(raw: &ExamSection) -> Result<Self, FieldError> {
        if !(1..=64).contains(&raw.keep) {
            return Err(invalid(
                "exam.keep",
                format!("{}: expected 1 to 64", raw.keep),
            ));
        }
        if !(0.0..=60.0).contains(&raw.transit_s) {
            return Err(invalid(
                "exam.transit_s",
                format!("{}: expected 0 to 60 seconds", raw.transit_s),
            ));
        }
        if !(0.05..=10.0).contains(&raw.timing_interval_s) {
            return Err(invalid(
                "exam.timing_interval_s",
                format!("{}: expected 0.05 to 10 seconds", raw.timing_interval_s),
            ));
        }
        if !(60.0..=3600.0).contains(&raw.timeout_s) {
            return Err(invalid(
                "exam.timeout_s",
                format!("{}: expected 60 to 3600 seconds", raw.timeout_s),
            ));
        }
        let mut settings = ExamSettings {
            keep: raw.keep,
            use_recorded_injection: raw.use_recorded_injection,
            ..ExamSettings::default()
        };
        settings.arrival.transit_s = raw.transit_s;
        settings.boundaries.exam_timeout_s = raw.timeout_s;
        Ok(Self {
            settings,
            auto_start: raw.auto_start,
            timing_interval: Duration::from_secs_f64(raw.timing_interval_s),
        })
    }
}

fn checked_state(raw: StateSection) -> Result<StateSection, FieldError> {
    if raw.dir.as_os_str().is_empty() {
        return Err(invalid("state.dir", "empty"));
    }
    if !(10..=1_000_000).contains(&raw.outbox_capacity) {
        return Err(invalid(
            "state.outbox_capacity",
            format!("{}: expected 10 to 1000000 messages", raw.outbox_capacity),
        ));
    }
    Ok(raw)
}

impl TryFrom<&PipelineSection> for Pipeline {
    type Error = FieldError;

    fn try_from(raw: &PipelineSection) -> Result<Self, FieldError> {
        if !(1..=1024).contains(&raw.frame_queue) {
            return Err(invalid(
                "pipeline.frame_queue",
                format!("{}: expected 1 to 1024 frames", raw.frame_queue),
            ));
        }
        if !(1.0..=600.0).contains(&raw.stall_s) {
            return Err(invalid(
                "pipeline.stall_s",
                format!("{}: expected 1 to 600 seconds", raw.stall_s),
            ));
        }
        if !(1.0..=3600.0).contains(&raw.inference_stall_s) {
            return Err(invalid(
                "pipeline.inference_stall_s",
                format!("{}: expected 1 to 3600 seconds", raw.inference_stall_s),
            ));
        }
        Ok(Self {
            frame_queue: raw.frame_queue,
            stall: Duration::from_secs_f64(raw.stall_s),
            inference_stall: Duration::from_secs_f64(raw.inference_stall_s),
        })
    }
}

/// The preview's ranges are checked whether it is on or not: a site that turns it on later
/// must not find the file wrong then.
fn checked_preview(raw: &PreviewSection) -> Result<Option<Preview>, FieldError> {
    if !(0.1..=10.0).contains(&raw.fps) {
        return Err(invalid(
            "preview.fps",
            format!("{}: expected 0.1 to 10 frames per second", raw.fps),
        ));
    }
    if !(160..=1920).contains(&raw.width) {
        return Err(invalid(
            "preview.width",
            format!("{}: expected 160 to 1920 pixels", raw.width),
        ));
    }
    if !(1..=100).contains(&raw.quality) {
        return Err(invalid(
            "preview.quality",
            format!("{}: expected 1 to 100", raw.quality),
        ));
    }
    Ok(raw.enabled.then(|| Preview {
        interval: Duration::from_secs_f64(1.0 / raw.fps),
        width: raw.width,
        quality: raw.quality,
    }))
}

/// An id that is safe as one MQTT topic level and in file names.
pub fn is_topic_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[device]\nid = \"cart-1\"\n[source]\nuri = \"synthetic:pdac\"\nspeed = 4.0\n{extra}\n[model]\npath = \"demo\"\n"
        );
        Config::parse(&text, Path::new("t.toml"))
    }

    #[test]
    fn a_pacs_section_is_checked_field_by_field() {
        let pacs = |fields: &str| {
            let text = format!(
                "[device]\nid = \"cart-1\"\n[source]\nuri = \"synthetic:pdac\"\n[model]\npath = \"demo\"\n[pacs]\n{fields}\n"
            );
            Config::parse(&text, Path::new("t.toml"))
        };
        assert!(config("").unwrap().pacs.is_none());
        let c = pacs("host = \"pacs.example\"\ncalled_ae_title = \"ARCHIVE\"").unwrap();
        let p = c.pacs.unwrap();
        assert_eq!(p.peer.to_string(), "ARCHIVE@pacs.example:104");
        assert_eq!(p.peer.calling_ae_title, "CEUSD");
        assert_eq!(p.uid_root.to_string(), "2.25");
        assert_eq!(p.capacity, 200);
        assert_eq!(p.retry_min, Duration::from_secs(2));
        let field_of = |fields: &str| match pacs(fields) {
            Err(ConfigError::Invalid { field, reason, .. }) => format!("{field}: {reason}"),
            other => panic!("{fields}: {other:?}"),
        };
        let base = "host = \"pacs.example\"\ncalled_ae_title = \"ARCHIVE\"";
        assert!(field_of(&format!(
            "{base}\ncalling_ae_title = \"A-TITLE-OF-MORE-THAN-16\""
        ))
        .starts_with("pacs.calling_ae_title: 'A-TITLE-OF-MORE-THAN-16': 23 characters"));
        assert!(
            field_of("host = \"pacs.example\"\ncalled_ae_title = \"A\\\\B\"")
                .starts_with("pacs.called_ae_title:")
        );
        assert!(field_of(&format!("{base}\nuid_root = \"1.2.x\"")).starts_with("pacs.uid_root:"));
        assert!(
            field_of(&format!("{base}\nretry_min_s = 10.0\nretry_max_s = 1.0"))
                .starts_with("pacs.retry_max_s:")
        );
        assert!(field_of(&format!("{base}\ncapacity = 0")).starts_with("pacs.capacity:"));
        assert!(field_of("host = \" \"\ncalled_ae_title = \"A\"").starts_with("pacs.host:"));
        // A missing AE title is the parser's error, naming the field.
        match pacs("host = \"pacs.example\"") {
            Err(ConfigError::Parse { message, .. }) => {
                assert!(message.contains("called_ae_title"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_are_parsed_once_into_what_the_daemon_uses() {
        let c = config("").unwrap();
        assert!(matches!(c.source.spec, SourceSpec::Synthetic(_)));
        assert_eq!(c.source.pacing, Pacing::RealTime { speed: 4.0 });
        assert_eq!(c.source.clock_speed, 4.0);
        assert!(c.source.layout.fixed.is_none());
        assert_eq!(c.mqtt.broker.to_string(), "mqtt://127.0.0.1:1883");
        assert_eq!(c.mqtt.client_id, "ceusd-cart-1");
        assert_eq!(c.mqtt.keep_alive, Duration::from_secs(10));
        assert_eq!(c.exam.settings.keep, ExamSettings::default().keep);
        assert_eq!(
            c.exam.settings.boundaries.exam_timeout_s,
            crate::timing::PhaseBoundaries::default().exam_timeout_s
        );
        assert!(c.preview.is_none());

        let digest = "ab".repeat(32);
        let c = config(&format!(
            "layout = \"{}\"\n[model]\n",
            Presets::default().all()[0].name
        ));
        // `[model]` twice is a TOML error, named as such.
        assert!(matches!(c, Err(ConfigError::Parse { .. })));
        let text = format!(
            "[device]\nid = \"cart-1\"\n[source]\nuri = \"v4l2:/dev/video0\"\nspeed = 4.0\nlayout = \"{}\"\n[model]\npath = \"demo\"\nsha256 = \"{digest}\"\n[exam]\nkeep = 3\ntransit_s = 12.0\n[preview]\nenabled = true\nfps = 2.0\n",
            Presets::default().all()[0].name
        );
        let c = Config::parse(&text, Path::new("t.toml")).unwrap();
        // Live capture's clock runs at wall-clock speed whatever `speed` says.
        assert_eq!(c.source.clock_speed, 1.0);
        assert!(c.source.layout.fixed.is_some());
        assert_eq!(
            c.model.sha256.as_ref().map(ContentHash::as_str),
            Some(format!("sha256:{digest}").as_str())
        );
        assert_eq!(c.exam.settings.keep, 3);
        assert_eq!(c.exam.settings.arrival.transit_s, 12.0);
        assert_eq!(
            c.preview.map(|p| p.interval),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn a_bad_value_names_its_field() {
        for (extra, field) in [
            ("layout = \"no-such-scanner\"", "source.layout"),
            ("[exam]\ntimeout_s = 5.0", "exam.timeout_s"),
            ("[mqtt]\nbroker = \"mqtt://:0\"", "mqtt.broker"),
            ("[preview]\nquality = 0", "preview.quality"),
        ] {
            match config(extra) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
    }
}
