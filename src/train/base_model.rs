//! What both training modes read from the base model and write back into it: a crop view at
//! the network's input size (as the model file prescribes), a tensor by name, and the head's
//! four tensors.

use candle_core::Tensor;
use image::GrayImage;

use super::error::TrainError;
use super::head::HeadWeights;
use crate::model::metadata::ModelMetadata;
use crate::model::preprocess::resize_gray;
use crate::model::{ModelError, NamedTensors};

/// The network-sized input of a ROI crop view.
pub(super) fn network_input(
    gray: &GrayImage,
    meta: &ModelMetadata,
) -> Result<GrayImage, ModelError> {
    resize_gray(gray, meta.input_size, meta.resize_filter)
}

/// The tensor called `name`, or an error naming it.
pub(crate) fn named_tensor(tensors: &[(String, Tensor)], name: &str) -> Result<Tensor, ModelError> {
    tensors
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.clone())
        .ok_or_else(|| ModelError::MissingTensor {
            name: name.to_string(),
        })
}

/// The head's tensors among a model's.
pub(super) fn head_of(tensors: &[(String, Tensor)]) -> Result<HeadWeights, TrainError> {
    let get = |name: &str| named_tensor(tensors, name);
    Ok(HeadWeights {
        fc1_weight: get("fc1.weight")?,
        fc1_bias: get("fc1.bias")?,
        fc2_weight: get("fc2.weight")?,
        fc2_bias: get("fc2.bias")?,
    })
}

/// A model's tensors with `head` in place of its head's.
pub(super) fn with_head(mut tensors: NamedTensors, head: HeadWeights) -> NamedTensors {
    for (name, t) in [
        ("fc1.weight", head.fc1_weight),
        ("fc1.bias", head.fc1_bias),
        ("fc2.weight", head.fc2_weight),
        ("fc2.bias", head.fc2_bias),
    ] {
        if let Some(slot) = tensors.iter_mut().find(|(n, _)| n == name) {
            slot.1 = t;
        }
    }
    tensors
}
