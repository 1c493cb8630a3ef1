//! `ceusd model import`: reads a PyTorch or safetensors state dict of a ResNet-50 + DLR head
//! and writes it as a model file with the metadata given on the command line; with
//! `--backbone-only`, a plain torchvision ResNet-50 (e.g. ImageNet's) under a new, untrained
//! DLR head.

use anyhow::Result;
use clap::Args;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ceusd::model::import::{import_checkpoint, ImportOptions, ImportReport};
use ceusd::model::import_backbone::{import_backbone, DEFAULT_HEAD_SEED};
use ceusd::model::{HeadActivation, ResizeFilter};

use crate::cli::stored_type;

#[derive(Args)]
pub struct ImportArgs {
    checkpoint: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// The checkpoint is torchvision's resnet50 (e.g. ImageNet weights): keep its backbone,
    /// drop its classifier 'fc', and add a DLR head (2048→512→ReLU→dropout→2) drawn from
    /// --seed, marked untrained until `ceusd train` has run on the model.
    #[arg(long)]
    backbone_only: bool,
    /// With --backbone-only: the seed of the new head; the same seed gives the same head
    /// [default: 1].
    #[arg(long, requires = "backbone_only")]
    seed: Option<u64>,
    /// Must match conv1.weight (default: taken from it).
    #[arg(long)]
    input_channels: Option<u32>,
    /// Per-channel mean of pixel/255, comma separated (default for 3 channels: ImageNet's).
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// Class names in the order of the last layer's outputs.
    #[arg(long, value_delimiter = ',', default_value = "CP,PDAC")]
    classes: Vec<String>,
    #[arg(long, default_value = "PDAC")]
    positive_class: String,
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// none or relu (required where the head layout does not tell).
    #[arg(long)]
    head_activation: Option<HeadActivation>,
    #[arg(long, default_value = "bilinear")]
    resize_filter: ResizeFilter,
    #[arg(long)]
    name: Option<String>,
    /// What the weights were trained on, in words (cohort, scanners, dates).
    #[arg(long, default_value = "not stated")]
    training_data: String,
    #[arg(long, default_value = "research use only; not for clinical use")]
    intended_use: String,
    /// Stored tensor type: f32 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn run(a: ImportArgs, out: &mut impl Write) -> Result<()> {
    let opts = ImportOptions {
        name: a.name,
        input_channels: a.input_channels,
        mean: a.mean,
        std: a.std,
        classes: a.classes,
        positive_class: a.positive_class,
        threshold: a.threshold,
        head_activation: a.head_activation,
        resize_filter: a.resize_filter,
        training_data: a.training_data,
        intended_use: a.intended_use,
        stored: stored_type(&a.dtype)?,
        created: ceusd::model::metadata::creation_time()?,
    };
    let report = if a.backbone_only {
        let seed = a.seed.unwrap_or(DEFAULT_HEAD_SEED);
        import_backbone(&a.checkpoint, &a.out, &opts, seed)?
    } else {
        import_checkpoint(&a.checkpoint, &a.out, &opts)?
    };
    write!(
        out,
        "{}",
        Imported {
            report: &report,
            out: &a.out
        }
    )?;
    Ok(())
}

/// What the importer found and wrote, one aligned line each.
struct Imported<'a> {
    report: &'a ImportReport,
    out: &'a Path,
}

impl fmt::Display for Imported<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        writeln!(f, "read       {} ({})", r.source.display(), r.format)?;
        if let Some(p) = &r.prefix_stripped {
            writeln!(f, "prefix     '{p}' stripped (DataParallel)")?;
        }
        writeln!(
            f,
            "head       {}, activation {}, hidden {}",
            r.head_layout, r.head_activation, r.head_hidden
        )?;
        if let Some(classifier) = &r.classifier_dropped {
            writeln!(f, "dropped    {classifier} (not part of the DLR model)")?;
        }
        writeln!(f, "input      {} channel(s)", r.input_channels)?;
        if !r.ignored.is_empty() {
            writeln!(f, "ignored    {}", r.ignored.join(", "))?;
        }
        writeln!(
            f,
            "wrote      {} ({} parameters) {}",
            self.out.display(),
            r.parameters,
            r.content_hash
        )?;
        if r.head_seed.is_some() {
            writeln!(
                f,
                "untrained  the head is random: scores mean nothing until `ceusd train` has \
                 run on this model"
            )?;
        }
        Ok(())
    }
}
