//! `ceusd eval`: the paper's validation statistics on a site's own cohort, with the exact
//! model and preprocessing the daemon uses (or on scores produced elsewhere).
//!
//! Per cohort (and over all cases when there are several): AUC with its bootstrap CI,
//! sensitivity and specificity at the model's threshold with exact CIs, the confusion matrix,
//! the Youden-optimal threshold, and for each reader: the reader's own sensitivity and
//! specificity, McNemar's test of model against reader, and the model's operating point
//! matched to the reader. Written as Markdown, JSON and a ROC plot (PNG).

pub mod cohort;
pub mod report;
pub mod results;
pub mod roc_plot;
pub mod stats;

use serde::Serialize;
use std::path::PathBuf;

use crate::analyze::{analyze, AnalyzeError, AnalyzeRequest};
use crate::model::{DlrModel, ModelIdentity};
use cohort::{Cohort, CohortCase};
use stats::{
    auc, bootstrap_auc_ci, matched_operating_point, mcnemar, roc_curve, youden, Case, Confusion,
};

pub use results::{CohortReport, EvalReport, EvalSettings, ReaderReport, YoudenPoint};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Cohort(#[from] cohort::CohortError),
    #[error("case {case}: {source}")]
    Scoring {
        case: String,
        #[source]
        source: AnalyzeError,
    },
    #[error("writing {path}: {reason}")]
    Output { path: PathBuf, reason: String },
}

/// A case with its score.
#[derive(Debug, Clone)]
pub struct ScoredCase {
    pub case: CohortCase,
    pub score: f64,
}

