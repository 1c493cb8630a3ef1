//! The model file: one GGUF file holding the weights and the metadata the daemon obeys.
//!
//! GGUF is candle's native container for (quantized) tensors and carries typed key/values, so
//! a single file is self-describing. The content hash is a SHA-256 over the canonical metadata
//! and every tensor's name, type, shape and bytes; it is recorded in the file, checked on every
//! load (a flipped bit or a truncated file is refused before any inference) and is the
//! identity a site pins in its configuration.

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::error::ModelError;
use super::int8::quantize::QuantizeError;
use super::int8::ChannelQuantized;
use super::metadata::ModelMetadata;
use super::weights::{check_complete, learnable_parameters, specs_for, TensorRole};
use crate::atomic_file::write_atomically;

pub const HASH_KEY: &str = "ceusd.content_hash";

/// A model's tensors by name, as a model file stores them.
pub type NamedTensors = Vec<(String, Tensor)>;

/// How a tensor is stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredType {
    F32,
    F16,
}

impl StoredType {
    fn ggml(self) -> GgmlDType {
        match self {
            StoredType::F32 => GgmlDType::F32,
            StoredType::F16 => GgmlDType::F16,
        }
    }
}

/// A model file's contents once read and verified. Tensors are f32 on the CPU.
#[derive(Debug)]
pub struct ModelFile {
    pub path: PathBuf,
    pub metadata: ModelMetadata,
    /// `sha256:<hex>`
    pub content_hash: String,
    /// In torchvision order.
    pub tensors: Vec<(String, Tensor)>,
    /// Stored type of each tensor ("F32", "F16", "Q8_0").
    pub stored_types: BTreeMap<String, String>,
    /// The per-channel int8 form of every `Q8_0` tensor (folded-int8 files).
    pub int8: BTreeMap<String, ChannelQuantized>,
    pub file_bytes: u64,
}

impl ModelFile {
    pub fn parameter_count(&self) -> usize {
        learnable_parameters(&self.tensors)
    }

    pub fn tensor_map(&self) -> BTreeMap<String, Tensor> {
        self.tensors.iter().cloned().collect()
    }
}

fn ggml_name(t: GgmlDType) -> String {
    format!("{t:?}")
}

/// The content hash, fed metadata first and then every tensor in name order, so a file is
/// hashed while it is read, without a second copy of its weights.
struct ContentHasher(Sha256);

impl ContentHasher {
    fn new(metadata: &ModelMetadata) -> Self {
        let mut h = Sha256::new();
        h.update(b"ceusd-model-v1\0");
        // serde_json writes struct fields in declaration order: a stable, canonical encoding.
        let meta = serde_json::to_vec(metadata).unwrap_or_default();
        h.update((meta.len() as u64).to_le_bytes());
        h.update(&meta);
        Self(h)
    }

    fn tensor(&mut self, name: &str, dtype: GgmlDType, dims: &[usize], bytes: &[u8]) {
        let h = &mut self.0;
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(ggml_name(dtype).as_bytes());
        h.update((dims.len() as u64).to_le_bytes());
        for d in dims {
            h.update((*d as u64).to_le_bytes());
        }
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }

    fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

/// A tensor as it is to be stored.
#[derive(Debug, Clone)]
pub enum StoredTensor {
    Float(Tensor, StoredType),
    /// Stored as `Q8_0` blocks that share their channel's scale; shape [channels, k].
    Int8(ChannelQuantized),
}

impl StoredTensor {
    fn dims(&self) -> Vec<usize> {
        match self {
            StoredTensor::Float(t, _) => t.dims().to_vec(),
            StoredTensor::Int8(q) => vec![q.out_channels, q.k],
        }
    }

