//! The `ceusd` command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};

use ceusd::analyze::{analyze, AnalyzeRequest};
use ceusd::capture::dicom_write::{write_cine, CineInfo};
use ceusd::capture::record::{record, RecordLimit};
use ceusd::capture::source::{Pacing, SourceSpec};
use ceusd::capture::synthetic::{parse_spec, LesionKind, SyntheticScanner};
use ceusd::model::file::{read_model, write_model, StoredType};
use ceusd::model::import::{import_checkpoint, ImportOptions};
use ceusd::model::init::{seeded_metadata, seeded_tensors};
use ceusd::model::{parse_device, DlrModel, HeadActivation, ResizeFilter};
use ceusd::roi::Roi;

/// Seed of the built-in untrained model used when `analyze` is given no `--model`.
const BUILTIN_SEED: u64 = 7;

#[derive(Parser)]
#[command(
    name = "ceusd",
    version,
    about = "Contrast-enhanced ultrasound key-frame scoring (PDAC vs chronic pancreatitis)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score one image or DICOM frame: P(PDAC), label, Grad-CAM heatmap.
    Analyze(AnalyzeArgs),
    /// Create, import and inspect model files.
    #[command(subcommand)]
    Model(ModelCommand),
    /// List video capture devices with their formats, sizes and frame rates.
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// Write a synthetic CEUS exam as a frame folder, with its ground truth beside it.
    Synth(SynthArgs),
    /// Record a source to a frame folder (PNG frames + manifest.json) that `frames:DIR` replays.
    Capture(CaptureArgs),
    /// The paper's statistics on a cohort: AUC with bootstrap CI, sensitivity and specificity,
    /// Youden threshold, McNemar against readers; Markdown, JSON and a ROC plot.
    Eval(EvalArgs),
    /// Fine-tune a model on labeled cases (cohort CSV or PDAC/ and CP/ folders): head only
    /// (features cached) or the full network.
    Train(TrainArgs),
    /// The service: capture, exam timing, scoring, MQTT to the bedside (run by systemd).
    Run(RunArgs),
    /// Everything on this machine, no setup: embedded broker, synthetic scanner with a
    /// PDAC-like and a CP-like exam, the demo model, and a live view in the terminal.
    Demo(DemoArgs),
    /// Checks an installation: configuration, model and hash, capture source, state
    /// directory, broker connection and permissions. Exit status 1 if any check fails.
    Check(CheckArgs),
}

