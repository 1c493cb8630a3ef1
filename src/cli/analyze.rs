//! `ceusd analyze`: scores one image or DICOM frame (P(PDAC), label, Grad-CAM heatmap), or a
//! whole cine (multi-frame DICOM, frame folder, replayable source) through the exam's timing
//! path offline: layout, contrast clock, phases, key-frame window, scoring.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ceusd::analyze::{analyze, AnalyzeReport, AnalyzeRequest};
use ceusd::capture::source::Pacing;
use ceusd::capture::spec::SourceSpec;
use ceusd::exam::{Exam, ExamResult, ExamSettings, TimelineEvent};
use ceusd::exam_lifecycle::{run_offline, InjectionHint};
use ceusd::model::{parse_device, DlrModel, ModelIdentity, Training};
use ceusd::roi::Roi;
use ceusd::timing::clock::ClockSource;

use super::dicom_out::{Analysed, DicomOutArgs};
use super::{load_model, LOG_TARGET};

/// Seed of the built-in untrained model used when `analyze` is given no `--model`.
const BUILTIN_SEED: u64 = 7;

/// The source kinds analyze replays as a cine.
const CINE_KINDS: [&str; 3] = ["dicom", "frames", "synthetic"];

#[derive(Args)]
pub struct AnalyzeArgs {
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
    #[command(flatten)]
    dicom: DicomOutArgs,
}

pub fn run(a: AnalyzeArgs, out: &mut impl Write) -> Result<()> {
    let device = parse_device(&a.device)?;
    let model = match &a.model {
        Some(path) => load_model(&path.to_string_lossy(), a.model_hash.as_deref(), &device)?,
        None => {
            if a.model_hash.is_some() {
                bail!("--model-hash needs --model");
            }
            log::warn!(
            target: LOG_TARGET,
                "no --model given: using the built-in UNTRAINED model (seed {BUILTIN_SEED}); its score is meaningless"
            );
            DlrModel::seeded(BUILTIN_SEED, 3, &device)?
        }
    };
    if let Some(spec) = cine_source(&a.file, a.frame)? {
        return run_cine(&a, spec, &model, out);
    }
    if a.dicom.dicom_out.is_some() {
        bail!(
            "--dicom-out needs a cine (an exam with an injection time and a key-frame window); \
             one image has neither"
        );
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
        write!(out, "{}", FrameReport(&report))?;
    }
    Ok(())
}

/// The source to analyse as a cine, if `file` is one.
fn cine_source(file: &Path, frame: Option<u32>) -> Result<Option<SourceSpec>> {
    let text = file.to_string_lossy();
    if let Some((scheme, _)) = text.split_once(':') {
        let looks_like_a_kind = !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric())
            && !file.exists();
        if looks_like_a_kind && !CINE_KINDS.contains(&scheme) {
            // Neither a file nor a source analyze can replay: say which kinds there are.
            text.parse::<SourceSpec>().map_err(anyhow::Error::msg)?;
            bail!(
                "{text}: analyze replays dicom:FILE, frames:DIR and synthetic:SPEC sources, or \
                 reads an image or DICOM file; a capture card (v4l2:) is recorded first with \
                 `ceusd capture`"
            );
        }
        if CINE_KINDS.contains(&scheme) {
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
    let wants_picture = a.heatmap.is_some() || a.dicom.dicom_out.is_some();
    let picture = match wants_picture && result.score.is_some() {
        true => exam.key_frame_picture(model, &roi)?,
        false => None,
    };
    if let Some(path) = &a.heatmap {
        match &picture {
            Some(p) => ceusd::analyze::write_png_atomically(path, &p.overlay)?,
            None => {
                log::warn!(target: LOG_TARGET, "no scored key frame: no heatmap written to {}", path.display())
            }
        }
    }
    let dicom_file = match &spec {
        SourceSpec::Dicom(path) => Some(path.as_path()),
        _ => None,
    };
    let dicom_written = a.dicom.write(&Analysed {
        source: &source.describe(),
        dicom_file,
        result: &result,
        key_frame: picture.as_ref(),
    })?;
    if a.json {
        let doc = serde_json::json!({
            "source": source.describe(),
            "frames": exam.frames_seen,
            "layout": exam.layout,
            "timeline": exam.timeline,
            "result": result,
            "dicom_out": dicom_written,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    let report = CineReport {
        source: source.describe(),
        exam: &exam,
        result: &result,
    };
    write!(out, "{report}")?;
    for path in &dicom_written {
        writeln!(out, "dicom      {}", path.display())?;
    }
    Ok(())
}

/// The text report on one frame: input, ROI, each class's probability, label, model, timings.
struct FrameReport<'a>(&'a AnalyzeReport);

impl fmt::Display for FrameReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        writeln!(
            f,
            "input      {} ({}; frame {} of {}; {}x{})",
            r.input.path.display(),
            r.input.format,
            r.input.frame,
            r.input.frames_in_file,
            r.input.width,
            r.input.height
        )?;
        writeln!(f, "roi        {}", r.roi)?;
        for (class, p) in &r.probabilities {
            writeln!(f, "{:<11}{p:.4}", format!("P({class})"))?;
        }
        writeln!(
            f,
            "label      {} (P({}) {:.4} vs threshold {})",
            r.label, r.positive_class, r.score, r.threshold
        )?;
        writeln!(f, "model      {}", ModelLine(&r.model))?;
        if let Some(h) = &r.heatmap {
            writeln!(f, "heatmap    {}", h.display())?;
        }
        writeln!(
            f,
            "time       decode {:.1} ms, preprocess {:.1} ms, inference {:.1} ms, heatmap {:.1} ms",
            r.timings.decode_ms,
            r.timings.preprocess_ms,
            r.timings.inference_ms,
            r.timings.heatmap_ms
        )?;
        for w in &r.warnings {
            writeln!(f, "WARNING    {w}")?;
        }
        Ok(())
    }
}

/// The text report on a cine: source, layout, the exam's timeline, the kept frames with
/// their scores, the result, model and warnings.
struct CineReport<'a> {
    source: String,
    exam: &'a Exam,
    result: &'a ExamResult,
}

