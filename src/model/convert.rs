//! `ceusd model quantize`: rewrites a torchvision-format model file with every BatchNorm folded
//! into its convolution, and the weights stored as int8 (one scale per output channel) or f16.
//!
//! Folding is exact arithmetic on the stored weights (done once here instead of at every load),
//! and it has to happen before int8 quantization: a BatchNorm scale multiplies each output
//! channel, so quantizing the unfolded weights would give each channel the wrong step.
//!
//! What stays in f32 in an int8 file, and why: the stem (its 7x7xC weights are 0.2% of the
//! parameters, its input is the signed normalised image, and a channel's 147 or 49 weights do
//! not fill whole `Q8_0` blocks), every bias, and the head's two linear layers (4% of the
//! parameters, 0.03% of the work, and the layers Grad-CAM differentiates).

use candle_core::{DType, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

use super::conv::{fold_batchnorm, oihw_to_rows};
use super::file::{read_model, write_stored_model, StoredTensor, StoredType};
use super::int8::ChannelQuantized;
use super::metadata::WeightFormat;
use super::weights::{tensor_specs, TensorRole};
use super::ModelError;

/// What `quantize` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Int8 weights per output channel, activations quantized at run time.
    Q8,
    F16,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "q8" => Ok(Target::Q8),
            "f16" => Ok(Target::F16),
            other => Err(format!("unknown target '{other}' (expected q8 or f16)")),
        }
    }
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Q8 => "q8",
            Target::F16 => "f16",
        }
    }

    fn format(self) -> WeightFormat {
        match self {
            Target::Q8 => WeightFormat::FoldedInt8Dynamic,
            Target::F16 => WeightFormat::FoldedF16,
        }
    }
}

/// What was done to one stored tensor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorReport {
    pub name: String,
    pub stored: &'static str,
    /// Largest |stored - folded f32| over the tensor, relative to the tensor's largest |value|.
    pub max_relative_error: f32,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Conversion {
    pub content_hash: String,
    pub format: &'static str,
    pub tensors: Vec<TensorReport>,
}

/// The BatchNorm that follows convolution `conv` in torchvision's ResNet naming.
fn batchnorm_of(conv: &str) -> String {
    if let Some(prefix) = conv.strip_suffix(".downsample.0") {
        return format!("{prefix}.downsample.1");
    }
    match conv.rsplit_once("conv") {
        Some((prefix, index)) => format!("{prefix}bn{index}"),
        None => format!("{conv}.bn"),
    }
}

fn relative_error(original: &[f32], stored: &[f32]) -> f32 {
    let peak = original.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = original
        .iter()
        .zip(stored)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    if peak > 0.0 {
        worst / peak
    } else {
        worst
    }
}

fn f16_round_trip(t: &Tensor) -> Result<Vec<f32>, ModelError> {
    Ok(t.to_dtype(DType::F16)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?)
}

