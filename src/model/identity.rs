//! Who a score came from: the model's name, content hash, weight format, provenance and
//! decision rule, as read from the model file. Published with every status and result, shown
//! by `ceusd analyze` and `ceusd check`.

use serde::Serialize;
use std::path::PathBuf;

use super::metadata::{ModelMetadata, Training};

/// Who a score came from.
#[derive(Debug, Clone, Serialize)]
pub struct ModelIdentity {
    pub name: String,
    /// SHA-256 over the weights and every field that can change a score (what a site pins).
    #[serde(rename = "hash")]
    pub content_hash: String,
    /// How the weights are stored and run, as `ceusd model inspect` says it: "f32", "f16",
    /// "int8 dynamic" or "int8 static".
    pub quantization: String,
    pub trained: bool,
    /// "trained", "untrained" (seeded random) or "head untrained" (a pretrained backbone under
    /// a seeded head, until `ceusd train` has run on it).
    pub training: Training,
    pub intended_use: String,
    /// True when the intended use says the model must not guide care (the demo model).
    pub not_for_clinical_use: bool,
    /// Where the weights came from (the provenance in the file).
    pub source: String,
    /// The file the model was read from; `None` for a model built in memory.
    pub path: Option<PathBuf>,
    pub classes: Vec<String>,
    pub positive_class: String,
    pub threshold: f32,
}

impl ModelIdentity {
    /// The identity of a model with `metadata` and `content_hash`, read from `path` if any.
    pub fn of(metadata: &ModelMetadata, content_hash: String, path: Option<PathBuf>) -> Self {
        let provenance = &metadata.provenance;
        let use_ = provenance.intended_use.to_lowercase();
        Self {
            name: metadata.name.clone(),
            content_hash,
            quantization: metadata.weight_format.quantization().into(),
            trained: provenance.trained,
            training: metadata.training(),
            intended_use: provenance.intended_use.clone(),
            not_for_clinical_use: !provenance.trained
                || use_.contains("not for clinical")
                || use_.contains("research only")
                || use_.contains("demonstration"),
            source: provenance.source.clone(),
            path,
            classes: metadata.classes.clone(),
            positive_class: metadata.positive_class.clone(),
            threshold: metadata.threshold,
        }
    }
}
