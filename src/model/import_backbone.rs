//! `ceusd model import --backbone-only`: torchvision's `resnet50` state dict (the ImageNet
//! weights fine-tuning starts from, as in Tong et al.) under a new DLR head drawn from a seed,
//! marked untrained until `ceusd train` has run on it.
//!
//! The checkpoint must hold exactly torchvision's ResNet-50 tensors: another network
//! (ResNet-101, ResNeXt, a wide ResNet) would load into the wrong places, so whatever is
//! missing, extra or shaped otherwise is named. The checkpoint's own classifier (`fc`, 1000
//! ImageNet classes) is dropped and said so. A checkpoint that already has a DLR head is
//! refused: that head is trained, and replacing it with a random one would throw away what the
//! site wants to keep (`ceusd train --mode head` fine-tunes it instead).

use candle_core::Tensor;
use std::collections::BTreeMap;
use std::path::Path;

use super::error::ModelError;
use super::file::write_model;
use super::import::{
    dlr_head_description, input_channels, normalisation, read_checkpoint,
    strip_data_parallel_prefix, ImportOptions, ImportReport,
};
use super::init::seeded_head;
use super::metadata::{HeadActivation, ModelMetadata, Provenance, WeightFormat};
use super::weights::{
    check_complete, learnable_parameters, tensor_specs, TensorRole, FEATURE_CHANNELS,
};

/// The seed of the new head when none is given.
pub const DEFAULT_HEAD_SEED: u64 = 1;

/// How many names an error lists of each kind before it counts the rest.
const NAMES_LISTED: usize = 6;

/// Imports the backbone of `source` into a model file at `out`, under a DLR head (2048→512,
/// ReLU unless `opts` says otherwise, dropout, 512→2) drawn from `head_seed`.
pub fn import_backbone(
    source: &Path,
    out: &Path,
    opts: &ImportOptions,
    head_seed: u64,
) -> Result<ImportReport, ModelError> {
    let (format, tensors) = read_checkpoint(source)?;
    let (mut tensors, prefix_stripped) = strip_data_parallel_prefix(tensors);
    if let Some(layout) = dlr_head_description(&tensors) {
        return Err(refused(
            source,
            format!(
                "it already has a DLR head ({layout}); --backbone-only would discard that \
                 trained head for a random one. Import it without --backbone-only, and run \
                 `ceusd train --mode head` on the model to fine-tune its head"
            ),
        ));
    }
    tensors.retain(|name, _| !name.ends_with("num_batches_tracked"));
    let classifier_dropped = take_classifier(&mut tensors)?;
    let stem_channels = tensors
        .get("conv1.weight")
        .and_then(|t| t.dims().get(1).copied())
        .unwrap_or(3);
    check_resnet50_backbone(&tensors, stem_channels, source)?;
    let channels = input_channels(&tensors, opts.input_channels)?;
    let meta = backbone_metadata(
        source,
        &format,
        opts,
        channels,
        head_seed,
        &classifier_dropped,
    )?;
    tensors.extend(seeded_head(meta.head_hidden, head_seed)?);
    let ordered = check_complete(
        tensors,
        WeightFormat::Torchvision,
        channels as usize,
        meta.head_hidden as usize,
    )?;
    let parameters = learnable_parameters(&ordered);
    let content_hash = write_model(out, &meta, ordered, opts.stored)?;
    Ok(ImportReport {
        source: source.to_path_buf(),
        format,
        prefix_stripped,
        head_layout: format!("new DLR head drawn from seed {head_seed}, untrained"),
        head_activation: meta.head_activation.name().into(),
        input_channels: channels,
        head_hidden: meta.head_hidden,
        ignored: Vec::new(),
        classifier_dropped,
        head_seed: Some(head_seed),
        parameters,
        content_hash,
    })
}

fn refused(source: &Path, reason: String) -> ModelError {
    ModelError::Checkpoint {
        path: source.to_path_buf(),
        reason,
    }
}