    fn to_qtensor(&self, name: &str) -> Result<QTensor, ModelError> {
        match self {
            StoredTensor::Float(t, stored) => {
                let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
                Ok(QTensor::quantize(&t, stored.ggml())?)
            }
            StoredTensor::Int8(q) => {
                let bytes = q.to_q8_0().map_err(|e| ModelError::BadMetadata {
                    key: name.to_string(),
                    reason: e.to_string(),
                })?;
                Ok(qtensor_from_ggml(
                    GgmlDType::Q8_0,
                    &bytes,
                    vec![q.out_channels, q.k],
                    &Device::Cpu,
                )?)
            }
        }
    }
}

/// Tensors in their stored form, and the content hash they give with `metadata`.
fn encode(
    metadata: &ModelMetadata,
    tensors: &[(String, StoredTensor)],
) -> Result<(Vec<(String, QTensor)>, String), ModelError> {
    let mut qtensors = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        qtensors.push((name.clone(), t.to_qtensor(name)?));
    }
    let mut by_name: Vec<&(String, QTensor)> = qtensors.iter().collect();
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = ContentHasher::new(metadata);
    for (name, q) in by_name {
        hasher.tensor(name, q.dtype(), q.shape().dims(), &q.data()?);
    }
    let hash = hasher.finish();
    Ok((qtensors, hash))
}

fn all_as(tensors: Vec<(String, Tensor)>, stored: StoredType) -> Vec<(String, StoredTensor)> {
    tensors
        .into_iter()
        .map(|(n, t)| (n, StoredTensor::Float(t, stored)))
        .collect()
}

/// The content hash a model file with these contents would record.
pub fn content_hash_of(
    metadata: &ModelMetadata,
    tensors: &[(String, Tensor)],
    stored: StoredType,
) -> Result<String, ModelError> {
    Ok(encode(metadata, &all_as(tensors.to_vec(), stored))?.1)
}

/// Writes a model file atomically (temporary file, fsync, rename): a crash never leaves a
/// half-written model under the final name. Returns the content hash.
pub fn write_model(
    path: &Path,
    metadata: &ModelMetadata,
    tensors: Vec<(String, Tensor)>,
    stored: StoredType,
) -> Result<String, ModelError> {
    write_stored_model(path, metadata, all_as(tensors, stored))
}

/// Like [`write_model`], each tensor with its own stored form.
pub fn write_stored_model(
    path: &Path,
    metadata: &ModelMetadata,
    tensors: Vec<(String, StoredTensor)>,
) -> Result<String, ModelError> {
    metadata.validate()?;
    let mut map: BTreeMap<String, StoredTensor> = tensors.into_iter().collect();
    let mut ordered = Vec::with_capacity(map.len());
    for spec in specs_for(
        metadata.weight_format,
        metadata.input_channels as usize,
        metadata.head_hidden as usize,
    ) {
        let t = map
            .remove(&spec.name)
            .ok_or_else(|| ModelError::MissingTensor {
                name: spec.name.clone(),
            })?;
        if t.dims() != spec.shape {
            return Err(ModelError::TensorShape {
                name: spec.name,
                expected: spec.shape,
                found: t.dims(),
            });
        }
        if matches!(t, StoredTensor::Int8(_)) && !metadata.weight_format.is_int8() {
            return Err(ModelError::UnsupportedTensorType {
                name: spec.name,
                dtype: "Q8_0".into(),
            });
        }
        ordered.push((spec.name, t));
    }
    if let Some(name) = map.keys().next() {
        return Err(ModelError::UnexpectedTensor { name: name.clone() });
    }
    let (qtensors, hash) = encode(metadata, &ordered)?;
    let mut kv = metadata.to_gguf();
    kv.push((HASH_KEY.to_string(), Value::String(hash.clone())));
    let kv_refs: Vec<(&str, &Value)> = kv.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, q)| (k.as_str(), q)).collect();

    write_atomically(path, |w| {
        gguf_file::write(w, &kv_refs, &t_refs).map_err(|e| std::io::Error::other(e.to_string()))
    })
    .map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(hash)
}

