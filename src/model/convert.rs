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

use candle_core::{DType, Device, Tensor};
use image::GrayImage;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::conv::{fold_batchnorm, oihw_to_rows};
use super::dlr_model::DlrModel;
use super::error::ModelError;
use super::file::{read_model, write_stored_model, StoredTensor, StoredType};
use super::identity::ModelIdentity;
use super::int8::{ChannelQuantized, LayerCalibration};
use super::metadata::{ModelMetadata, WeightFormat};
use super::preprocess::resize_gray;
use super::weights::{
    tensor_specs, TensorRole, DOWNSAMPLE, EXPAND, REDUCE, SPATIAL, STEM, STEM_BATCHNORM,
};
use crate::capture::Picture;
use crate::roi::Roi;

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
    /// Set when static activation scales were calibrated.
    pub calibration: Option<CalibrationReport>,
}

/// Where `quantize --calibrate` finds its images, and where it clips.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// A folder of images of what the model is given (lesion ROIs as the daemon crops them):
    /// PNG or JPEG files, or DICOM files (`.dcm`, the first frame, whole).
    pub dir: PathBuf,
    /// Each layer clips at this percentile of its input values.
    pub percentile: f64,
}

/// The default clipping percentile (see `int8/calibration.rs` for why a percentile).
pub const DEFAULT_PERCENTILE: f64 = 99.99;

#[derive(Debug, Clone, serde::Serialize)]
pub struct CalibrationReport {
    pub images: usize,
    pub percentile: f64,
    /// Per int8 convolution, in the order they run.
    pub layers: Vec<(String, LayerCalibration)>,
}

