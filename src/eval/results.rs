//! What an evaluation found, per cohort and per reader: the data that the Markdown report,
//! the ROC plot and report.json are written from. Its own file so that those writers do not
//! import the module that computes it.

use serde::Serialize;
use std::path::PathBuf;

use super::stats::{BootstrapCi, Confusion, MatchedOperatingPoint, McNemar, Proportion, RocPoint};
use crate::model::ModelIdentity;

/// Settings of the statistics.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSettings {
    pub threshold: f64,
    pub bootstrap_resamples: usize,
    pub bootstrap_seed: u64,
    pub positive_class: String,
    pub negative_class: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct YoudenPoint {
    pub threshold: f64,
    pub j: f64,
    pub sensitivity: f64,
    pub specificity: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReaderReport {
    pub name: String,
    /// Cases this reader called.
    pub cases: usize,
    pub confusion: Confusion,
    pub sensitivity: Proportion,
    pub specificity: Proportion,
    /// The model at its threshold against this reader, on the cases the reader called.
    pub mcnemar: McNemar,
    pub model_matched: MatchedOperatingPoint,
}

#[derive(Debug, Clone, Serialize)]
pub struct CohortReport {
    pub name: String,
    pub cases: usize,
    pub positives: usize,
    pub negatives: usize,
    pub auc: Option<f64>,
    pub auc_ci: Option<BootstrapCi>,
    pub confusion: Confusion,
    pub sensitivity: Proportion,
    pub specificity: Proportion,
    pub youden: Option<YoudenPoint>,
    pub readers: Vec<ReaderReport>,
    pub roc: Vec<RocPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub source: PathBuf,
    pub model: Option<ModelIdentity>,
    pub settings: EvalSettings,
    pub cohorts: Vec<CohortReport>,
    pub warnings: Vec<String>,
}
