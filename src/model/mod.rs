//! The deep-learning-radiomics (DLR) model: the ResNet-50 network, its model file, the
//! preprocessing the file prescribes, and Grad-CAM.

pub mod conv;
pub mod convert;
pub mod demo;
pub mod dlr_model;
pub mod error;
pub mod file;
pub mod gradcam;
pub mod identity;
pub mod import;
pub mod import_backbone;
pub mod init;
pub mod int8;
pub mod kernel_io;
pub mod metadata;
pub mod network;
pub mod preprocess;
pub mod weights;

use candle_core::Device;

// The parts' main types, where the rest of the crate has always named them. The parts import
// one another, never this file.
pub use conv::ConvEngine;
pub use dlr_model::{DlrModel, Scores};
pub use error::ModelError;
pub use file::{
    read_model, sha256_file, write_model, write_stored_model, ModelFile, NamedTensors,
    StoredTensor, StoredType,
};
pub use identity::ModelIdentity;
pub use metadata::{
    HeadActivation, ModelMetadata, Provenance, ResizeFilter, Training, WeightFormat,
};
pub use network::{ForwardOutput, ResNet50Dlr};

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