/// Reads `input` (torchvision format), folds and quantizes it to `target`, and writes `output`
/// atomically. `created` is the RFC 3339 time recorded in the new file's provenance.
pub fn quantize_model(
    input: &Path,
    target: Target,
    output: &Path,
    created: &str,
) -> Result<Conversion, ModelError> {
    let file = read_model(input, None)?;
    let mut meta = file.metadata.clone();
    if meta.weight_format.is_folded() {
        return Err(ModelError::BadMetadata {
            key: "ceusd.weights.format".into(),
            reason: format!(
                "{} is already {}; quantize its torchvision-format original",
                input.display(),
                meta.weight_format.name()
            ),
        });
    }
    let mut tensors: BTreeMap<String, Tensor> = file.tensor_map();
    let mut take = |name: &str| {
        tensors
            .remove(name)
            .ok_or_else(|| ModelError::MissingTensor { name: name.into() })
    };
    let mut stored = Vec::new();
    let mut reports = Vec::new();
    let channels = meta.input_channels as usize;
    for spec in tensor_specs(channels, meta.head_hidden as usize) {
        match spec.role {
            TensorRole::ConvWeight => {
                let conv = spec.name.trim_end_matches(".weight");
                let bn = batchnorm_of(conv);
                let (w, bias) = fold_batchnorm(
                    &take(&spec.name)?,
                    &take(&format!("{bn}.weight"))?,
                    &take(&format!("{bn}.bias"))?,
                    &take(&format!("{bn}.running_mean"))?,
                    &take(&format!("{bn}.running_var"))?,
                )?;
                let rows = oihw_to_rows(&w)?;
                let (cout, k) = rows.dims2()?;
                let values: Vec<f32> = rows.flatten_all()?.to_vec1()?;
                let is_stem = spec.name == "conv1.weight";
                let (tensor, kept, kind) = match target {
                    Target::Q8 if !is_stem => {
                        let q = ChannelQuantized::quantize(&values, cout, k)
                            .map_err(|e| ModelError::Input(format!("{}: {e}", spec.name)))?;
                        let kept = q.dequantize();
                        (StoredTensor::Int8(q), kept, "Q8_0")
                    }
                    Target::Q8 => (
                        StoredTensor::Float(rows, StoredType::F32),
                        values.clone(),
                        "F32",
                    ),
                    Target::F16 => {
                        let kept = f16_round_trip(&rows)?;
                        (StoredTensor::Float(rows, StoredType::F16), kept, "F16")
                    }
                };
                reports.push(TensorReport {
                    name: spec.name.clone(),
                    stored: kind,
                    max_relative_error: relative_error(&values, &kept),
                });
                stored.push((spec.name.clone(), tensor));
                reports.push(TensorReport {
                    name: format!("{conv}.bias"),
                    stored: "F32",
                    max_relative_error: 0.0,
                });
                stored.push((
                    format!("{conv}.bias"),
                    StoredTensor::Float(bias, StoredType::F32),
                ));
            }
            TensorRole::LinearWeight | TensorRole::LinearBias => {
                let t = take(&spec.name)?;
                let as_f16 = target == Target::F16 && spec.role == TensorRole::LinearWeight;
                let (kind, error) = if as_f16 {
                    let original: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                    ("F16", relative_error(&original, &f16_round_trip(&t)?))
                } else {
                    ("F32", 0.0)
                };
                let stored_type = if as_f16 {
                    StoredType::F16
                } else {
                    StoredType::F32
                };
                reports.push(TensorReport {
                    name: spec.name.clone(),
                    stored: kind,
                    max_relative_error: error,
                });
                stored.push((spec.name, StoredTensor::Float(t, stored_type)));
            }
            // Folded into their convolution above.
            TensorRole::BnWeight
            | TensorRole::BnBias
            | TensorRole::BnMean
            | TensorRole::BnVar
            | TensorRole::ConvBias => {}
        }
    }
    meta.weight_format = target.format();
    meta.provenance.created = created.to_string();
    meta.provenance.software = format!("ceusd {}", env!("CARGO_PKG_VERSION"));
    meta.provenance.source = format!(
        "{}; then `ceusd model quantize --to {}` of {} ({})",
        meta.provenance.source,
        target.name(),
        input
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        file.content_hash
    );
    let content_hash = write_stored_model(output, &meta, stored)?;
    Ok(Conversion {
        content_hash,
        format: target.format().name(),
        tensors: reports,
    })
}

#[cfg(test)]
mod tests {
    use super::batchnorm_of;

    #[test]
    fn every_convolution_finds_its_batchnorm() {
        assert_eq!(batchnorm_of("conv1"), "bn1");
        assert_eq!(batchnorm_of("layer2.0.conv3"), "layer2.0.bn3");
        assert_eq!(
            batchnorm_of("layer4.0.downsample.0"),
            "layer4.0.downsample.1"
        );
    }
}
