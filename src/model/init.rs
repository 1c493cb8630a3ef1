//! Seeded random models for tests and benchmarks, marked untrained in their metadata.
//!
//! The generator is SplitMix64 (`crate::rng`), so a seed gives the same weights on every
//! platform and version (fixtures computed from `--seed 7` stay valid). Weights
//! follow PyTorch's initialisation scales, and BatchNorm statistics are drawn near the values
//! of a trained network, so activations keep a realistic range through all 16 blocks instead of
//! exploding: a random model is useful for checking arithmetic, never for a diagnosis.

use candle_core::{Device, Tensor};

use crate::rng::SplitMix64;

use super::error::ModelError;
use super::metadata::{ModelMetadata, Provenance};
use super::weights::{tensor_specs, TensorRole, TensorSpec};

/// FNV-1a, to give each tensor its own stream: adding a tensor never shifts the others.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)
    })
}

/// The seeded tensors of a model with `meta`'s input channels and head width.
pub fn seeded_tensors(
    meta: &ModelMetadata,
    seed: u64,
) -> Result<Vec<(String, Tensor)>, ModelError> {
    tensor_specs(meta.input_channels as usize, meta.head_hidden as usize)
        .into_iter()
        .map(|spec| seeded_tensor(spec, seed, meta.head_hidden))
        .collect()
}

/// The seeded DLR head (`fc1.*`, `fc2.*`) of `hidden` units: the same tensors `seeded_tensors`
/// gives a model with that seed and width, nn.Linear's default initialisation.
pub fn seeded_head(hidden: u32, seed: u64) -> Result<Vec<(String, Tensor)>, ModelError> {
    // The head's tensors do not depend on the stem's input channels.
    tensor_specs(3, hidden as usize)
        .into_iter()
        .filter(|spec| matches!(spec.role, TensorRole::LinearWeight | TensorRole::LinearBias))
        .map(|spec| seeded_tensor(spec, seed, hidden))
        .collect()
}

/// One tensor drawn from its own stream of `seed`, at the scale its role calls for.
fn seeded_tensor(
    spec: TensorSpec,
    seed: u64,
    head_hidden: u32,
) -> Result<(String, Tensor), ModelError> {
    let mut rng = SplitMix64(seed ^ name_hash(&spec.name));
    let n: usize = spec.shape.iter().product();
    let fan_in: usize = spec.shape.iter().skip(1).product::<usize>().max(1);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let u = rng.symmetric_f32();
            match spec.role {
                // Kaiming-uniform for ReLU networks.
                TensorRole::ConvWeight => u * (6.0 / fan_in as f32).sqrt(),
                // A residual branch's last BatchNorm starts small, as in well-trained
                // ResNets, so the sum of 16 blocks keeps its scale.
                TensorRole::BnWeight if spec.closes_branch => 0.2 + 0.05 * u,
                TensorRole::BnWeight => 1.0 + 0.1 * u,
                TensorRole::BnBias => 0.05 * u,
                TensorRole::BnMean => 0.1 * u,
                TensorRole::BnVar => 1.25 + 0.25 * u,
                // nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
                TensorRole::LinearWeight => u / (fan_in as f32).sqrt(),
                TensorRole::LinearBias => {
                    let fan = if spec.name.starts_with("fc1") {
                        2048
                    } else {
                        head_hidden
                    };
                    u / (fan as f32).sqrt()
                }
                // Seeded models are written in torchvision's layout, which has none.
                TensorRole::ConvBias => 0.0,
                TensorRole::InputScale => 1.0,
            }
        })
        .collect();
    let tensor = Tensor::from_vec(values, spec.shape, &Device::Cpu)?;
    Ok((spec.name, tensor))
}

/// Metadata of a seeded model: the paper's defaults, flagged untrained.
/// The creation date is fixed, so that a seed always gives the same file and content hash.
pub fn seeded_metadata(seed: u64, input_channels: u32) -> ModelMetadata {
    let mut meta = ModelMetadata::paper_defaults(
        &format!("untrained-seed-{seed}"),
        Provenance {
            trained: false,
            training_data: "none: seeded random weights".to_string(),
            created: "1970-01-01T00:00:00Z".to_string(),
            software: format!("ceusd {}", env!("CARGO_PKG_VERSION")),
            source: format!("ceusd model init --seed {seed} --input-channels {input_channels}"),
            intended_use: "untrained: for tests and benchmarks only, scores are meaningless; \
                           not for clinical use"
                .to_string(),
        },
    );
    if input_channels == 1 {
        // One gray channel: the mean and spread of ImageNet's three channels.
        meta.input_channels = 1;
        meta.mean = vec![0.449];
        meta.std = vec![0.226];
    }
    meta
}
