//! The demo model: what `ceusd demo` and the README's first command score with, built into the
//! binary.
//!
//! It is the seeded ResNet-50 (`model init --seed 7`, generated bit for bit on every platform)
//! with a head trained on the synthetic scanner's exams (the recipe is `train::demo`, run by
//! `ceusd model build-demo`). The repository holds only the trained head
//! (`models/demo/head.safetensors`, f16, 2 MB) and a manifest with the metadata and the content
//! hash of the assembled model; the binary carries both, assembles the model in memory and
//! refuses it if the hash differs. Only this file is needed to score with it, so the daemon
//! reaches no training code (`tests/import_graph.rs` checks).
//!
//! It has never seen a patient: not for clinical use.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::conv::ConvEngine;
use super::dlr_model::DlrModel;
use super::error::ModelError;
use super::file::{content_hash_of, StoredType};
use super::identity::ModelIdentity;
use super::init::seeded_tensors;
use super::metadata::ModelMetadata;

/// The backbone's seed (the built-in untrained model's seed as well).
pub const BACKBONE_SEED: u64 = 7;

const HEAD: &[u8] = include_bytes!("../../models/demo/head.safetensors");
const MANIFEST: &str = include_str!("../../models/demo/manifest.json");

/// `models/demo/manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoManifest {
    pub recipe: String,
    pub backbone_seed: u64,
    /// SHA-256 of head.safetensors.
    pub head_sha256: String,
    /// Content hash of the assembled model.
    pub content_hash: String,
    pub metadata: ModelMetadata,
    pub command: String,
}

fn head_tensors(head: &HashMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, ModelError> {
    ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
        .iter()
        .map(|n| {
            let t = head.get(*n).ok_or_else(|| ModelError::MissingTensor {
                name: n.to_string(),
            })?;
            Ok((n.to_string(), t.to_dtype(DType::F32)?))
        })
        .collect()
}

/// Seeded backbone + the head in `head_bytes`, as tensors in the model file's names.
pub(crate) fn assemble(
    meta: &ModelMetadata,
    head_bytes: &[u8],
) -> Result<Vec<(String, Tensor)>, ModelError> {
    let head = candle_core::safetensors::load_buffer(head_bytes, &Device::Cpu)?;
    let mut tensors: Vec<(String, Tensor)> = seeded_tensors(meta, BACKBONE_SEED)?
        .into_iter()
        .filter(|(n, _)| !n.starts_with("fc"))
        .collect();
    tensors.extend(head_tensors(&head)?);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
    )
}

/// The manifest built into this binary.
pub fn manifest() -> Result<DemoManifest, ModelError> {
    serde_json::from_str(MANIFEST)
        .map_err(|e| ModelError::Input(format!("the built-in demo manifest is unreadable: {e}")))
}

/// Writes the demo model as an f32 model file at `path` (what `ceusd model export-demo` writes)
/// and returns its content hash, which must be the one the built-in manifest records.
pub fn write_demo_model(path: &std::path::Path) -> Result<String, ModelError> {
    let (meta, tensors, expected) = demo_tensors()?;
    let hash = super::file::write_model(path, &meta, tensors, StoredType::F32)?;
    if hash != expected {
        return Err(ModelError::HashMismatch {
            path: path.to_path_buf(),
            expected,
            found: hash,
        });
    }
    Ok(hash)
}

/// The demo model's metadata and tensors, checked against the built-in manifest's hash.
pub fn demo_tensors() -> Result<(ModelMetadata, super::file::NamedTensors, String), ModelError> {
    let m = manifest()?;
    let head_sha = sha256_hex(HEAD);
    if head_sha != m.head_sha256 {
        return Err(ModelError::Input(format!(
            "the built-in demo head has SHA-256 {head_sha}, its manifest says {}",
            m.head_sha256
        )));
    }
    let tensors = assemble(&m.metadata, HEAD)?;
    let hash = content_hash_of(&m.metadata, &tensors, StoredType::F32)?;
    if hash != m.content_hash {
        return Err(ModelError::HashMismatch {
            path: "<built-in demo model>".into(),
            expected: m.content_hash,
            found: hash,
        });
    }
    Ok((m.metadata, tensors, hash))
}

/// The demo model, ready to score on `device`.
pub fn demo_model(device: &Device) -> Result<DlrModel, ModelError> {
    let (metadata, tensors, content_hash) = demo_tensors()?;
    let identity = ModelIdentity::of(&metadata, content_hash, None);
    DlrModel::from_tensors(
        metadata,
        identity,
        tensors,
        device,
        ConvEngine::for_device(device),
    )
}
