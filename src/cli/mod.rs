//! The command line: its grammar (`command`), its subcommands (one module each), and what they
//! share: the one-line error, logging, model loading, progress bars and the overriding flags.
//! The subcommands import what they share from here; only `command` and `main` name the
//! subcommands, so no import runs back from a subcommand to a file that imports it.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

use ceusd::model::file::StoredType;
use ceusd::model::DlrModel;

pub mod analyze;
pub mod capture;
pub mod check;
pub mod command;
pub mod demo;
pub mod devices;
pub mod dicom_out;
pub mod eval;
pub mod model;
pub mod run;
pub mod synth;
pub mod train;

/// The target of the binary's own log lines, whichever file under `src/cli/` logs them: the
/// crate's name, as `RUST_LOG` filters and the log's readers know it (the library's lines are
/// `ceusd::<module>`).
pub const LOG_TARGET: &str = "ceusd";

/// Flags that override the configuration file for one session.
#[derive(Args)]
pub struct OverrideArgs {
    /// Frame source, e.g. v4l2:/dev/video0 or synthetic:pdac,cp?rounds=0.
    #[arg(long)]
    source: Option<String>,
    /// MQTT broker, mqtt://host:port or mqtts://host:port.
    #[arg(long)]
    broker: Option<String>,
    #[arg(long)]
    device_id: Option<String>,
    /// Model file (GGUF) or "demo".
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Replays and synthetic sources: time runs N times faster.
    #[arg(long)]
    speed: Option<f64>,
}

impl OverrideArgs {
    pub fn overrides(&self) -> ceusd::config::Overrides {
        ceusd::config::Overrides {
            source: self.source.clone(),
            broker: self.broker.clone(),
            device_id: self.device_id.clone(),
            model: self.model.clone(),
            state_dir: self.state_dir.clone(),
            speed: self.speed,
        }
    }
}

/// The error and its causes on one line, each said once: a cause whose text the line
/// already holds (many error types repeat their source in their own message) is left out.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Logs to stderr; under systemd (journald on stderr) each line carries its priority as
/// `<N>` and no timestamp, which the journal adds itself.
pub fn init_logging(live_view: bool) {
    let mut builder =
        // The embedded demo broker logs every packet; only its warnings matter here.
        env_logger::Builder::from_env(
            env_logger::Env::default().default_filter_or("info,rumqttd=off,tracing=off"),
        );
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|buf, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{priority}>{}", record.args())
        });
    }
    if live_view {
        // The demo's live view prints log lines above its fixed lines.
        builder.target(env_logger::Target::Pipe(Box::new(
            ceusd::demo::view::LogRoute::default(),
        )));
    }
    builder.init();
}

/// A progress bar on stderr; hidden when stderr is not a terminal (journald, CI logs).
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} [{elapsed_precise}, {eta} left]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(what.to_string());
    bar
}

/// A model file, or the built-in demo model for "demo".
pub fn load_model(arg: &str, hash: Option<&str>, device: &candle_core::Device) -> Result<DlrModel> {
    ceusd::daemon::load_model_from(arg, hash, device).context("cannot load the model")
}

/// The stored tensor type a `--dtype` flag names.
pub fn stored_type(s: &str) -> Result<StoredType> {
    match s {
        "f32" => Ok(StoredType::F32),
        "f16" => Ok(StoredType::F16),
        other => bail!("--dtype '{other}': expected f32 or f16"),
    }
}