impl fmt::Display for CineReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (exam, result) = (self.exam, self.result);
        writeln!(
            f,
            "source     {} ({} frames)",
            self.source, exam.frames_seen
        )?;
        writeln!(
            f,
            "layout     B-mode {} | CEUS {}",
            exam.layout.bmode, exam.layout.ceus
        )?;
        for e in &exam.timeline {
            write_event(f, e)?;
        }
        if let Some(roi) = result.roi {
            writeln!(f, "roi        {roi} on the CEUS pane")?;
        }
        for frame in &result.frames {
            let key = result
                .key_frame
                .as_ref()
                .is_some_and(|k| k.sequence == frame.sequence);
            writeln!(
                f,
                "frame {:6} at {:6.2} s ({:5.2} s after injection): P({}) {:.4}{}",
                frame.sequence,
                frame.at_s,
                frame.elapsed_s,
                result.positive_class,
                frame.score,
                if key { "  <- key frame" } else { "" }
            )?;
        }
        match (result.score, &result.label) {
            (Some(score), Some(label)) => writeln!(
                f,
                "result     {label} (key frame P({}) {score:.4} vs threshold {}; median of {} frames {:.4}, range {:.4}-{:.4})",
                result.positive_class,
                result.threshold,
                result.spread.frames_scored,
                result.spread.median.unwrap_or(f32::NAN),
                result.spread.min.unwrap_or(f32::NAN),
                result.spread.max.unwrap_or(f32::NAN)
            )?,
            _ => writeln!(
                f,
                "result     no score: {}",
                result.reason.as_deref().unwrap_or("unknown")
            )?,
        }
        writeln!(f, "model      {}", ModelLine(&result.model))?;
        for w in &result.warnings {
            writeln!(f, "warning    {w}")?;
        }
        Ok(())
    }
}

/// One line of the timeline, at its source time.
fn write_event(f: &mut fmt::Formatter<'_>, e: &TimelineEvent) -> fmt::Result {
    match e {
        TimelineEvent::Phase {
            at_s,
            phase,
            elapsed_s,
        } => writeln!(
            f,
            "{at_s:8.2} s  {phase}{}",
            elapsed_s
                .map(|e| format!(" ({e:.1} s after injection)"))
                .unwrap_or_default()
        ),
        TimelineEvent::Clock(s) => writeln!(
            f,
            "{:8.2} s  injection at {:.2} s, {}{}",
            s.at_s,
            s.to.at_s,
            s.to.source,
            // The automatic source's own words already say "estimated".
            if s.to.estimated && s.to.source != ClockSource::Automatic {
                " (estimated)"
            } else {
                ""
            }
        ),
        TimelineEvent::Arrival(arr) => writeln!(
            f,
            "{:8.2} s  contrast arrival detected (baseline {:.1}, noise {:.2})",
            arr.arrival_s, arr.baseline, arr.noise
        ),
        TimelineEvent::NoSignal { at_s, reason } => {
            writeln!(f, "{at_s:8.2} s  no signal: {reason}")
        }
        TimelineEvent::SourceChanged(change) => writeln!(f, "{:8.2} s  {change}", change.at_s),
        TimelineEvent::Panes {
            at_s,
            layout,
            source,
        } => writeln!(
            f,
            "{at_s:8.2} s  panes: B-mode {}, CEUS {} ({source})",
            layout.bmode, layout.ceus
        ),
    }
}

/// The model a report's score came from: name, content hash, intended use, and how far it is
/// trained where it is not.
struct ModelLine<'a>(&'a ModelIdentity);

impl fmt::Display for ModelLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{} {} ({})", m.name, m.content_hash, m.intended_use)?;
        if m.training != Training::Trained {
            write!(f, " [{}]", m.training.name())?;
        }
        Ok(())
    }
}