/// Reads and verifies a model file: metadata, every tensor's presence and shape, and the
/// content hash. `expected_hash`, when given, must equal the file's hash.
pub fn read_model(path: &Path, expected_hash: Option<&str>) -> Result<ModelFile, ModelError> {
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let corrupt = |reason: String| corrupt(path, reason);
    if path.is_dir() {
        return Err(ModelError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let file = File::open(path).map_err(io)?;
    let file_bytes = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::new(file);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|e| corrupt(format!("not a readable GGUF file: {e}")))?;
    let metadata = ModelMetadata::from_gguf(&content.metadata)?;
    let recorded = match content.metadata.get(HASH_KEY) {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(corrupt(format!("no '{HASH_KEY}' in the file"))),
    };
    if let Some(expected) = expected_hash {
        if expected != recorded {
            return Err(ModelError::HashMismatch {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                found: recorded,
            });
        }
    }
    let read = read_tensors(path, &content, &mut reader, &metadata)?;
    if read.content_hash != recorded {
        return Err(corrupt(format!(
            "content hash mismatch: the file records {recorded} but its contents hash to {}; \
             the file was altered or damaged",
            read.content_hash
        )));
    }
    let tensors = check_complete(
        read.tensors,
        metadata.weight_format,
        metadata.input_channels as usize,
        metadata.head_hidden as usize,
    )?;
    check_int8_layers(path, &metadata, &read.int8, &read.stored_types)?;
    Ok(ModelFile {
        path: path.to_path_buf(),
        metadata,
        content_hash: recorded,
        tensors,
        stored_types: read.stored_types,
        int8: read.int8,
        file_bytes,
    })
}

fn corrupt(path: &Path, reason: String) -> ModelError {
    ModelError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

/// A model file's tensors as read, and the content hash they give with its metadata.
struct ReadTensors {
    tensors: BTreeMap<String, Tensor>,
    int8: BTreeMap<String, ChannelQuantized>,
    stored_types: BTreeMap<String, String>,
    content_hash: String,
}

/// Reads every tensor in name order, hashing each as it is read (no second copy of the
/// weights): F32 and F16 as f32, and in a folded-int8 file each `Q8_0` matrix in its
/// per-channel int8 form as well.
fn read_tensors(
    path: &Path,
    content: &gguf_file::Content,
    reader: &mut BufReader<File>,
    metadata: &ModelMetadata,
) -> Result<ReadTensors, ModelError> {
    let mut tensors = BTreeMap::new();
    let mut int8 = BTreeMap::new();
    let mut hasher = ContentHasher::new(metadata);
    let mut stored_types = BTreeMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let q = content
            .tensor(reader, name, &Device::Cpu)
            .map_err(|e| corrupt(path, format!("tensor '{name}': {e}")))?;
        let dims = q.shape().dims().to_vec();
        let bytes = q.data()?;
        hasher.tensor(name, q.dtype(), &dims, &bytes);
        stored_types.insert(name.clone(), ggml_name(q.dtype()));
        match q.dtype() {
            GgmlDType::F32 | GgmlDType::F16 => {
                tensors.insert(name.clone(), q.dequantize(&Device::Cpu)?);
            }
            GgmlDType::Q8_0 if metadata.weight_format.is_int8() && dims.len() == 2 => {
                let per_channel = ChannelQuantized::from_q8_0(&bytes, dims[0], dims[1])
                    .map_err(|e: QuantizeError| corrupt(path, format!("tensor '{name}': {e}")))?;
                tensors.insert(
                    name.clone(),
                    Tensor::from_vec(per_channel.dequantize(), dims, &Device::Cpu)?,
                );
                int8.insert(name.clone(), per_channel);
            }
            other => {
                return Err(ModelError::UnsupportedTensorType {
                    name: name.clone(),
                    dtype: ggml_name(other),
                })
            }
        }
    }
    Ok(ReadTensors {
        tensors,
        int8,
        stored_types,
        content_hash: hasher.finish(),
    })
}

/// In a folded-int8 file every convolution but the stem is int8; anything else is a file
/// that says one thing and holds another.
fn check_int8_layers(
    path: &Path,
    metadata: &ModelMetadata,
    int8: &BTreeMap<String, ChannelQuantized>,
    stored_types: &BTreeMap<String, String>,
) -> Result<(), ModelError> {
    if !metadata.weight_format.is_int8() {
        return Ok(());
    }
    let specs = specs_for(
        metadata.weight_format,
        metadata.input_channels as usize,
        metadata.head_hidden as usize,
    );
    let stem = "conv1.weight";
    if let Some(spec) = specs
        .iter()
        .find(|s| s.role == TensorRole::ConvWeight && s.name != stem && !int8.contains_key(&s.name))
    {
        return Err(corrupt(
            path,
            format!(
                "declares {} but '{}' is stored as {}",
                metadata.weight_format.name(),
                spec.name,
                stored_types
                    .get(&spec.name)
                    .map(String::as_str)
                    .unwrap_or("?")
            ),
        ));
    }
    Ok(())
}

/// SHA-256 of a file, as `sha256:<hex>`.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}
