//! What goes wrong with a model: its file, its metadata and tensors, a checkpoint to import,
//! the input, the device. Its own file so that every part of `model` can return it without
//! importing the module that puts the parts together.

use std::path::PathBuf;

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
