//! The deep-learning-radiomics (DLR) model: the ResNet-50 network, its model file, the
//! preprocessing the file prescribes, and Grad-CAM.

pub mod conv;
pub mod convert;
pub mod demo;
pub mod file;
pub mod gradcam;
pub mod import;
pub mod init;
pub mod int8;
pub mod metadata;
pub mod network;
pub mod preprocess;
pub mod weights;

use candle_core::{Device, Tensor};
use image::GrayImage;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use conv::ConvEngine;
pub use file::{read_model, write_model, write_stored_model, ModelFile, StoredTensor, StoredType};
pub use metadata::{HeadActivation, ModelMetadata, Provenance, ResizeFilter, WeightFormat};
pub use network::{ForwardOutput, ResNet50Dlr};

/// A model's tensors by name, as a model file stores them.
pub type NamedTensors = Vec<(String, Tensor)>;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model file {path} is corrupt or truncated: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path} is a directory, not a model file: give the path of a .gguf file (or \"demo\")"
    )]
    NotAFile { path: PathBuf },
    #[error("model file {path} has content hash {found}, but {expected} is configured")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("model metadata '{key}': {reason}")]
    BadMetadata { key: String, reason: String },
    #[error("tensor '{name}' is missing")]
    MissingTensor { name: String },
    #[error("tensor '{name}' has shape {found:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor '{name}': {reason}")]
    BadTensor { name: String, reason: String },
    #[error("tensor '{name}' is not part of the network")]
    UnexpectedTensor { name: String },
    #[error(
        "tensor '{name}' is stored as {dtype}; this build reads F32 and F16, and Q8_0 convolution \
         weights in folded-int8 files"
    )]
    UnsupportedTensorType { name: String, dtype: String },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("input: {0}")]
    Input(String),
    #[error("heatmap: {0}")]
    Heatmap(String),
    #[error("device: {0}")]
    Device(String),
    #[error("int8 engine: {0}")]
    Int8(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// SHA-256 of a file, as `sha256:<hex>`.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    use sha2::{Digest, Sha256};
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

/// Parses `cpu` or `cuda[:N]`.
pub fn parse_device(name: &str) -> Result<Device, ModelError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| ModelError::Device(format!("'{s}': expected cuda:N")))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(ModelError::Device(format!(
                    "'{s}' requested, but this build has no CUDA support (build with --features cuda)"
                )));
            }
            Device::new_cuda(ordinal).map_err(|e| ModelError::Device(format!("'{s}': {e}")))
        }
        other => Err(ModelError::Device(format!(
            "unknown device '{other}' (expected cpu or cuda[:N])"
        ))),
    }
}

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

/// One image's scores.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    /// Probability per class, in the model's class order.
    pub probabilities: Vec<f32>,
    pub logits: Vec<f32>,
    /// Probability of the positive class (PDAC): the AI score.
    pub score: f32,
    /// The positive class at or above the threshold, the other class below.
    pub label: String,
}

/// A loaded, verified model ready to score.
#[derive(Debug)]
pub struct DlrModel {
    pub metadata: ModelMetadata,
    pub identity: ModelIdentity,
    pub network: ResNet50Dlr,
}

impl DlrModel {
    /// Reads, verifies and builds a model file on `device`.
    pub fn load(
        path: &Path,
        expected_hash: Option<&str>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let file = read_model(path, expected_hash)?;
        let identity = ModelIdentity::of(
            &file.metadata,
            file.content_hash.clone(),
            Some(path.to_path_buf()),
        );
        Self::build(
            file.metadata,
            identity,
            file.tensors,
            file.int8,
            device,
            ConvEngine::for_device(device),
        )
    }

    /// A seeded, untrained model built in memory; identical to `ceusd model init --seed`.
    pub fn seeded(seed: u64, input_channels: u32, device: &Device) -> Result<Self, ModelError> {
        let metadata = init::seeded_metadata(seed, input_channels);
        let tensors = init::seeded_tensors(&metadata, seed)?;
        let hash = file::content_hash_of(&metadata, &tensors, StoredType::F32)?;
        let identity = ModelIdentity::of(&metadata, hash, None);
        Self::from_tensors(
            metadata,
            identity,
            tensors,
            device,
            ConvEngine::for_device(device),
        )
    }

    /// Builds a model from tensors already in memory.
    pub fn from_tensors(
        metadata: ModelMetadata,
        identity: ModelIdentity,
        tensors: Vec<(String, Tensor)>,
        device: &Device,
        engine: ConvEngine,
    ) -> Result<Self, ModelError> {
        Self::build(metadata, identity, tensors, BTreeMap::new(), device, engine)
    }

    /// Builds a CPU model from tensors in memory, with the int8 form of the weights that have
    /// one (as a folded-int8 file loads).
    pub fn with_int8(
        metadata: ModelMetadata,
        identity: ModelIdentity,
        tensors: Vec<(String, Tensor)>,
        int8: BTreeMap<String, int8::ChannelQuantized>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let engine = ConvEngine::for_device(device);
        Self::build(metadata, identity, tensors, int8, device, engine)
    }

    /// Builds a model; `int8` holds the per-channel int8 form of weights stored as `Q8_0`,
    /// which run on the int8 engine where the convolutions run on the CPU.
    fn build(
        metadata: ModelMetadata,
        identity: ModelIdentity,
        tensors: Vec<(String, Tensor)>,
        int8: BTreeMap<String, int8::ChannelQuantized>,
        device: &Device,
        engine: ConvEngine,
    ) -> Result<Self, ModelError> {
        metadata.validate()?;
        let int8_kernel = if engine == ConvEngine::Im2col && !int8.is_empty() {
            Some(int8::selected_kernel().map_err(ModelError::Int8)?)
        } else {
            None
        };
        let mut source = weights::WeightSource::with_int8(tensors.into_iter().collect(), int8);
        let network = ResNet50Dlr::load(&mut source, &metadata, device, engine, int8_kernel)?;
        if let Some(extra) = source.remaining().first() {
            return Err(ModelError::UnexpectedTensor {
                name: extra.clone(),
            });
        }
        Ok(Self {
            metadata,
            identity,
            network,
        })
    }

    /// Runs the network on network-sized gray images (already resized), as one batch.
    pub fn forward_images(&self, images: &[GrayImage]) -> Result<ForwardOutput, ModelError> {
        let input = preprocess::batch_tensor(images, &self.metadata, &self.network.device)?;
        Ok(self.network.forward(&input)?)
    }

    /// Scores of each image of a forward pass.
    pub fn scores(&self, out: &ForwardOutput) -> Result<Vec<Scores>, ModelError> {
        let probs: Vec<Vec<f32>> = out.probabilities.to_vec2()?;
        let logits: Vec<Vec<f32>> = out.logits.to_vec2()?;
        let pos = self.metadata.positive_index();
        let negative = &self.metadata.classes[1 - pos];
        Ok(probs
            .into_iter()
            .zip(logits)
            .map(|(p, l)| {
                let score = p[pos];
                let label = if score >= self.metadata.threshold {
                    self.metadata.positive_class.clone()
                } else {
                    negative.clone()
                };
                Scores {
                    probabilities: p,
                    logits: l,
                    score,
                    label,
                }
            })
            .collect())
    }

    /// Grad-CAM maps of the positive class at feature resolution, one per image: [b, h, w].
    pub fn gradcam(&self, out: &ForwardOutput) -> Result<Tensor, ModelError> {
        Ok(gradcam::class_activation(
            &self.network.head,
            out,
            self.metadata.positive_index(),
        )?)
    }
}
