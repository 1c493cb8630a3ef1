//! How a training run is set up (`TrainConfig`, `TrainMode`) and what it reports as it goes
//! (`Progress`): what the caller hands in and hears back, apart from the steps that use them.

use super::data::Split;
use super::head::EpochRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainMode {
    Head,
    Full,
}

impl std::str::FromStr for TrainMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "head" => Ok(TrainMode::Head),
            "full" => Ok(TrainMode::Full),
            other => Err(format!("mode '{other}': expected head or full")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub mode: TrainMode,
    pub split: Split,
    pub seed: u64,
    /// Head mode: augmented views cached per training case (the first is the plain ROI).
    pub views: usize,
    pub max_epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub patience: usize,
    /// Name of the new model.
    pub name: String,
    /// What the cases are, in words, for the model's provenance.
    pub data_description: String,
    /// Overrides the base model's intended-use statement.
    pub intended_use: Option<String>,
    /// RFC 3339 creation time to record (default: now).
    pub created: Option<String>,
}

impl TrainConfig {
    pub fn new(mode: TrainMode, name: &str, data_description: &str) -> Self {
        let head = mode == TrainMode::Head;
        Self {
            mode,
            split: Split::Fraction(0.2),
            seed: 1,
            views: 4,
            max_epochs: if head { 200 } else { 30 },
            batch_size: if head { 32 } else { 8 },
            learning_rate: if head { 1e-3 } else { 1e-4 },
            weight_decay: 1e-4,
            patience: if head { 20 } else { 5 },
            name: name.to_string(),
            data_description: data_description.to_string(),
            intended_use: None,
            created: None,
        }
    }
}

/// What training reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// Feature extraction (head mode) or a training step (full mode).
    Images {
        done: usize,
        total: usize,
    },
    Epoch(&'a EpochRecord),
}
