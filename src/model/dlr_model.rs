//! A model file loaded, verified and built, ready to score images and explain them.

use candle_core::{Device, Tensor};
use image::GrayImage;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

use super::conv::ConvEngine;
use super::error::ModelError;
use super::file::{read_model, StoredType};
use super::identity::ModelIdentity;
use super::metadata::ModelMetadata;
use super::network::{ForwardOutput, ResNet50Dlr};
use super::{file, gradcam, init, int8, preprocess, weights};

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
