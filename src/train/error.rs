//! What goes wrong in training. Its own file so that every step of training can return it
//! without importing the module that runs them.

use std::path::PathBuf;

use crate::eval::cohort::CohortError;
use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Cohort(#[from] CohortError),
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    #[error("case {case}: {reason}")]
    Case { case: String, reason: String },
    #[error("split: {0}")]
    Split(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("training: {0}")]
    Candle(#[from] candle_core::Error),
}
