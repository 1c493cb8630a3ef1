//! Import of trained checkpoints: PyTorch state dicts (`.pth`/`.pt`, the zip format of
//! `torch.save`) and safetensors files holding a torchvision ResNet-50 plus the DLR head.
//!
//! Training code names the head in a few ways; each is recognised and reported, and renamed to
//! the model file's `fc1`/`fc2`. Where the layout does not say whether a ReLU sits between the
//! two layers, the user must say it: guessing would silently change every score.

use candle_core::{DType, Device, Tensor};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::ModelError;
use super::file::{write_model, StoredType};
use super::metadata::{HeadActivation, ModelMetadata, Provenance, ResizeFilter, WeightFormat};
use super::weights::{check_complete, learnable_parameters};

/// What the user tells the importer; `None` means "use what the checkpoint implies".
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub name: Option<String>,
    pub input_channels: Option<u32>,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
    pub classes: Vec<String>,
    pub positive_class: String,
    pub threshold: f32,
    pub head_activation: Option<HeadActivation>,
    pub resize_filter: ResizeFilter,
    pub training_data: String,
    pub intended_use: String,
    pub stored: StoredType,
    pub created: String,
}

/// What the importer found and did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    pub source: PathBuf,
    pub format: String,
    pub prefix_stripped: Option<String>,
    pub head_layout: String,
    pub head_activation: String,
    pub input_channels: u32,
    pub head_hidden: u32,
    pub ignored: Vec<String>,
    /// The checkpoint's own classifier, left out (`--backbone-only`): its name and shape.
    pub classifier_dropped: Option<String>,
    /// The seed the new, untrained head was drawn from (`--backbone-only`).
    pub head_seed: Option<u64>,
    pub parameters: usize,
    pub content_hash: String,
}

/// Reads every tensor of a checkpoint, as f32 on the CPU.
pub(super) fn read_checkpoint(
    path: &Path,
) -> Result<(String, BTreeMap<String, Tensor>), ModelError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let unreadable = |format: &str, e: candle_core::Error| ModelError::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("cannot read as {format}: {e}"),
    };
    let (format, tensors): (String, Vec<(String, Tensor)>) = match ext.as_str() {
        "safetensors" => (
            "safetensors".into(),
            candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| unreadable("safetensors", e))?
                .into_iter()
                .collect(),
        ),
        "pth" | "pt" | "bin" => {
            // A bare state dict, or a training checkpoint that nests it under a key.
            let mut found = None;
            for key in [
                None,
                Some("state_dict"),
                Some("model_state_dict"),
                Some("model"),
            ] {
                match candle_core::pickle::read_all_with_key(path, key) {
                    Ok(t) if !t.is_empty() => {
                        let label = match key {
                            None => "PyTorch state dict".to_string(),
                            Some(k) => format!("PyTorch checkpoint, state dict under '{k}'"),
                        };
                        found = Some((label, t));
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if key.is_none() => return Err(unreadable("a PyTorch file", e)),
                    Err(_) => {}
                }
            }
            found.ok_or_else(|| ModelError::Checkpoint {
                path: path.to_path_buf(),
                reason: "no tensors found (looked at the top level and under 'state_dict', \
                         'model_state_dict' and 'model')"
                    .into(),
            })?
        }
        other => {
            return Err(ModelError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("unknown extension '{other}': expected .pth, .pt or .safetensors"),
            })
        }
    };
    let mut map = BTreeMap::new();
    for (name, t) in tensors {
        map.insert(name, t.to_dtype(DType::F32)?);
    }
    Ok((format, map))
}

/// The head layouts recognised: (first layer prefix, second layer prefix, description,
/// activation implied by the layout).
const HEAD_LAYOUTS: [(&str, &str, &str, Option<HeadActivation>); 3] = [
    (
        "fc.0",
        "fc.3",
        "nn.Sequential fc.0/fc.3 (Linear, ReLU, Dropout, Linear)",
        Some(HeadActivation::Relu),
    ),
    (
        "fc.0",
        "fc.2",
        "nn.Sequential fc.0/fc.2 (Linear, one module, Linear)",
        None,
    ),
    ("fc1", "fc2", "separate fc1/fc2 Linear layers", None),
];