/// The BatchNorm that follows convolution `conv`, by the names the tensor table uses.
fn batchnorm_of(conv: &str) -> Option<String> {
    if conv == STEM {
        return Some(STEM_BATCHNORM.to_string());
    }
    [REDUCE, SPATIAL, DOWNSAMPLE, EXPAND]
        .into_iter()
        .find_map(|(name, bn)| {
            let block = conv.strip_suffix(name)?.strip_suffix('.')?;
            Some(format!("{block}.{bn}"))
        })
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
/// atomically. The new file keeps the input's creation time unless `created` (RFC 3339) is
/// given: quantizing the same input twice gives the same bytes.
pub fn quantize_model(
    input: &Path,
    target: Target,
    output: &Path,
    created: Option<&str>,
) -> Result<Conversion, ModelError> {
    quantize_model_with(input, target, None, output, created)
}

/// `quantize_model`, and with `calibration` (q8 only) a fixed input scale per int8 layer,
/// found by running the quantized network over the calibration images.
pub fn quantize_model_with(
    input: &Path,
    target: Target,
    calibration: Option<&Calibration>,
    output: &Path,
    created: Option<&str>,
) -> Result<Conversion, ModelError> {
    if calibration.is_some() && target != Target::Q8 {
        return Err(ModelError::Input(format!(
            "--calibrate sets int8 activation scales; it does not apply to --to {}",
            target.name()
        )));
    }
    let file = read_model(input, None)?;
    // The images first: a folder that holds none should not cost a whole conversion.
    let calibration_set = match calibration {
        Some(c) => Some((c, calibration_images(&c.dir, &file.metadata)?)),
        None => None,
    };
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
    let mut out = convert_tensors(file.tensor_map(), &meta, target)?;
    meta.weight_format = target.format();
    let calibrated = match calibration_set {
        Some((c, images)) => Some(add_input_scales(&mut meta, &mut out, c, &images)?),
        None => None,
    };
    stamp_provenance(
        &mut meta,
        target,
        created,
        calibrated.as_ref(),
        &file.content_hash,
    );
    let Converted { stored, reports } = out;
    let content_hash = write_stored_model(output, &meta, stored)?;
    Ok(Conversion {
        content_hash,
        format: meta.weight_format.name(),
        tensors: reports,
        calibration: calibrated,
    })
}

/// Every tensor of the network in the file's order, converted to `target`: convolutions with
/// their BatchNorm folded in, linear weights as f16 or f32, linear biases as f32.
fn convert_tensors(
    mut tensors: BTreeMap<String, Tensor>,
    meta: &ModelMetadata,
    target: Target,
) -> Result<Converted, ModelError> {
    let mut out = Converted::default();
    let channels = meta.input_channels as usize;
    for spec in tensor_specs(channels, meta.head_hidden as usize) {
        match spec.role {
            TensorRole::ConvWeight => convert_conv(&mut tensors, &spec.name, target, &mut out)?,
            TensorRole::LinearWeight | TensorRole::LinearBias => {
                let t = take(&mut tensors, &spec.name)?;
                let as_f16 = target == Target::F16 && spec.role == TensorRole::LinearWeight;
                if as_f16 {
                    let original: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
                    let error = relative_error(&original, &f16_round_trip(&t)?);
                    out.push(
                        spec.name,
                        StoredTensor::Float(t, StoredType::F16),
                        "F16",
                        error,
                    );
                } else {
                    out.push(
                        spec.name,
                        StoredTensor::Float(t, StoredType::F32),
                        "F32",
                        0.0,
                    );
                }
            }
            // Folded into their convolution.
            TensorRole::BnWeight
            | TensorRole::BnBias
            | TensorRole::BnMean
            | TensorRole::BnVar
            | TensorRole::ConvBias
            | TensorRole::InputScale => {}
        }
    }
    Ok(out)
}

/// The converted file's provenance: the input's, plus the conversion, which names the input
/// by its content hash alone (its file name would make the same weights give a different
/// file, and hash, when the input is renamed).
fn stamp_provenance(
    meta: &mut ModelMetadata,
    target: Target,
    created: Option<&str>,
    calibrated: Option<&CalibrationReport>,
    input_hash: &str,
) {
    if let Some(created) = created {
        meta.provenance.created = created.to_string();
    }
    meta.provenance.software = format!("ceusd {}", env!("CARGO_PKG_VERSION"));
    let calibrated_on = calibrated
        .map(|r| {
            format!(
                " --calibrate ({} images, clipped at the {} percentile)",
                r.images, r.percentile
            )
        })
        .unwrap_or_default();
    meta.provenance.source = format!(
        "{}; then `ceusd model quantize --to {}{calibrated_on}` of {}",
        meta.provenance.source,
        target.name(),
        input_hash
    );
}

/// The converted tensors in the order they are written, and what each lost.
#[derive(Default)]
struct Converted {
    stored: Vec<(String, StoredTensor)>,
    reports: Vec<TensorReport>,
}

impl Converted {
    fn push(&mut self, name: String, tensor: StoredTensor, stored: &'static str, error: f32) {
        self.reports.push(TensorReport {
            name: name.clone(),
            stored,
            max_relative_error: error,
        });
        self.stored.push((name, tensor));
    }
}

/// Removes `name` from the input's tensors.
fn take(tensors: &mut BTreeMap<String, Tensor>, name: &str) -> Result<Tensor, ModelError> {
    tensors
        .remove(name)
        .ok_or_else(|| ModelError::MissingTensor { name: name.into() })
}

/// The convolution `weight_name` with its BatchNorm folded in: its weight stored as `target`
/// says (under q8 the stem stays f32), and its new bias.
fn convert_conv(
    tensors: &mut BTreeMap<String, Tensor>,
    weight_name: &str,
    target: Target,
    out: &mut Converted,
) -> Result<(), ModelError> {
    let conv = weight_name.trim_end_matches(".weight");
    let bn = batchnorm_of(conv).ok_or_else(|| ModelError::MissingTensor {
        name: format!("the BatchNorm of {conv}"),
    })?;
    let (w, bias) = fold_batchnorm(
        &take(tensors, weight_name)?,
        &take(tensors, &format!("{bn}.weight"))?,
        &take(tensors, &format!("{bn}.bias"))?,
        &take(tensors, &format!("{bn}.running_mean"))?,
        &take(tensors, &format!("{bn}.running_var"))?,
    )?;
    let rows = oihw_to_rows(&w)?;
    let (cout, k) = rows.dims2()?;
    let values: Vec<f32> = rows.flatten_all()?.to_vec1()?;
    let is_stem = weight_name == format!("{STEM}.weight");
    let (tensor, kept, kind) = match target {
        Target::Q8 if !is_stem => {
            let q = ChannelQuantized::quantize(&values, cout, k)
                .map_err(|e| ModelError::Input(format!("{weight_name}: {e}")))?;
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
    out.push(
        weight_name.to_string(),
        tensor,
        kind,
        relative_error(&values, &kept),
    );
    out.push(
        format!("{conv}.bias"),
        StoredTensor::Float(bias, StoredType::F32),
        "F32",
        0.0,
    );
    Ok(())
}

/// Runs the calibration and adds each int8 layer's fixed input scale to the file: the format
/// becomes folded-int8-static.
fn add_input_scales(
    meta: &mut ModelMetadata,
    out: &mut Converted,
    calibration: &Calibration,
    images: &[(String, GrayImage)],
) -> Result<CalibrationReport, ModelError> {
    let report = calibrate(meta, &out.stored, calibration, images)?;
    for (layer, found) in &report.layers {
        let scale = Tensor::from_vec(vec![found.scale], 1, &Device::Cpu)?;
        out.push(
            format!("{layer}.input_scale"),
            StoredTensor::Float(scale, StoredType::F32),
            "F32",
            0.0,
        );
    }
    meta.weight_format = WeightFormat::FoldedInt8Static;
    Ok(report)
}

/// Builds the int8 network from the converted tensors (activations scaled per row, as a
/// folded-int8-dynamic file runs), runs it over the calibration images while counting every
/// int8 layer's input values, and chooses each layer's scale.
fn calibrate(
    meta: &ModelMetadata,
    stored: &[(String, StoredTensor)],
    calibration: &Calibration,
    images: &[(String, GrayImage)],
) -> Result<CalibrationReport, ModelError> {
    let mut tensors = Vec::with_capacity(stored.len());
    let mut int8 = BTreeMap::new();
    for (name, t) in stored {
        match t {
            StoredTensor::Float(t, _) => tensors.push((name.clone(), t.clone())),
            StoredTensor::Int8(q) => {
                let dims = (q.out_channels, q.k);
                tensors.push((
                    name.clone(),
                    Tensor::from_vec(q.dequantize(), dims, &Device::Cpu)?,
                ));
                int8.insert(name.clone(), q.clone());
            }
        }
    }
    let identity = ModelIdentity::of(meta, String::new(), None);
    let mut model = DlrModel::with_int8(meta.clone(), identity, tensors, int8, &Device::Cpu)?;
    let counters = model.network.record_int8_inputs();
    if counters.is_empty() {
        return Err(ModelError::Int8(
            "no convolution runs on the int8 engine here, so there is nothing to calibrate".into(),
        ));
    }
    for batch in images.chunks(8) {
        let gray: Vec<GrayImage> = batch.iter().map(|(_, g)| g.clone()).collect();
        model.forward_images(&gray)?;
    }
    model.network.stop_recording_int8_inputs();
    let mut layers = Vec::with_capacity(counters.len());
    for (name, counter) in counters {
        let found = counter
            .calibrate(calibration.percentile)
            .map_err(|e| ModelError::Input(format!("calibrating {name}: {e}")))?;
        layers.push((name, found));
    }
    log::info!(
        "calibrated {} int8 layers on {} images from {}",
        layers.len(),
        images.len(),
        calibration.dir.display()
    );
    Ok(CalibrationReport {
        images: images.len(),
        percentile: calibration.percentile,
        layers,
    })
}

/// The calibration images in `dir` (sorted by name), each turned gray and resized to the
/// model's input as the daemon does. Files of other kinds are skipped; a file that should be an
/// image but does not decode is an error naming it.
pub fn calibration_images(
    dir: &Path,
    meta: &ModelMetadata,
) -> Result<Vec<(String, GrayImage)>, ModelError> {
    let io = |e| ModelError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    paths.sort();
    let mut images = Vec::new();
    for path in paths {
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let bad = |reason: String| ModelError::Input(format!("{}: {reason}", path.display()));
        let picture = match extension.as_str() {
            "png" | "jpg" | "jpeg" => {
                let decoded = image::open(&path).map_err(|e| bad(e.to_string()))?;
                if decoded.color().has_color() {
                    Picture::Rgb(decoded.to_rgb8())
                } else {
                    Picture::Gray(decoded.to_luma8())
                }
            }
            // The DICOM reader's errors already name the file.
            "dcm" => {
                crate::capture::dicom::load_frame(&path, 0)
                    .map_err(|e| ModelError::Input(e.to_string()))?
                    .picture
            }
            _ => {
                log::info!(
                    "calibration: skipping {} (not PNG, JPEG or DICOM)",
                    path.display()
                );
                continue;
            }
        };
        let whole = Roi::full(picture.width(), picture.height());
        let gray = picture.gray_roi(&whole).map_err(|e| bad(e.to_string()))?;
        let resized = resize_gray(&gray, meta.input_size, meta.resize_filter)?;
        images.push((path.display().to_string(), resized));
    }
    if images.is_empty() {
        return Err(ModelError::Input(format!(
            "{}: no calibration images (PNG, JPEG or DICOM files) in the folder",
            dir.display()
        )));
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::batchnorm_of;
    use crate::model::weights::{tensor_specs, TensorRole};

    #[test]
    fn every_convolution_finds_its_batchnorm() {
        assert_eq!(batchnorm_of("conv1").as_deref(), Some("bn1"));
        assert_eq!(
            batchnorm_of("layer2.0.conv3").as_deref(),
            Some("layer2.0.bn3")
        );
        assert_eq!(
            batchnorm_of("layer4.0.downsample.0").as_deref(),
            Some("layer4.0.downsample.1")
        );
        assert_eq!(batchnorm_of("layer4.0.conv9"), None);
        // Every convolution of the tensor table, and its BatchNorm's tensors are in the table.
        let specs = tensor_specs(3, 8);
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let convs: Vec<&str> = specs
            .iter()
            .filter(|s| s.role == TensorRole::ConvWeight)
            .map(|s| s.name.trim_end_matches(".weight"))
            .collect();
        assert_eq!(convs.len(), 53);
        for conv in convs {
            let bn = batchnorm_of(conv).unwrap_or_else(|| panic!("{conv}"));
            for part in ["weight", "bias", "running_mean", "running_var"] {
                assert!(
                    names.contains(&format!("{bn}.{part}").as_str()),
                    "{bn}.{part}"
                );
            }
        }
    }
}
