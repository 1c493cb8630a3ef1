//! `ceusd eval`: the paper's statistics on a cohort, scored here by a model or read from a
//! scores CSV; writes report.md, report.json and roc.png and prints the report.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

use ceusd::eval::cohort::{read_cohort, ClassNames, Cohort, CohortKind};
use ceusd::eval::{
    evaluate, score_cohort, scores_from_file, write_outputs, EvalSettings, ScoredCase,
};
use ceusd::model::{parse_device, ModelIdentity};

use super::{load_model, progress_bar, LOG_TARGET};

#[derive(Args)]
pub struct EvalArgs {
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

pub fn run(a: EvalArgs, out: &mut impl Write) -> Result<()> {
    if a.bootstrap < 100 {
        bail!("--bootstrap {}: use at least 100 resamples", a.bootstrap);
    }
    if let Some(t) = a.threshold {
        if !(0.0..=1.0).contains(&t) {
            bail!("--threshold {t}: expected 0..1");
        }
    }
    let Scored {
        cohort,
        scored,
        model,
        classes,
        threshold,
    } = scored_cohort(&a)?;
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
        log::warn!(target: LOG_TARGET, "{w}");
    }
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", ceusd::eval::report::markdown(&report))?;
    }
    log::info!(
        target: LOG_TARGET,
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

/// The cohort with a score for every case, and what the statistics need to know about it.
struct Scored {
    cohort: Cohort,
    scored: Vec<ScoredCase>,
    /// The model that scored the images; none for a scores CSV.
    model: Option<ModelIdentity>,
    classes: ClassNames,
    threshold: f64,
}

/// The cohort's images scored by the model, or the scores read from a CSV.
fn scored_cohort(a: &EvalArgs) -> Result<Scored> {
    match (&a.model, &a.data, &a.scores) {
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
            Ok(Scored {
                threshold: a.threshold.unwrap_or(meta.threshold as f64),
                cohort,
                scored,
                model: Some(model.identity.clone()),
                classes,
            })
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
            Ok(Scored {
                scored: scores_from_file(&cohort),
                cohort,
                model: None,
                classes,
                threshold: a.threshold.unwrap_or(0.5),
            })
        }
        _ => bail!("give either --model and --data, or --scores"),
    }
}