/// Takes torchvision's classifier (`fc.weight` [classes, 2048], `fc.bias` [classes]) out of
/// the tensors and describes it; `None` where the checkpoint has none (`fc = nn.Identity()`).
fn take_classifier(tensors: &mut BTreeMap<String, Tensor>) -> Result<Option<String>, ModelError> {
    let (weight, bias) = (tensors.remove("fc.weight"), tensors.remove("fc.bias"));
    let (weight, bias) = match (weight, bias) {
        (None, None) => return Ok(None),
        (Some(w), Some(b)) => (w, b),
        (Some(_), None) => {
            return Err(ModelError::MissingTensor {
                name: "fc.bias".into(),
            })
        }
        (None, Some(_)) => {
            return Err(ModelError::MissingTensor {
                name: "fc.weight".into(),
            })
        }
    };
    let classes = weight.dims().first().copied().unwrap_or(0);
    for (name, tensor, expected) in [
        ("fc.weight", &weight, vec![classes, FEATURE_CHANNELS]),
        ("fc.bias", &bias, vec![classes]),
    ] {
        if tensor.dims() != expected.as_slice() {
            return Err(ModelError::TensorShape {
                name: name.into(),
                expected,
                found: tensor.dims().to_vec(),
            });
        }
    }
    Ok(Some(format!(
        "fc, the checkpoint's {classes}-class classifier [{classes}, {FEATURE_CHANNELS}]"
    )))
}

/// Checks that `tensors` are exactly torchvision's ResNet-50 without its classifier; the
/// error lists every tensor that is missing, not ResNet-50's, or shaped otherwise.
fn check_resnet50_backbone(
    tensors: &BTreeMap<String, Tensor>,
    stem_channels: usize,
    source: &Path,
) -> Result<(), ModelError> {
    let backbone: Vec<_> = tensor_specs(stem_channels, 1)
        .into_iter()
        .filter(|s| !matches!(s.role, TensorRole::LinearWeight | TensorRole::LinearBias))
        .collect();
    let mut missing = Vec::new();
    let mut misshapen = Vec::new();
    for spec in &backbone {
        match tensors.get(&spec.name) {
            None => missing.push(spec.name.clone()),
            Some(t) if t.dims() != spec.shape.as_slice() => misshapen.push(format!(
                "{} {:?} (ResNet-50: {:?})",
                spec.name,
                t.dims(),
                spec.shape
            )),
            Some(_) => {}
        }
    }
    let unexpected: Vec<String> = tensors
        .keys()
        .filter(|name| !backbone.iter().any(|s| &s.name == *name))
        .cloned()
        .collect();
    let problems: Vec<String> = [
        ("missing", missing),
        ("not in ResNet-50", unexpected),
        ("shaped otherwise", misshapen),
    ]
    .into_iter()
    .filter(|(_, names)| !names.is_empty())
    .map(|(what, names)| listed(what, &names))
    .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(refused(
        source,
        format!(
            "not a torchvision ResNet-50 state dict: {}",
            problems.join("; ")
        ),
    ))
}

/// "3 tensors missing: a, b, c" with at most `NAMES_LISTED` names and a count of the rest.
fn listed(what: &str, names: &[String]) -> String {
    let shown = names[..names.len().min(NAMES_LISTED)].join(", ");
    let more = names.len().saturating_sub(NAMES_LISTED);
    let plural = if names.len() == 1 { "" } else { "s" };
    if more > 0 {
        format!(
            "{} tensor{plural} {what}: {shown} and {more} more",
            names.len()
        )
    } else {
        format!("{} tensor{plural} {what}: {shown}", names.len())
    }
}

/// The paper's defaults with the user's settings, marked untrained with a seeded head, and
/// provenance naming the checkpoint, the dropped classifier and the seed.
fn backbone_metadata(
    source: &Path,
    format: &str,
    opts: &ImportOptions,
    input_channels: u32,
    head_seed: u64,
    classifier_dropped: &Option<String>,
) -> Result<ModelMetadata, ModelError> {
    let (mean, std) = normalisation(opts, input_channels, source)?;
    let file_name = source
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let dropped = match classifier_dropped {
        Some(c) => format!("; dropped {c}"),
        None => String::new(),
    };
    let provenance = Provenance {
        trained: false,
        training_data: format!(
            "backbone: {}; DLR head: none (seeded, untrained)",
            opts.training_data
        ),
        created: opts.created.clone(),
        software: format!("ceusd {}", env!("CARGO_PKG_VERSION")),
        source: format!(
            "backbone imported from {file_name} ({format}, {}){dropped}; DLR head drawn from \
             seed {head_seed}",
            super::file::sha256_file(source)?
        ),
        intended_use: opts.intended_use.clone(),
    };
    let name = opts.name.clone().unwrap_or_else(|| {
        source
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "imported-backbone".into())
    });
    let meta = ModelMetadata {
        input_channels,
        mean,
        std,
        classes: opts.classes.clone(),
        positive_class: opts.positive_class.clone(),
        threshold: opts.threshold,
        head_activation: opts.head_activation.unwrap_or(HeadActivation::Relu),
        resize_filter: opts.resize_filter,
        head_untrained: true,
        ..ModelMetadata::paper_defaults(&name, provenance)
    };
    meta.validate()?;
    Ok(meta)
}
