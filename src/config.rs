//! The daemon's configuration: one TOML file (`/etc/ceusd/ceusd.toml`, documented field by
//! field in `systemd/ceusd.example.toml`), a few fields overridable by flags for one session.
//! Unknown keys and wrong types are refused by the parser with the field's name and line;
//! impossible values by `validate`, which names the field the same way (`mqtt.keep_alive_s`).

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::capture::spec::SourceSpec;

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
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

impl Config {
    /// Reads, applies `overrides`, and validates.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.apply(overrides);
        config.validate(path)?;
        Ok(config)
    }

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

    /// Checks every value a parser cannot: ranges, formats, files that must exist.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.check_device_source_model()
            .and_then(|()| self.check_mqtt())
            .and_then(|()| self.check_limits())
            .map_err(|(field, reason)| ConfigError::Invalid {
                path: path.to_path_buf(),
                field: field.to_string(),
                reason,
            })
    }

    /// `device`, `source` and `model`; an error names the field.
    fn check_device_source_model(&self) -> Result<(), (&'static str, String)> {
        if !is_topic_word(&self.device.id) {
            return Err(("device.id",
                format!(
                    "'{}': use 1 to 64 letters, digits, '-' or '_' (it becomes an MQTT topic level)",
                    self.device.id
                ),
            ));
        }
        self.source_spec().map_err(|e| ("source.uri", e))?;
        if !(self.source.speed.is_finite() && self.source.speed > 0.0 && self.source.speed <= 100.0)
        {
            return Err((
                "source.speed",
                format!(
                    "{}: expected more than 0 and at most 100",
                    self.source.speed
                ),
            ));
        }
        self.layout_choice()?;
        if self.model.path.is_empty() {
            return Err(("model.path", "empty: give a model file or \"demo\"".into()));
        }
        if let Some(h) = &self.model.sha256 {
            let digest = h.strip_prefix("sha256:").unwrap_or(h);
            if digest.len() != 64 || !digest.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err((
                    "model.sha256",
                    format!("'{h}': expected sha256: and 64 hexadecimal digits"),
                ));
            }
        }
        crate::model::parse_device(&self.model.device)
            .map_err(|e| ("model.device", e.to_string()))?;
        Ok(())
    }

    /// `mqtt`: the address, topics, credentials and certificates, reconnection.
    fn check_mqtt(&self) -> Result<(), (&'static str, String)> {
        let broker = self.broker().map_err(|e| ("mqtt.broker", e))?;
        if !self
            .mqtt
            .topic_root
            .split('/')
            .all(|level| !level.is_empty() && !level.contains(['+', '#']))
        {
            return Err((
                "mqtt.topic_root",
                format!(
                    "'{}': expected topic levels without wildcards or empty levels",
                    self.mqtt.topic_root
                ),
            ));
        }
        if let Some(id) = &self.mqtt.client_id {
            if id.is_empty() || id.len() > 128 {
                return Err(("mqtt.client_id", "expected 1 to 128 characters".into()));
            }
        }
        if !(5..=3600).contains(&self.mqtt.keep_alive_s) {
            return Err((
                "mqtt.keep_alive_s",
                format!("{}: expected 5 to 3600 seconds", self.mqtt.keep_alive_s),
            ));
        }
        if self.mqtt.password_file.is_some() && self.mqtt.username.is_none() {
            return Err((
                "mqtt.password_file",
                "a password without mqtt.username".into(),
            ));
        }
        for (field, file) in [
            ("mqtt.password_file", &self.mqtt.password_file),
            ("mqtt.ca_file", &self.mqtt.ca_file),
            ("mqtt.client_cert_file", &self.mqtt.client_cert_file),
            ("mqtt.client_key_file", &self.mqtt.client_key_file),
        ] {
            if let Some(f) = file {
                if !f.is_file() {
                    return Err((field, format!("{}: no such file", f.display())));
                }
            }
        }
        if self.mqtt.client_cert_file.is_some() != self.mqtt.client_key_file.is_some() {
            return Err((
                "mqtt.client_cert_file",
                "a client certificate needs its key (mqtt.client_key_file) and the other way round"
                    .into(),
            ));
        }
        if !broker.tls && (self.mqtt.ca_file.is_some() || self.mqtt.client_cert_file.is_some()) {
            return Err((
                "mqtt.broker",
                "certificates are configured but the broker address is mqtt://; use mqtts://"
                    .into(),
            ));
        }
        let (lo, hi) = (self.mqtt.reconnect_min_s, self.mqtt.reconnect_max_s);
        if !(lo.is_finite() && lo > 0.0) {
            return Err((
                "mqtt.reconnect_min_s",
                format!("{lo}: expected more than 0"),
            ));
        }
        if !(hi.is_finite() && hi >= lo && hi <= 600.0) {
            return Err((
                "mqtt.reconnect_max_s",
                format!("{hi}: expected from reconnect_min_s ({lo}) to 600"),
            ));
        }
        Ok(())
    }

    /// The ranges of `exam`, `state`, `pipeline` and `preview`.
    fn check_limits(&self) -> Result<(), (&'static str, String)> {
        if !(1..=64).contains(&self.exam.keep) {
            return Err(("exam.keep", format!("{}: expected 1 to 64", self.exam.keep)));
        }
        if !(0.0..=60.0).contains(&self.exam.transit_s) {
            return Err((
                "exam.transit_s",
                format!("{}: expected 0 to 60 seconds", self.exam.transit_s),
            ));
        }
        if !(0.05..=10.0).contains(&self.exam.timing_interval_s) {
            return Err((
                "exam.timing_interval_s",
                format!(
                    "{}: expected 0.05 to 10 seconds",
                    self.exam.timing_interval_s
                ),
            ));
        }
        if !(60.0..=3600.0).contains(&self.exam.timeout_s) {
            return Err((
                "exam.timeout_s",
                format!("{}: expected 60 to 3600 seconds", self.exam.timeout_s),
            ));
        }
        if self.state.dir.as_os_str().is_empty() {
            return Err(("state.dir", "empty".into()));
        }
        if !(10..=1_000_000).contains(&self.state.outbox_capacity) {
            return Err((
                "state.outbox_capacity",
                format!(
                    "{}: expected 10 to 1000000 messages",
                    self.state.outbox_capacity
                ),
            ));
        }
        if !(1..=1024).contains(&self.pipeline.frame_queue) {
            return Err((
                "pipeline.frame_queue",
                format!("{}: expected 1 to 1024 frames", self.pipeline.frame_queue),
            ));
        }
        if !(1.0..=600.0).contains(&self.pipeline.stall_s) {
            return Err((
                "pipeline.stall_s",
                format!("{}: expected 1 to 600 seconds", self.pipeline.stall_s),
            ));
        }
        if !(1.0..=3600.0).contains(&self.pipeline.inference_stall_s) {
            return Err((
                "pipeline.inference_stall_s",
                format!(
                    "{}: expected 1 to 3600 seconds",
                    self.pipeline.inference_stall_s
                ),
            ));
        }
        if !(0.1..=10.0).contains(&self.preview.fps) {
            return Err((
                "preview.fps",
                format!("{}: expected 0.1 to 10 frames per second", self.preview.fps),
            ));
        }
        if !(160..=1920).contains(&self.preview.width) {
            return Err((
                "preview.width",
                format!("{}: expected 160 to 1920 pixels", self.preview.width),
            ));
        }
        if !(1..=100).contains(&self.preview.quality) {
            return Err((
                "preview.quality",
                format!("{}: expected 1 to 100", self.preview.quality),
            ));
        }
        Ok(())
    }

    pub fn source_spec(&self) -> Result<SourceSpec, String> {
        self.source.uri.parse()
    }

    pub fn broker(&self) -> Result<BrokerAddress, String> {
        self.mqtt.broker.parse()
    }

    pub fn presets(&self) -> Result<crate::layout::Presets, String> {
        match &self.source.layouts_file {
            None => Ok(crate::layout::Presets::default()),
            Some(p) => crate::layout::Presets::with_site_file(p).map_err(|e| e.to_string()),
        }
    }

    /// The scanner presets (built in, and the site's file) and the layout `source.layout`
    /// fixes: `None` for "auto", where each exam finds its panes on its first frame. An error
    /// names the field at fault.
    pub fn layout_choice(
        &self,
    ) -> Result<(crate::layout::Presets, Option<crate::layout::Layout>), (&'static str, String)>
    {
        let presets = self.presets().map_err(|e| ("source.layouts_file", e))?;
        if self.source.layout == "auto" {
            return Ok((presets, None));
        }
        let preset = presets
            .get(&self.source.layout)
            .map_err(|e| ("source.layout", e.to_string()))?;
        let layout = preset.layout;
        Ok((presets, Some(layout)))
    }

    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("ceusd-{}", self.device.id))
    }
}

/// An id that is safe as one MQTT topic level and in file names.
pub fn is_topic_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