/// Scores every image of a cohort with `model`, in file order; `progress` is called after
/// each case with (done, total).
pub fn score_cohort(
    model: &DlrModel,
    cohort: &Cohort,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<ScoredCase>, EvalError> {
    let total = cohort.cases.len();
    let mut out = Vec::with_capacity(total);
    for (i, case) in cohort.cases.iter().enumerate() {
        let Some(image) = &case.image else {
            continue;
        };
        let report = analyze(
            model,
            &AnalyzeRequest {
                path: image.clone(),
                frame: case.frame,
                roi: case.roi,
                heatmap_out: None,
            },
        )
        .map_err(|source| EvalError::Scoring {
            case: case.id.clone(),
            source,
        })?;
        out.push(ScoredCase {
            case: case.clone(),
            score: report.score as f64,
        });
        progress(i + 1, total);
    }
    Ok(out)
}

/// Scores read from a scores file.
pub fn scores_from_file(cohort: &Cohort) -> Vec<ScoredCase> {
    cohort
        .cases
        .iter()
        .filter_map(|c| {
            c.score.map(|score| ScoredCase {
                case: c.clone(),
                score,
            })
        })
        .collect()
}

fn cohort_report(
    name: &str,
    scored: &[&ScoredCase],
    readers: &[String],
    settings: &EvalSettings,
) -> CohortReport {
    let cases: Vec<Case> = scored
        .iter()
        .map(|s| Case {
            score: s.score,
            positive: s.case.positive,
        })
        .collect();
    let confusion = Confusion::at_threshold(&cases, settings.threshold);
    let youden = youden(&cases).map(|(threshold, j)| {
        let c = Confusion::at_threshold(&cases, threshold);
        YoudenPoint {
            threshold,
            j,
            sensitivity: c.sensitivity().value.unwrap_or(0.0),
            specificity: c.specificity().value.unwrap_or(0.0),
        }
    });
    let readers = readers
        .iter()
        .enumerate()
        .map(|(r, name)| {
            let read: Vec<(&ScoredCase, bool)> = scored
                .iter()
                .filter_map(|s| s.case.reader_calls[r].map(|call| (*s, call)))
                .collect();
            let confusion =
                Confusion::from_calls(read.iter().map(|(s, call)| (*call, s.case.positive)));
            let (mut model_only, mut reader_only) = (0, 0);
            for (s, call) in &read {
                let model_right = (s.score >= settings.threshold) == s.case.positive;
                let reader_right = *call == s.case.positive;
                match (model_right, reader_right) {
                    (true, false) => model_only += 1,
                    (false, true) => reader_only += 1,
                    _ => {}
                }
            }
            let (sensitivity, specificity) = (confusion.sensitivity(), confusion.specificity());
            let read_cases: Vec<Case> = read
                .iter()
                .map(|(s, _)| Case {
                    score: s.score,
                    positive: s.case.positive,
                })
                .collect();
            ReaderReport {
                name: name.clone(),
                cases: read.len(),
                model_matched: matched_operating_point(
                    &read_cases,
                    sensitivity.value.unwrap_or(0.0),
                    specificity.value.unwrap_or(0.0),
                ),
                confusion,
                sensitivity,
                specificity,
                mcnemar: mcnemar(model_only, reader_only),
            }
        })
        .collect();
    let positives = cases.iter().filter(|c| c.positive).count();
    CohortReport {
        name: name.to_string(),
        cases: cases.len(),
        positives,
        negatives: cases.len() - positives,
        auc: auc(&cases),
        auc_ci: bootstrap_auc_ci(
            &cases,
            settings.bootstrap_resamples,
            settings.bootstrap_seed,
        ),
        sensitivity: confusion.sensitivity(),
        specificity: confusion.specificity(),
        confusion,
        youden,
        readers,
        roc: roc_curve(&cases),
    }
}

/// The statistics per cohort, in order of first appearance, then over all cases when there
/// are several cohorts.
pub fn evaluate(
    source: PathBuf,
    model: Option<ModelIdentity>,
    readers: &[String],
    scored: &[ScoredCase],
    settings: EvalSettings,
) -> EvalReport {
    let mut names: Vec<&str> = Vec::new();
    for s in scored {
        if !names.contains(&s.case.cohort.as_str()) {
            names.push(&s.case.cohort);
        }
    }
    let mut cohorts: Vec<CohortReport> = names
        .iter()
        .map(|name| {
            let members: Vec<&ScoredCase> =
                scored.iter().filter(|s| s.case.cohort == *name).collect();
            cohort_report(name, &members, readers, &settings)
        })
        .collect();
    if names.len() > 1 {
        let all: Vec<&ScoredCase> = scored.iter().collect();
        cohorts.push(cohort_report("all cohorts", &all, readers, &settings));
    }
    let mut warnings = Vec::new();
    for c in &cohorts {
        if c.auc.is_none() {
            warnings.push(format!(
                "cohort '{}' has {} {} and {} {} cases: no AUC",
                c.name, c.positives, settings.positive_class, c.negatives, settings.negative_class
            ));
        }
    }
    if let Some(m) = &model {
        if let Some(reason) = m.training.untrained_reason() {
            warnings.push(format!(
                "model '{}' {reason}: its statistics say nothing about the method",
                m.name
            ));
        }
    }
    EvalReport {
        source,
        model,
        settings,
        cohorts,
        warnings,
    }
}

/// The scores as CSV (case, cohort, label, score), to re-run `eval --scores` without a model.
pub fn scores_csv(scored: &[ScoredCase], settings: &EvalSettings, readers: &[String]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["case", "cohort", "label", "score"];
    header.extend(readers.iter().map(String::as_str));
    let _ = w.write_record(&header);
    for s in scored {
        let class = |p: bool| {
            if p {
                settings.positive_class.clone()
            } else {
                settings.negative_class.clone()
            }
        };
        let mut row = vec![
            s.case.id.clone(),
            s.case.cohort.clone(),
            class(s.case.positive),
            format!("{}", s.score),
        ];
        row.extend(
            s.case
                .reader_calls
                .iter()
                .map(|c| c.map(class).unwrap_or_default()),
        );
        let _ = w.write_record(&row);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// What `write_outputs` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct EvalOutputs {
    pub report_markdown: PathBuf,
    pub report_json: PathBuf,
    pub roc_png: PathBuf,
    /// Written when a model produced the scores.
    pub scores_csv: Option<PathBuf>,
}

/// Writes report.md, report.json, roc.png (and scores.csv when a model scored the cases) into
/// `dir`, each file atomically.
pub fn write_outputs(
    report: &EvalReport,
    scored: &[ScoredCase],
    readers: &[String],
    dir: &std::path::Path,
) -> Result<EvalOutputs, EvalError> {
    use crate::atomic_file::write_atomically;
    let output_error = |path: &std::path::Path, e: &dyn std::fmt::Display| EvalError::Output {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| output_error(dir, &e))?;
    let write_text = |name: &str, text: String| -> Result<PathBuf, EvalError> {
        let path = dir.join(name);
        write_atomically(&path, |w| std::io::Write::write_all(w, text.as_bytes()))
            .map_err(|e| output_error(&path, &e))?;
        Ok(path)
    };
    let report_markdown = write_text("report.md", report::markdown(report))?;
    let json = serde_json::to_string_pretty(report).map_err(|e| output_error(dir, &e))?;
    let report_json = write_text("report.json", json + "\n")?;
    let roc_png = dir.join("roc.png");
    crate::analyze::write_png_atomically(&roc_png, &roc_plot::roc_png(report))
        .map_err(|e| output_error(&roc_png, &e))?;
    let scores_csv = match report.model {
        Some(_) => Some(write_text(
            "scores.csv",
            scores_csv(scored, &report.settings, readers),
        )?),
        None => None,
    };
    Ok(EvalOutputs {
        report_markdown,
        report_json,
        roc_png,
        scores_csv,
    })
}