/// A checkpoint's tensors under the model file's names, and what was found on the way.
pub struct NormalisedCheckpoint {
    pub tensors: BTreeMap<String, Tensor>,
    pub prefix_stripped: Option<String>,
    pub head_layout: String,
    pub head_activation: HeadActivation,
    /// Checkpoint entries that are not part of the network (e.g. an auxiliary head).
    pub ignored: Vec<String>,
}

/// The checkpoint's keys without the "module." that nn.DataParallel and
/// DistributedDataParallel put before every one, and that prefix if it was there.
pub(super) fn strip_data_parallel_prefix(
    tensors: BTreeMap<String, Tensor>,
) -> (BTreeMap<String, Tensor>, Option<String>) {
    let prefix = "module.";
    if tensors.is_empty() || !tensors.keys().all(|k| k.starts_with(prefix)) {
        return (tensors, None);
    }
    let stripped = tensors
        .into_iter()
        .map(|(k, v)| (k[prefix.len()..].to_string(), v))
        .collect();
    (stripped, Some(prefix.to_string()))
}

/// The DLR head layout the checkpoint's tensors are in, if any.
fn dlr_head_layout(
    tensors: &BTreeMap<String, Tensor>,
) -> Option<&'static (
    &'static str,
    &'static str,
    &'static str,
    Option<HeadActivation>,
)> {
    HEAD_LAYOUTS.iter().find(|(a, b, _, _)| {
        tensors.contains_key(&format!("{a}.weight")) && tensors.contains_key(&format!("{b}.weight"))
    })
}

/// How the checkpoint's DLR head is laid out (e.g. "nn.Sequential fc.0/fc.3 (…)"), if it has
/// one.
pub(super) fn dlr_head_description(tensors: &BTreeMap<String, Tensor>) -> Option<&'static str> {
    dlr_head_layout(tensors).map(|(_, _, description, _)| *description)
}

/// Renames a checkpoint's tensors to the model file's names and decides the head activation.
pub fn normalise_names(
    tensors: BTreeMap<String, Tensor>,
    requested_activation: Option<HeadActivation>,
    path: &Path,
) -> Result<NormalisedCheckpoint, ModelError> {
    let bad = |reason: String| ModelError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let (tensors, stripped) = strip_data_parallel_prefix(tensors);
    let layout = dlr_head_layout(&tensors).ok_or_else(|| {
        if tensors.contains_key("fc.weight") {
            bad(
                "the head is a single Linear layer 'fc' (torchvision's classifier); the DLR \
                 head needs two: 2048→hidden→2 (fc.0/fc.3, fc.0/fc.2 or fc1/fc2). To start \
                 from this network's backbone (e.g. ImageNet weights) with a new, untrained \
                 head, import it with --backbone-only and train it with `ceusd train`"
                    .into(),
            )
        } else {
            bad("no DLR head found: expected fc.0/fc.3, fc.0/fc.2 or fc1/fc2 weights".into())
        }
    })?;
    let (first, second, description, implied) = *layout;
    let activation = match (requested_activation, implied) {
        (Some(a), _) => a,
        (None, Some(a)) => a,
        (None, None) => {
            return Err(bad(format!(
                "head layout '{description}' does not say whether a ReLU sits between the two \
                 layers: pass --head-activation none|relu"
            )))
        }
    };
    let mut out = BTreeMap::new();
    let mut ignored = Vec::new();
    for (name, t) in tensors {
        let renamed = if let Some(rest) = name.strip_prefix(&format!("{first}.")) {
            format!("fc1.{rest}")
        } else if let Some(rest) = name.strip_prefix(&format!("{second}.")) {
            format!("fc2.{rest}")
        } else {
            name.clone()
        };
        if renamed.ends_with("num_batches_tracked") {
            continue; // BatchNorm bookkeeping, not a weight.
        }
        let known = renamed.starts_with("conv1.")
            || renamed.starts_with("bn1.")
            || renamed.starts_with("layer")
            || renamed.starts_with("fc1.")
            || renamed.starts_with("fc2.");
        if known {
            out.insert(renamed, t);
        } else {
            ignored.push(name);
        }
    }
    Ok(NormalisedCheckpoint {
        tensors: out,
        prefix_stripped: stripped,
        head_layout: description.to_string(),
        head_activation: activation,
        ignored,
    })
}

