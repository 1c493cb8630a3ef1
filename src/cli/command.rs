//! The command line's grammar: the subcommands with their arguments, and how a usage error is
//! told.

use clap::{Parser, Subcommand};
use std::io::Write;

use super::{analyze, capture, check, demo, devices, eval, model, run, synth, train};

#[derive(Parser)]
#[command(
    name = "ceusd",
    version,
    about = "Contrast-enhanced ultrasound key-frame scoring (PDAC vs chronic pancreatitis)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Score one image or DICOM frame: P(PDAC), label, Grad-CAM heatmap.
    Analyze(analyze::AnalyzeArgs),
    /// Create, import and inspect model files.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// List video capture devices with their formats, sizes and frame rates.
    Devices(devices::DevicesArgs),
    /// Write a synthetic CEUS exam as a frame folder, with its ground truth beside it.
    Synth(synth::SynthArgs),
    /// Record a source to a frame folder (PNG frames + manifest.json) that `frames:DIR` replays.
    Capture(capture::CaptureArgs),
    /// The paper's statistics on a cohort: AUC with bootstrap CI, sensitivity and specificity,
    /// Youden threshold, McNemar against readers; Markdown, JSON and a ROC plot.
    Eval(eval::EvalArgs),
    /// Fine-tune a model on labeled cases (cohort CSV or PDAC/ and CP/ folders): head only
    /// (features cached) or the full network.
    Train(train::TrainArgs),
    /// The service: capture, exam timing, scoring, MQTT to the bedside (run by systemd).
    Run(run::RunArgs),
    /// Everything on this machine, no setup: embedded broker, synthetic scanner with a
    /// PDAC-like and a CP-like exam, the demo model, and a live view in the terminal.
    Demo(demo::DemoArgs),
    /// Checks an installation: configuration, model and hash, capture source, state
    /// directory, broker connection and permissions. Exit status 1 if any check fails.
    Check(check::CheckArgs),
}

/// The command line, or exit: help and version as clap prints them, a usage error as one
/// line (clap's message without the usage block) and exit status 2.
pub fn parse_arguments() -> Cli {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            let text = e.render().to_string();
            let said: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let _ = writeln!(std::io::stderr(), "{} (see --help)", said.join(" "));
            std::process::exit(2);
        }
    }
}
