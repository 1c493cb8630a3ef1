//! Who a score came from: the model's name, content hash and provenance, published with every
//! result.

use serde::Serialize;
use std::path::PathBuf;

use super::metadata::ModelMetadata;

/// Who a score came from; published with every result.
#[derive(Debug, Clone, Serialize)]
pub struct ModelIdentity {
    pub name: String,
    pub content_hash: String,
    pub trained: bool,
    pub intended_use: String,
    pub source: String,
    pub path: Option<PathBuf>,
}

impl ModelIdentity {
    /// The identity of a model with `metadata` and `content_hash`, read from `path` if any.
    pub fn of(metadata: &ModelMetadata, content_hash: String, path: Option<PathBuf>) -> Self {
        Self {
            name: metadata.name.clone(),
            content_hash,
            trained: metadata.provenance.trained,
            intended_use: metadata.provenance.intended_use.clone(),
            source: metadata.provenance.source.clone(),
            path,
        }
    }
}