/// Imports `source` into a model file at `out`.
pub fn import_checkpoint(
    source: &Path,
    out: &Path,
    opts: &ImportOptions,
) -> Result<ImportReport, ModelError> {
    let (format, tensors) = read_checkpoint(source)?;
    let NormalisedCheckpoint {
        tensors,
        prefix_stripped: prefix,
        head_layout: layout,
        head_activation: activation,
        ignored,
    } = normalise_names(tensors, opts.head_activation, source)?;
    let input_channels = input_channels(&tensors, opts.input_channels)?;
    let hidden = tensors
        .get("fc1.weight")
        .and_then(|t| t.dims().first().copied())
        .unwrap_or(0) as u32;
    let (mean, std) = normalisation(opts, input_channels, source)?;
    let name = opts.name.clone().unwrap_or_else(|| {
        source
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "imported".into())
    });
    let meta = ModelMetadata {
        input_channels,
        mean,
        std,
        classes: opts.classes.clone(),
        positive_class: opts.positive_class.clone(),
        threshold: opts.threshold,
        head_hidden: hidden,
        head_activation: activation,
        resize_filter: opts.resize_filter,
        ..ModelMetadata::paper_defaults(&name, provenance(source, &format, opts)?)
    };
    meta.validate()?;
    let ordered = check_complete(
        tensors,
        WeightFormat::Torchvision,
        input_channels as usize,
        hidden as usize,
    )?;
    let parameters = learnable_parameters(&ordered);
    let content_hash = write_model(out, &meta, ordered, opts.stored)?;
    Ok(ImportReport {
        source: source.to_path_buf(),
        format,
        prefix_stripped: prefix,
        head_layout: layout,
        head_activation: activation.name().into(),
        input_channels,
        head_hidden: hidden,
        ignored,
        classifier_dropped: None,
        head_seed: None,
        parameters,
        content_hash,
    })
}

/// The stem's input channels, as the checkpoint's `conv1.weight` has them; `requested`, when
/// given, must agree.
pub(super) fn input_channels(
    tensors: &BTreeMap<String, Tensor>,
    requested: Option<u32>,
) -> Result<u32, ModelError> {
    let conv1 = tensors
        .get("conv1.weight")
        .ok_or_else(|| ModelError::MissingTensor {
            name: "conv1.weight".into(),
        })?;
    let found = conv1.dims().get(1).copied().unwrap_or(0) as u32;
    match requested {
        Some(c) if c != found => Err(ModelError::TensorShape {
            name: "conv1.weight".into(),
            expected: vec![64, c as usize, 7, 7],
            found: conv1.dims().to_vec(),
        }),
        _ => Ok(found),
    }
}

/// The input's mean and standard deviation per channel: as given, or ImageNet's for a
/// 3-channel network. A 1-channel network has no convention to fall back on.
pub(super) fn normalisation(
    opts: &ImportOptions,
    input_channels: u32,
    source: &Path,
) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
    match (&opts.mean, &opts.std, input_channels) {
        (Some(m), Some(s), _) => Ok((m.clone(), s.clone())),
        (None, None, 3) => Ok((vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])),
        (None, None, _) => Err(ModelError::Checkpoint {
            path: source.to_path_buf(),
            reason: "a 1-channel network has no conventional normalisation: pass --mean and \
                     --std as used in training"
                .into(),
        }),
        _ => Err(ModelError::Checkpoint {
            path: source.to_path_buf(),
            reason: "give both --mean and --std, or neither".into(),
        }),
    }
}

/// The imported model's provenance: what the user says of its training, and the checkpoint
/// it came from, named with its format and SHA-256.
fn provenance(source: &Path, format: &str, opts: &ImportOptions) -> Result<Provenance, ModelError> {
    let source_hash = super::file::sha256_file(source)?;
    Ok(Provenance {
        trained: true,
        training_data: opts.training_data.clone(),
        created: opts.created.clone(),
        software: format!("ceusd {}", env!("CARGO_PKG_VERSION")),
        source: format!(
            "imported from {} ({format}, {source_hash})",
            source
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default()
        ),
        intended_use: opts.intended_use.clone(),
    })
}