/// Flags that override the configuration file for one session.
#[derive(Args)]
struct OverrideArgs {
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
    fn overrides(&self) -> ceusd::config::Overrides {
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

#[derive(Args)]
struct RunArgs {
    /// The configuration file (see systemd/ceusd.example.toml).
    #[arg(long, default_value = "/etc/ceusd/ceusd.toml")]
    config: PathBuf,
    #[command(flatten)]
    overrides: OverrideArgs,
}

#[derive(Args)]
struct CheckArgs {
    #[arg(long, default_value = "/etc/ceusd/ceusd.toml")]
    config: PathBuf,
    #[command(flatten)]
    overrides: OverrideArgs,
    /// How long to wait for a frame and for the broker.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Run only these checks after the configuration's (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(ceusd::check::CHECKS))]
    only: Vec<String>,
}

#[derive(Args)]
struct DemoArgs {
    /// Time runs N times faster than a real exam.
    #[arg(long, default_value_t = 4.0)]
    speed: f64,
    /// Use this broker instead of the embedded one.
    #[arg(long)]
    broker: Option<String>,
    /// Port of the embedded broker (default 1883, or a free port when it is taken).
    #[arg(long)]
    port: Option<u16>,
    /// Stop after N exams (alternating PDAC-like and CP-like); without it, exams go on until
    /// Ctrl-C.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    exams: Option<u32>,
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Log lines instead of the live view.
    #[arg(long)]
    no_view: bool,
    /// Frame size of the synthetic scanner, WxH.
    #[arg(long, default_value = "1280x720")]
    size: String,
    /// Frame rate of the synthetic scanner.
    #[arg(long, default_value_t = 15.0)]
    fps: f64,
    /// Port of the bedside display's page (default 8080, or a free port when it is taken).
    #[arg(long)]
    web_port: Option<u16>,
    /// Port of the embedded broker's MQTT-over-WebSockets listener, for the page (default
    /// 9001, or a free port when it is taken).
    #[arg(long)]
    ws_port: Option<u16>,
    /// Serve no display page (and open no WebSockets listener).
    #[arg(long)]
    no_web: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// The model to start from (GGUF, or "demo").
    #[arg(long)]
    model: String,
    /// Cohort CSV (image, label[, roi, frame, cohort, admission_date, case]) or a folder with
    /// one subfolder per class (PDAC/, CP/).
    #[arg(long)]
    data: PathBuf,
    /// The new model file.
    #[arg(long)]
    out: PathBuf,
    /// head (backbone frozen, features cached once) or full (backbone unfrozen).
    #[arg(long, default_value = "head")]
    mode: ceusd::train::TrainMode,
    /// Validation cases: date:YYYY-MM-DD (admitted on or after), cohort:NAME, or fraction:F.
    #[arg(long, default_value = "fraction:0.2")]
    split: ceusd::train::data::Split,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// At most this many epochs (default: 200 head, 30 full).
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many epochs without a better validation AUC (default: 20 head, 5 full).
    #[arg(long)]
    patience: Option<usize>,
    /// Batch size (default: 32 head, 8 full).
    #[arg(long)]
    batch: Option<usize>,
    /// Learning rate (default: 1e-3 head, 1e-4 full; the head gets 10x in full mode).
    #[arg(long)]
    lr: Option<f64>,
    /// Head mode: augmented views per training case, cached once (the first is the plain ROI).
    #[arg(long, default_value_t = 4)]
    views: usize,
    /// Name of the new model.
    #[arg(long)]
    name: String,
    /// What the cases are (cohort, scanners, dates), recorded in the model's provenance.
    #[arg(long)]
    describe_data: String,
    /// Intended-use statement (default: the base model's).
    #[arg(long)]
    intended_use: Option<String>,
    /// Stored tensor type: f32 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Write the per-epoch history (loss, validation AUC) as JSON here.
    #[arg(long)]
    history: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    /// Model file (GGUF), or "demo", that scores the cohort's images.
    #[arg(long, requires = "data", conflicts_with = "scores")]
    model: Option<PathBuf>,
    /// Refuse the model unless its content hash is this (sha256:…).
    #[arg(long)]
    model_hash: Option<String>,
    /// Cohort CSV: image, label[, roi, frame, cohort, admission_date, case, reader…].
    #[arg(long, requires = "model")]
    data: Option<PathBuf>,
    /// Scores CSV (score, label[, cohort, case, reader…]) produced elsewhere: no model is run.
    #[arg(long, required_unless_present = "data")]
    scores: Option<PathBuf>,
    /// Folder for report.md, report.json, roc.png (and scores.csv).
    #[arg(long, default_value = "eval-report")]
    out: PathBuf,
    /// Decision threshold on P(positive) (default: the model's, or 0.5 for --scores).
    #[arg(long)]
    threshold: Option<f64>,
    /// Positive and negative class names for --scores.
    #[arg(long, default_value = "PDAC,CP")]
    classes: String,
    #[arg(long, default_value_t = 2000)]
    bootstrap: usize,
    #[arg(long, default_value_t = 20221)]
    seed: u64,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SynthArgs {
    /// pdac or cp.
    #[arg(long)]
    kind: LesionKind,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Seconds of exam.
    #[arg(long, default_value_t = 120.0)]
    duration: f64,
    /// Frame size WxH.
    #[arg(long, default_value = "1280x720")]
    size: String,
    #[arg(long, default_value_t = 15.0)]
    fps: f64,
    /// A new or empty folder (frames + manifest.json), or a file ending in .dcm (a DICOM
    /// ultrasound cine, JPEG baseline).
    #[arg(long)]
    out: PathBuf,
    /// DICOM only: leave out Contrast/Bolus Start Time, as many scanners do.
    #[arg(long)]
    omit_injection_tag: bool,
}

#[derive(Args)]
struct CaptureArgs {
    /// v4l2:/dev/videoN[?format=..&size=WxH&fps=N], dicom:FILE, frames:DIR or synthetic:pdac|cp[?seed=N..].
    #[arg(long)]
    source: SourceSpec,
    /// A new or empty folder.
    #[arg(long)]
    out: PathBuf,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds of recorded time.
    #[arg(long)]
    seconds: Option<f64>,
    /// Replay speed for recorded sources (1 = real time); without it, as fast as possible.
    #[arg(long)]
    speed: Option<f64>,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// PNG, JPEG or DICOM file; or a cine: a multi-frame DICOM without --frame, a frame
    /// folder, or a source (dicom:FILE, frames:DIR, synthetic:pdac?seed=N).
    file: PathBuf,
    /// Region of interest on the frame: x,y,w,h in pixels (default: the whole frame). On a
    /// cine it is required, on the B-mode pane (mapped to the CEUS pane) or on the CEUS pane.
    /// (Values that start with '-' reach the ROI's own check, which refuses them.)
    #[arg(long, allow_hyphen_values = true)]
    roi: Option<Roi>,
    /// Frame of a multi-frame DICOM, from 0 (default 0; without it a cine is analysed whole).
    #[arg(long)]
    frame: Option<u32>,
    /// Cine: the operator's injection mark, seconds from the first frame (overrides the DICOM
    /// injection time and arrival detection).
    #[arg(long)]
    inject_at: Option<f64>,
    /// Cine: transit delay from injection to arrival in the pancreas, for arrival detection.
    #[arg(long, default_value_t = 15.0)]
    transit: f64,
    /// Cine: frames kept and scored from the key-frame window.
    #[arg(long, default_value_t = 8)]
    keep: usize,
    /// Cine: layout preset name (default: detect the panes, then the preset for the size).
    #[arg(long)]
    layout: Option<String>,
    /// Cine: a TOML file of site layout presets.
    #[arg(long)]
    layouts: Option<PathBuf>,
    /// Cine: ignore the injection time recorded with the source (DICOM tag, manifest,
    /// synthetic script) and detect contrast arrival instead.
    #[arg(long)]
    ignore_recorded_injection: bool,
    /// Model file (GGUF), or "demo" for the built-in demo model (synthetic data only). Without
    /// it, a built-in UNTRAINED model is used and says so.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Refuse the model unless its content hash is this (sha256:…).
    #[arg(long)]
    model_hash: Option<String>,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Write the Grad-CAM overlay of the ROI to this PNG.
    #[arg(long)]
    heatmap: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Import a PyTorch (.pth/.pt) or safetensors state dict of a ResNet-50 + DLR head.
    Import(ImportArgs),
    /// Show a model file's metadata, parameter count, tensor types and hash.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Re-run the demo model's recipe: synthetic exams, head-only training from the seeded
    /// backbone; writes head.safetensors and manifest.json (what the binary embeds).
    BuildDemo {
        #[arg(long, default_value = "models/demo")]
        out_dir: PathBuf,
        /// Also write the assembled model as a GGUF file.
        #[arg(long)]
        model_out: Option<PathBuf>,
    },
    /// Write the built-in demo model (synthetic data only, not for clinical use) to a file.
    ExportDemo {
        #[arg(long)]
        out: PathBuf,
    },
    /// Fold every BatchNorm into its convolution and store the weights as int8 (one scale per
    /// output channel; activations quantized at run time, or with --calibrate at fixed
    /// calibrated scales) or f16.
    Quantize {
        /// A torchvision-format model file (from `model import`, `init` or `export-demo`).
        input: PathBuf,
        /// q8 or f16.
        #[arg(long)]
        to: ceusd::model::convert::Target,
        #[arg(long)]
        out: PathBuf,
        /// q8 only: a folder of calibration images (lesion ROIs as the model sees them; PNG,
        /// JPEG or DICOM). Each int8 layer then gets one fixed input scale, stored in the file
        /// (format folded-int8-static), instead of scales found at run time.
        #[arg(long, value_name = "DIR")]
        calibrate: Option<PathBuf>,
        /// With --calibrate: each layer clips at this percentile of its input values.
        #[arg(long, default_value_t = ceusd::model::convert::DEFAULT_PERCENTILE, requires = "calibrate")]
        percentile: f64,
        /// Print what was done to every tensor.
        #[arg(long)]
        verbose: bool,
    },
    /// Write a seeded random model (marked untrained) for tests and benchmarks.
    Init {
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 3)]
        input_channels: u32,
        /// Stored tensor type: f32 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
}

#[derive(Args)]
struct ImportArgs {
    checkpoint: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Must match conv1.weight (default: taken from it).
    #[arg(long)]
    input_channels: Option<u32>,
    /// Per-channel mean of pixel/255, comma separated (default for 3 channels: ImageNet's).
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// Class names in the order of the last layer's outputs.
    #[arg(long, value_delimiter = ',', default_value = "CP,PDAC")]
    classes: Vec<String>,
    #[arg(long, default_value = "PDAC")]
    positive_class: String,
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// none or relu (required where the head layout does not tell).
    #[arg(long)]
    head_activation: Option<HeadActivation>,
    #[arg(long, default_value = "bilinear")]
    resize_filter: ResizeFilter,
    #[arg(long)]
    name: Option<String>,
    /// What the weights were trained on, in words (cohort, scanners, dates).
    #[arg(long, default_value = "not stated")]
    training_data: String,
    #[arg(long, default_value = "research use only; not for clinical use")]
    intended_use: String,
    /// Stored tensor type: f32 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// The embedded demo model as `model inspect` shows a file: written to a scratch file exactly
/// as `model export-demo` would write it, read back, and the scratch file removed.
fn inspect_demo_model() -> Result<ceusd::model::file::ModelFile> {
    let scratch =
        std::env::temp_dir().join(format!("ceusd-inspect-demo-{}.gguf", std::process::id()));
    let written =
        ceusd::train::demo::write_demo_model(&scratch).and_then(|_| read_model(&scratch, None));
    let _ = std::fs::remove_file(&scratch);
    let mut m = written?;
    m.path = PathBuf::from("demo (the embedded demo model)");
    Ok(m)
}

fn stored_type(s: &str) -> Result<StoredType> {
    match s {
        "f32" => Ok(StoredType::F32),
        "f16" => Ok(StoredType::F16),
        other => bail!("--dtype '{other}': expected f32 or f16"),
    }
}

fn main() {
    // A library's error carries a backtrace when RUST_BACKTRACE is set (it is in many shells
    // and CI images); a user's error is one line. Panics keep theirs.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = parse_arguments();
    init_logging(matches!(cli.command, Command::Demo(_)));
    if let Err(e) = run(cli) {
        log::error!("{}", one_line(&e));
        std::process::exit(1);
    }
}

/// The command line, or exit: help and version as clap prints them, a usage error as one
/// line (clap's message without the usage block) and exit status 2.
fn parse_arguments() -> Cli {
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

/// The error and its causes on one line, each said once: a cause whose text the line
/// already holds (many error types repeat their source in their own message) is left out.
fn one_line(e: &anyhow::Error) -> String {
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

fn run_eval(a: EvalArgs, out: &mut impl Write) -> Result<()> {
    use ceusd::eval::cohort::{read_cohort, ClassNames, CohortKind};
    use ceusd::eval::{evaluate, score_cohort, scores_from_file, write_outputs, EvalSettings};
    if a.bootstrap < 100 {
        bail!("--bootstrap {}: use at least 100 resamples", a.bootstrap);
    }
    if let Some(t) = a.threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold {t}: expected 0..1");
        }
    }
    let (cohort, scored, model, classes, threshold) = match (&a.model, &a.data, &a.scores) {
        (Some(model_path), Some(data), None) => {
            let device = parse_device(&a.device)?;
            let model = load_model(
                &model_path.to_string_lossy(),
                a.model_hash.as_deref(),
                &device,
            )?;
            let meta = &model.metadata;
            let classes = ClassNames::of_model(meta);
            let cohort = read_cohort(data, CohortKind::Images, &classes)?;
            let bar = progress_bar(cohort.cases.len() as u64, "scoring");
            let scored = score_cohort(&model, &cohort, |done, _| bar.set_position(done as u64))?;
            bar.finish_and_clear();
            let threshold = a.threshold.unwrap_or(meta.threshold as f64);
            (
                cohort,
                scored,
                Some(model.identity.clone()),
                classes,
                threshold,
            )
        }
        (None, None, Some(scores)) => {
            let (positive, negative) = a
                .classes
                .split_once(',')
                .context("--classes: expected POSITIVE,NEGATIVE")?;
            let classes = ClassNames {
                positive: positive.trim().to_string(),
                negative: negative.trim().to_string(),
            };
            let cohort = read_cohort(scores, CohortKind::Scores, &classes)?;
            let scored = scores_from_file(&cohort);
            (cohort, scored, None, classes, a.threshold.unwrap_or(0.5))
        }
        _ => bail!("give either --model and --data, or --scores"),
    };
    let report = evaluate(
        cohort.path.clone(),
        model,
        &cohort.readers,
        &scored,
        EvalSettings {
            threshold,
            bootstrap_resamples: a.bootstrap,
            bootstrap_seed: a.seed,
            positive_class: classes.positive,
            negative_class: classes.negative,
        },
    );
    let written = write_outputs(&report, &scored, &cohort.readers, &a.out)?;
    for w in &report.warnings {
        log::warn!("{w}");
    }
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", ceusd::eval::report::markdown(&report))?;
    }
    log::info!(
        "wrote {}, {}, {}{}",
        written.report_markdown.display(),
        written.report_json.display(),
        written.roc_png.display(),
        written
            .scores_csv
            .map(|p| format!(", {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// A progress bar on stderr; hidden when stderr is not a terminal (journald, CI logs).
fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
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
fn load_model(arg: &str, hash: Option<&str>, device: &candle_core::Device) -> Result<DlrModel> {
    ceusd::daemon::load_model_from(arg, hash, device).context("cannot load the model")
}

fn run_train(a: TrainArgs, out: &mut impl Write) -> Result<()> {
    use ceusd::eval::cohort::ClassNames;
    use ceusd::train::{data::load_cases, train, Progress, TrainConfig};
    let stored = stored_type(&a.dtype)?;
    let (meta, tensors, identity) = if a.model == "demo" {
        let (m, t, hash) = ceusd::train::demo::demo_tensors()?;
        let identity = ceusd::model::ModelIdentity::of(&m, hash, None);
        (m, t, identity)
    } else {
        let path = std::path::Path::new(&a.model);
        let file = read_model(path, None).with_context(|| format!("loading model {}", a.model))?;
        let identity = ceusd::model::ModelIdentity::of(
            &file.metadata,
            file.content_hash.clone(),
            Some(path.to_path_buf()),
        );
        (file.metadata, file.tensors, identity)
    };
    let classes = ClassNames::of_model(&meta);
    let bar = progress_bar(0, "reading cases");
    let cases = load_cases(&a.data, &classes, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let mut cfg = TrainConfig::new(a.mode, &a.name, &a.describe_data);
    cfg.split = a.split;
    cfg.seed = a.seed;
    cfg.views = a.views;
    cfg.intended_use = a.intended_use;
    if let Some(v) = a.epochs {
        cfg.max_epochs = v;
    }
    if let Some(v) = a.patience {
        cfg.patience = v;
    }
    if let Some(v) = a.batch {
        cfg.batch_size = v;
    }
    if let Some(v) = a.lr {
        cfg.learning_rate = v;
    }
    let bar = progress_bar(0, "training");
    let outcome = train(&meta, tensors, &identity, &cases, &cfg, |p| match p {
        Progress::Images { done, total } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        Progress::Epoch(e) => {
            bar.set_message(format!(
                "epoch {} loss {:.4} val loss {:.4} val AUC {:.3}",
                e.epoch, e.train_loss, e.validation_loss, e.validation_auc
            ));
            log::debug!("{e:?}");
        }
    })?;
    bar.finish_and_clear();
    let hash = write_model(&a.out, &outcome.metadata, outcome.tensors, stored)?;
    if let Some(path) = &a.history {
        std::fs::write(path, serde_json::to_string_pretty(&outcome.history)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    writeln!(
        out,
        "wrote {} {hash}\n{} training and {} validation cases; best validation AUC {:.4} at epoch {} of {}",
        a.out.display(),
        outcome.training_cases,
        outcome.validation_cases,
        outcome.best.validation_auc,
        outcome.best.epoch,
        outcome.history.len()
    )?;
    Ok(())
}

/// The source to analyse as a cine, if `file` is one.
fn cine_source(file: &std::path::Path, frame: Option<u32>) -> Result<Option<SourceSpec>> {
    let text = file.to_string_lossy();
    if let Some((scheme, _)) = text.split_once(':') {
        let looks_like_a_kind = !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric())
            && !file.exists();
        if looks_like_a_kind && !["dicom", "frames", "synthetic"].contains(&scheme) {
            // Neither a file nor a source analyze can replay: say which kinds there are.
            text.parse::<SourceSpec>().map_err(anyhow::Error::msg)?;
            bail!(
                "{text}: analyze replays dicom:FILE, frames:DIR and synthetic:SPEC sources, or \
                 reads an image or DICOM file; a capture card (v4l2:) is recorded first with \
                 `ceusd capture`"
            );
        }
        if ["dicom", "frames", "synthetic"].contains(&scheme) {
            if frame.is_some() {
                bail!("--frame applies to one image, not to the source {text}");
            }
            return Ok(Some(
                text.parse::<SourceSpec>().map_err(anyhow::Error::msg)?,
            ));
        }
    }
    if file.is_dir() {
        return Ok(frame
            .is_none()
            .then(|| SourceSpec::Frames(file.to_path_buf())));
    }
    if frame.is_none()
        && file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
    {
        let loaded = ceusd::capture::load_frame(file, 0)?;
        if loaded.frames_in_file > 1 {
            return Ok(Some(SourceSpec::Dicom(file.to_path_buf())));
        }
    }
    Ok(None)
}

/// `analyze` on a cine: the whole timing path offline.
fn run_cine(
    a: &AnalyzeArgs,
    spec: SourceSpec,
    model: &DlrModel,
    out: &mut impl Write,
) -> Result<()> {
    use ceusd::exam::{run_offline, ExamSettings, InjectionHint, TimelineEvent};
    let roi = a
        .roi
        .context("a cine needs --roi (the lesion rectangle on the B-mode or CEUS pane)")?;
    let presets = match &a.layouts {
        Some(path) => ceusd::layout::Presets::with_site_file(path)?,
        None => ceusd::layout::Presets::default(),
    };
    let layout = match &a.layout {
        Some(name) => Some(presets.get(name)?.layout),
        None => None,
    };
    let mut settings = ExamSettings::default();
    settings.arrival.transit_s = a.transit;
    settings.keep = a.keep;
    settings.use_recorded_injection = !a.ignore_recorded_injection;
    let mut source = spec.open(Pacing::AsFastAsPossible)?;
    let exam = run_offline(
        source.as_mut(),
        settings,
        layout,
        &presets,
        InjectionHint {
            marked_at_s: a.inject_at,
        },
        Some(roi),
        |_| {},
    )?;
    let result = exam.result(model, &roi)?;
    if let Some(path) = &a.heatmap {
        match exam.key_frame_heatmap(model, &roi)? {
            Some(image) => ceusd::analyze::write_png_atomically(path, &image)?,
            None => log::warn!("no key frame: no heatmap written to {}", path.display()),
        }
    }
    if a.json {
        let doc = serde_json::json!({
            "source": source.describe(),
            "frames": exam.frames_seen,
            "layout": exam.layout,
            "timeline": exam.timeline,
            "result": result,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "source     {} ({} frames)",
        source.describe(),
        exam.frames_seen
    )?;
    writeln!(
        out,
        "layout     B-mode {} | CEUS {}",
        exam.layout.bmode, exam.layout.ceus
    )?;
    for e in &exam.timeline {
        match e {
            TimelineEvent::Phase {
                at_s,
                phase,
                elapsed_s,
            } => writeln!(
                out,
                "{at_s:8.2} s  {phase}{}",
                elapsed_s
                    .map(|e| format!(" ({e:.1} s after injection)"))
                    .unwrap_or_default()
            )?,
            TimelineEvent::Clock(s) => writeln!(
                out,
                "{:8.2} s  injection at {:.2} s, {}{}",
                s.at_s,
                s.to.at_s,
                s.to.source,
                if s.to.estimated && s.to.source != ceusd::timing::clock::ClockSource::Automatic {
                    " (estimated)"
                } else {
                    ""
                }
            )?,
            TimelineEvent::Arrival(arr) => writeln!(
                out,
                "{:8.2} s  contrast arrival detected (baseline {:.1}, noise {:.2})",
                arr.arrival_s, arr.baseline, arr.noise
            )?,
            TimelineEvent::NoSignal { at_s, reason } => {
                writeln!(out, "{at_s:8.2} s  no signal: {reason}")?
            }
        }
    }
    writeln!(out, "roi        {} on the CEUS pane", result.roi)?;
    for f in &result.frames {
        let key = result
            .key_frame
            .as_ref()
            .is_some_and(|k| k.sequence == f.sequence);
        writeln!(
            out,
            "frame {:6} at {:6.2} s ({:5.2} s after injection): P({}) {:.4}{}",
            f.sequence,
            f.at_s,
            f.elapsed_s,
            result.positive_class,
            f.score,
            if key { "  <- key frame" } else { "" }
        )?;
    }
    match (result.score, &result.label) {
        (Some(score), Some(label)) => writeln!(
            out,
            "result     {label} (key frame P({}) {score:.4} vs threshold {}; median of {} frames {:.4}, range {:.4}-{:.4})",
            result.positive_class,
            result.threshold,
            result.frames.len(),
            result.median_score.unwrap_or(f32::NAN),
            result.min_score.unwrap_or(f32::NAN),
            result.max_score.unwrap_or(f32::NAN)
        )?,
        _ => writeln!(
            out,
            "result     no score: {}",
            result.reason.as_deref().unwrap_or("unknown")
        )?,
    }
    writeln!(
        out,
        "model      {} {} ({})",
        result.model.name, result.model.content_hash, result.model.intended_use
    )?;
    for w in &result.warnings {
        writeln!(out, "warning    {w}")?;
    }
    Ok(())
}

/// Logs to stderr; under systemd (journald on stderr) each line carries its priority as
/// `<N>` and no timestamp, which the journal adds itself.
fn init_logging(live_view: bool) {
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

/// sysexits' EX_CONFIG: `ceusd run` cannot start with this configuration or model.
const EXIT_CONFIG: i32 = 78;

fn run_service(a: RunArgs) -> Result<()> {
    log::info!(
        "ceusd {} starting, configuration {}",
        env!("CARGO_PKG_VERSION"),
        a.config.display()
    );
    // Without a valid configuration and model, restarting cannot help: say so with EX_CONFIG,
    // which the unit's RestartPreventExitStatus= names.
    let unusable = |e: anyhow::Error| -> ! {
        log::error!("{e:#}");
        log::error!("not starting: fix the configuration, then `ceusd check`");
        std::process::exit(EXIT_CONFIG)
    };
    let config = ceusd::config::Config::load(&a.config, &a.overrides.overrides())
        .unwrap_or_else(|e| unusable(e.into()));
    let model = ceusd::daemon::load_model(&config)
        .with_context(|| format!("loading model {}", config.model.path))
        .unwrap_or_else(|e| unusable(e));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                log::error!("cannot listen for SIGTERM/SIGINT");
                return;
            };
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM"),
                _ = int.recv() => log::info!("SIGINT"),
            }
            let _ = stop_tx.send(true);
        });
        ceusd::daemon::serve(config, std::sync::Arc::new(model), stop_rx).await
    })?;
    // Threads stuck in a driver call must not hold the exit.
    std::process::exit(0)
}

fn run(cli: Cli) -> Result<()> {
    // Not locked for the whole command: the demo's live view draws on stdout from other threads.
    let mut out = std::io::stdout();
    match cli.command {
        Command::Run(a) => run_service(a)?,
        Command::Check(a) => {
            let lines = ceusd::check::run_checks(
                &a.config,
                &a.overrides.overrides(),
                std::time::Duration::from_secs_f64(a.timeout.clamp(0.5, 600.0)),
                &a.only,
            );
            for l in &lines {
                writeln!(out, "{l}")?;
            }
            // A configuration that fails ends the list with its own FAIL line.
            if lines.iter().any(|l| !l.passed) {
                out.flush()?;
                std::process::exit(1);
            }
        }
        Command::Demo(a) => {
            let summary = ceusd::demo::run(
                ceusd::demo::DemoOptions {
                    speed: a.speed,
                    broker: a.broker,
                    port: a.port,
                    exams: a.exams,
                    hold: ceusd::demo::RESULT_HOLD,
                    state_dir: a.state_dir,
                    view: !a.no_view,
                    seed: 11,
                    size: ceusd::capture::source::parse_frame_size(&a.size)
                        .with_context(|| format!("--size {}: expected WxH", a.size))?,
                    fps: a.fps,
                    web: (!a.no_web).then_some((a.web_port, a.ws_port)),
                },
                &mut out,
            )?;
            write!(out, "\n{summary}")?;
            out.flush()?;
            std::process::exit(0);
        }
        Command::Eval(a) => run_eval(a, &mut out)?,
        Command::Train(a) => run_train(a, &mut out)?,
        Command::Model(ModelCommand::BuildDemo { out_dir, model_out }) => {
            let cases_bar = progress_bar(0, "synthetic exams");
            let bar = progress_bar(0, "training");
            let outcome = ceusd::train::demo::build(
                |done, total| {
                    cases_bar.set_length(total as u64);
                    cases_bar.set_position(done as u64);
                },
                |p| match p {
                    ceusd::train::Progress::Images { done, total } => {
                        cases_bar.finish_and_clear();
                        bar.set_length(total as u64);
                        bar.set_position(done as u64);
                    }
                    ceusd::train::Progress::Epoch(e) => bar.set_message(format!(
                        "epoch {} loss {:.4} val AUC {:.3}",
                        e.epoch, e.train_loss, e.validation_auc
                    )),
                },
            )?;
            bar.finish_and_clear();
            let manifest = ceusd::train::demo::write_artefacts(&outcome, &out_dir)?;
            writeln!(
                out,
                "wrote {}/head.safetensors and manifest.json: demo model {}; best validation AUC {:.4} at epoch {} of {}",
                out_dir.display(),
                manifest.content_hash,
                outcome.best.validation_auc,
                outcome.best.epoch,
                outcome.history.len()
            )?;
            if let Some(path) = model_out {
                let hash = write_model(&path, &outcome.metadata, outcome.tensors, StoredType::F32)?;
                writeln!(
                    out,
                    "wrote {} {hash} (f32 head, before rounding to f16)",
                    path.display()
                )?;
            }
        }
        Command::Model(ModelCommand::ExportDemo { out: path }) => {
            let hash = ceusd::train::demo::write_demo_model(&path)?;
            writeln!(out, "wrote {} {hash}", path.display())?;
        }
        Command::Analyze(a) => {
            let device = parse_device(&a.device)?;
            let model = match &a.model {
                Some(path) => {
                    load_model(&path.to_string_lossy(), a.model_hash.as_deref(), &device)?
                }
                None => {
                    if a.model_hash.is_some() {
                        bail!("--model-hash needs --model");
                    }
                    log::warn!(
                        "no --model given: using the built-in UNTRAINED model (seed {BUILTIN_SEED}); its score is meaningless"
                    );
                    DlrModel::seeded(BUILTIN_SEED, 3, &device)?
                }
            };
            if let Some(spec) = cine_source(&a.file, a.frame)? {
                return run_cine(&a, spec, &model, &mut out);
            }
            let report = analyze(
                &model,
                &AnalyzeRequest {
                    path: a.file.clone(),
                    frame: a.frame.unwrap_or(0),
                    roi: a.roi,
                    heatmap_out: a.heatmap.clone(),
                },
            )?;
            if a.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                let r = &report;
                writeln!(
                    out,
                    "input      {} ({}; frame {} of {}; {}x{})",
                    r.input.path.display(),
                    r.input.format,
                    r.input.frame,
                    r.input.frames_in_file,
                    r.input.width,
                    r.input.height
                )?;
                writeln!(out, "roi        {}", r.roi)?;
                for (class, p) in &r.probabilities {
                    writeln!(out, "{:<11}{p:.4}", format!("P({class})"))?;
                }
                writeln!(
                    out,
                    "label      {} (P({}) {:.4} vs threshold {})",
                    r.label, r.positive_class, r.score, r.threshold
                )?;
                writeln!(
                    out,
                    "model      {} {} ({})",
                    r.model.name, r.model.content_hash, r.model.intended_use
                )?;
                if let Some(h) = &r.heatmap {
                    writeln!(out, "heatmap    {}", h.display())?;
                }
                writeln!(
                    out,
                    "time       decode {:.1} ms, preprocess {:.1} ms, inference {:.1} ms, heatmap {:.1} ms",
                    r.timings.decode_ms, r.timings.preprocess_ms, r.timings.inference_ms, r.timings.heatmap_ms
                )?;
                for w in &r.warnings {
                    writeln!(out, "WARNING    {w}")?;
                }
            }
        }
        Command::Devices { json } => {
            let devices = ceusd::capture::v4l2::list_devices();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&devices)?)?;
            } else if devices.is_empty() {
                writeln!(
                    out,
                    "no video capture devices found (looked at /dev/video*)"
                )?;
            } else {
                for d in &devices {
                    writeln!(out, "{} — {} ({})", d.path.display(), d.card, d.driver)?;
                    match &d.offers {
                        Ok(offers) => {
                            for o in offers {
                                let mark = if o.supported {
                                    ""
                                } else {
                                    " (not supported by ceusd)"
                                };
                                writeln!(out, "  {} {}{mark}", o.fourcc, o.description)?;
                                for size in &o.sizes {
                                    writeln!(out, "    {size}")?;
                                }
                            }
                        }
                        Err(e) => writeln!(out, "  {e}")?,
                    }
                }
            }
        }
        Command::Synth(a) => {
            let kind = a.kind.as_str();
            let spec = format!(
                "{kind}?seed={}&duration={}&size={}&fps={}",
                a.seed, a.duration, a.size, a.fps
            );
            let config = parse_spec(&spec).map_err(anyhow::Error::msg)?;
            let mut scanner = SyntheticScanner::new(config, Pacing::AsFastAsPossible)
                .map_err(anyhow::Error::msg)?;
            let truth = serde_json::to_string_pretty(scanner.truth())?;
            let is_dicom = a
                .out
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
            let truth_path = if is_dicom {
                a.out.with_extension("ground_truth.json")
            } else {
                a.out.join("ground_truth.json")
            };
            if is_dicom {
                let injection_s = scanner.truth().injection_s;
                let frames: Vec<u64> = (0..scanner.frame_count()).collect();
                let (w, h) = (scanner.truth().config.width, scanner.truth().config.height);
                let images = frames.into_iter().map(|i| {
                    image::RgbImage::from_raw(w, h, scanner.frame(i).data).unwrap_or_default()
                });
                let info = CineInfo {
                    frame_time_ms: 1000.0 / a.fps,
                    acquisition_time: "120000.000".into(),
                    acquisition_date: "20260101".into(),
                    injection_s: (!a.omit_injection_tag).then_some(injection_s),
                    uid_seed: a.seed,
                    description: format!(
                        "synthetic CEUS exam, {kind}-like lesion, seed {}",
                        a.seed
                    ),
                };
                let n = write_cine(&a.out, images, &info)?;
                std::fs::write(&truth_path, truth)
                    .with_context(|| format!("writing {}", truth_path.display()))?;
                writeln!(
                    out,
                    "wrote a {n}-frame DICOM cine to {} and {}",
                    a.out.display(),
                    truth_path.display()
                )?;
            } else {
                let summary = record(&mut scanner, &a.out, RecordLimit::default())?;
                std::fs::write(&truth_path, truth)
                    .with_context(|| format!("writing {}", truth_path.display()))?;
                writeln!(
                    out,
                    "wrote {} frames ({:.1} s at {:.1} fps) and ground_truth.json to {}",
                    summary.frames,
                    summary.seconds,
                    summary.fps,
                    a.out.display()
                )?;
            }
        }
        Command::Capture(c) => {
            let pacing = match c.speed {
                Some(s) => Pacing::real_time(s).map_err(anyhow::Error::msg)?,
                None => Pacing::AsFastAsPossible,
            };
            if c.seconds.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
                bail!("--seconds: expected a positive number");
            }
            let mut source = c.source.open(pacing)?;
            log::info!("recording {}", source.describe());
            let summary = record(
                source.as_mut(),
                &c.out,
                RecordLimit {
                    frames: c.frames,
                    seconds: c.seconds,
                },
            )?;
            writeln!(
                out,
                "recorded {} frames over {:.2} s ({:.2} fps), {} dropped, to {}",
                summary.frames,
                summary.seconds,
                summary.fps,
                summary.dropped,
                c.out.display()
            )?;
        }
        Command::Model(ModelCommand::Init {
            seed,
            out: path,
            input_channels,
            dtype,
        }) => {
            if input_channels != 1 && input_channels != 3 {
                bail!("--input-channels {input_channels}: expected 1 or 3");
            }
            let meta = seeded_metadata(seed, input_channels);
            let tensors = seeded_tensors(&meta, seed)?;
            let hash = write_model(&path, &meta, tensors, stored_type(&dtype)?)?;
            writeln!(
                out,
                "wrote {} (untrained, seed {seed}) {hash}",
                path.display()
            )?;
        }
        Command::Model(ModelCommand::Import(a)) => {
            let opts = ImportOptions {
                name: a.name,
                input_channels: a.input_channels,
                mean: a.mean,
                std: a.std,
                classes: a.classes,
                positive_class: a.positive_class,
                threshold: a.threshold,
                head_activation: a.head_activation,
                resize_filter: a.resize_filter,
                training_data: a.training_data,
                intended_use: a.intended_use,
                stored: stored_type(&a.dtype)?,
                created: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string(),
            };
            let report = import_checkpoint(&a.checkpoint, &a.out, &opts)?;
            writeln!(
                out,
                "read       {} ({})",
                report.source.display(),
                report.format
            )?;
            if let Some(p) = &report.prefix_stripped {
                writeln!(out, "prefix     '{p}' stripped (DataParallel)")?;
            }
            writeln!(
                out,
                "head       {}, activation {}, hidden {}",
                report.head_layout, report.head_activation, report.head_hidden
            )?;
            writeln!(out, "input      {} channel(s)", report.input_channels)?;
            if !report.ignored.is_empty() {
                writeln!(out, "ignored    {}", report.ignored.join(", "))?;
            }
            writeln!(
                out,
                "wrote      {} ({} parameters) {}",
                a.out.display(),
                report.parameters,
                report.content_hash
            )?;
        }
        Command::Model(ModelCommand::Quantize {
            input,
            to,
            out: path,
            calibrate,
            percentile,
            verbose,
        }) => {
            let created =
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let calibration =
                calibrate.map(|dir| ceusd::model::convert::Calibration { dir, percentile });
            let done = ceusd::model::convert::quantize_model_with(
                &input,
                to,
                calibration.as_ref(),
                &path,
                &created,
            )?;
            let worst = done
                .tensors
                .iter()
                .max_by(|a, b| a.max_relative_error.total_cmp(&b.max_relative_error));
            let bytes = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            writeln!(
                out,
                "wrote {} ({}, {} bytes; the input has {} bytes)",
                path.display(),
                done.format,
                bytes(&path),
                bytes(&input)
            )?;
            writeln!(out, "content hash  {}", done.content_hash)?;
            if let Some(w) = worst {
                writeln!(
                    out,
                    "largest weight change: {:.2e} of the tensor's range ({}, {})",
                    w.max_relative_error, w.name, w.stored
                )?;
            }
            if let Some(c) = &done.calibration {
                let steps: Vec<f32> = c.layers.iter().map(|(_, l)| l.scale).collect();
                let lo = steps.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = steps.iter().copied().fold(0f32, f32::max);
                writeln!(
                    out,
                    "calibrated {} int8 layers on {} image{}, clipped at the {} percentile: \
                     input steps {lo:.3e}..{hi:.3e}",
                    c.layers.len(),
                    c.images,
                    if c.images == 1 { "" } else { "s" },
                    c.percentile
                )?;
                if verbose {
                    for (name, l) in &c.layers {
                        writeln!(
                            out,
                            "  {name:<28} clip {:.4} (max seen {:.4}, {} values)",
                            l.clip, l.max, l.values
                        )?;
                    }
                }
            }
            if verbose {
                for t in &done.tensors {
                    writeln!(
                        out,
                        "  {:<28} {:<5} {:.2e}",
                        t.name, t.stored, t.max_relative_error
                    )?;
                }
            }
        }
        Command::Model(ModelCommand::Inspect { file, json }) => {
            let m = if file.as_os_str() == "demo" {
                inspect_demo_model()?
            } else {
                read_model(&file, None)?
            };
            let params = m.parameter_count();
            let mut type_counts = std::collections::BTreeMap::<String, usize>::new();
            for t in m.stored_types.values() {
                *type_counts.entry(t.clone()).or_default() += 1;
            }
            let input_scales: std::collections::BTreeMap<String, f32> = m
                .tensors
                .iter()
                .filter_map(|(name, t)| {
                    let conv = name.strip_suffix(".input_scale")?;
                    let v = t.flatten_all().ok()?.to_vec1::<f32>().ok()?;
                    Some((conv.to_string(), *v.first()?))
                })
                .collect();
            if json {
                let v = serde_json::json!({
                    "path": m.path,
                    "file_bytes": m.file_bytes,
                    "content_hash": m.content_hash,
                    "parameters": params,
                    "tensors": m.tensors.len(),
                    "stored_types": m.stored_types,
                    "input_scales": input_scales,
                    "metadata": m.metadata,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                let md = &m.metadata;
                let p = &md.provenance;
                writeln!(
                    out,
                    "file          {} ({} bytes)",
                    m.path.display(),
                    m.file_bytes
                )?;
                writeln!(out, "content hash  {}", m.content_hash)?;
                writeln!(out, "name          {}", md.name)?;
                writeln!(
                    out,
                    "architecture  {} (format {})",
                    md.architecture, md.format_version
                )?;
                let list = |v: &[f32]| {
                    v.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                writeln!(
                    out,
                    "input         {} channel(s), {}x{}, resize {}, mean {}, std {}",
                    md.input_channels,
                    md.input_size,
                    md.input_size,
                    md.resize_filter.name(),
                    list(&md.mean),
                    list(&md.std)
                )?;
                writeln!(
                    out,
                    "classes       {}; positive {}, threshold {}",
                    md.classes.join(", "),
                    md.positive_class,
                    md.threshold
                )?;
                writeln!(
                    out,
                    "head          2048 -> {} -> {} -> 2",
                    md.head_hidden,
                    md.head_activation.name()
                )?;
                writeln!(
                    out,
                    "parameters    {params} in {} tensors; stored as {}",
                    m.tensors.len(),
                    type_counts
                        .iter()
                        .map(|(t, n)| format!("{n} {t}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
                writeln!(
                    out,
                    "weights       {}",
                    match md.weight_format {
                        ceusd::model::WeightFormat::Torchvision =>
                            "torchvision layout, each BatchNorm separate",
                        ceusd::model::WeightFormat::FoldedF16 =>
                            "BatchNorm folded into each convolution; f16 weights, f32 biases",
                        ceusd::model::WeightFormat::FoldedInt8Dynamic =>
                            "BatchNorm folded; convolutions int8 with one scale per output \
                             channel (Q8_0), stem, biases and head f32; activations u8 with a \
                             scale per output pixel's patch, found at run time",
                        ceusd::model::WeightFormat::FoldedInt8Static =>
                            "BatchNorm folded; convolutions int8 with one scale per output \
                             channel (Q8_0), stem, biases and head f32; activations u8 with one \
                             calibrated scale per convolution input (<conv>.input_scale)",
                    }
                )?;
                if !m.int8.is_empty() {
                    let scales: Vec<f32> = m
                        .int8
                        .values()
                        .flat_map(|q| q.scales.iter().copied())
                        .collect();
                    let lo = scales.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = scales.iter().copied().fold(0f32, f32::max);
                    writeln!(
                        out,
                        "int8          {} convolutions, {} channels, weight scales {lo:.3e}..{hi:.3e}",
                        m.int8.len(),
                        scales.len()
                    )?;
                }
                if !input_scales.is_empty() {
                    let lo = input_scales.values().copied().fold(f32::INFINITY, f32::min);
                    let hi = input_scales.values().copied().fold(0f32, f32::max);
                    writeln!(
                        out,
                        "input steps   {} convolutions, calibrated, {lo:.3e}..{hi:.3e} per u8 step",
                        input_scales.len()
                    )?;
                }
                writeln!(out, "trained       {}", p.trained)?;
                writeln!(out, "training data {}", p.training_data)?;
                writeln!(out, "created       {} by {}", p.created, p.software)?;
                writeln!(out, "source        {}", p.source)?;
                writeln!(out, "intended use  {}", p.intended_use)?;
            }
        }
    }
    Ok(())
}
