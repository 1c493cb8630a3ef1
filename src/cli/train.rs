//! `ceusd train`: fine-tunes a model on labeled cases, the head alone (backbone frozen,
//! features cached once) or the full network, and writes the new model file.

use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};

use ceusd::eval::cohort::ClassNames;
use ceusd::model::file::{read_model, write_model};
use ceusd::model::ModelIdentity;
use ceusd::train::{data::load_cases, train, Progress, TrainConfig};

use super::{progress_bar, stored_type, LOG_TARGET};

#[derive(Args)]
pub struct TrainArgs {
    /// The model to start from (GGUF, or "demo").
    #[arg(long)]
    model: String,
    /// Cohort CSV (image, label[, roi, frame, cohort, admission_date, case]) or a folder with
    /// one subfolder per class (PDAC/, CP/).
    #[arg(long)]
    data: PathBuf,
    /// The new model file.
    #[arg(long)]
    out: PathBuf,
    /// head (backbone frozen, features cached once) or full (backbone unfrozen).
    #[arg(long, default_value = "head")]
    mode: ceusd::train::TrainMode,
    /// Validation cases: date:YYYY-MM-DD (admitted on or after), cohort:NAME, or fraction:F.
    #[arg(long, default_value = "fraction:0.2")]
    split: ceusd::train::data::Split,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// At most this many epochs (default: 200 head, 30 full).
    #[arg(long)]
    epochs: Option<usize>,
    /// Stop after this many epochs without a better validation AUC (default: 20 head, 5 full).
    #[arg(long)]
    patience: Option<usize>,
    /// Batch size (default: 32 head, 8 full).
    #[arg(long)]
    batch: Option<usize>,
    /// Learning rate (default: 1e-3 head, 1e-4 full; the head gets 10x in full mode).
    #[arg(long)]
    lr: Option<f64>,
    /// Head mode: augmented views per training case, cached once (the first is the plain ROI).
    #[arg(long, default_value_t = 4)]
    views: usize,
    /// Name of the new model.
    #[arg(long)]
    name: String,
    /// What the cases are (cohort, scanners, dates), recorded in the model's provenance.
    #[arg(long)]
    describe_data: String,
    /// Intended-use statement (default: the base model's).
    #[arg(long)]
    intended_use: Option<String>,
    /// Stored tensor type: f32 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Write the per-epoch history (loss, validation AUC) as JSON here.
    #[arg(long)]
    history: Option<PathBuf>,
}

pub fn run(a: TrainArgs, out: &mut impl Write) -> Result<()> {
    let stored = stored_type(&a.dtype)?;
    let (meta, tensors, identity) = if a.model == "demo" {
        let (m, t, hash) = ceusd::model::demo::demo_tensors()?;
        let identity = ModelIdentity::of(&m, hash, None);
        (m, t, identity)
    } else {
        let path = Path::new(&a.model);
        let file = read_model(path, None).with_context(|| format!("loading model {}", a.model))?;
        let identity = ModelIdentity::of(
            &file.metadata,
            file.content_hash.clone(),
            Some(path.to_path_buf()),
        );
        (file.metadata, file.tensors, identity)
    };
    let classes = ClassNames::of_model(&meta);
    let bar = progress_bar(0, "reading cases");
    let cases = load_cases(&a.data, &classes, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let mut cfg = TrainConfig::new(a.mode, &a.name, &a.describe_data);
    cfg.split = a.split;
    cfg.seed = a.seed;
    cfg.views = a.views;
    cfg.intended_use = a.intended_use;
    if let Some(v) = a.epochs {
        cfg.max_epochs = v;
    }
    if let Some(v) = a.patience {
        cfg.patience = v;
    }
    if let Some(v) = a.batch {
        cfg.batch_size = v;
    }
    if let Some(v) = a.lr {
        cfg.learning_rate = v;
    }
    let bar = progress_bar(0, "training");
    let outcome = train(&meta, tensors, &identity, &cases, &cfg, |p| match p {
        Progress::Images { done, total } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        Progress::Epoch(e) => {
            bar.set_message(format!(
                "epoch {} loss {:.4} val loss {:.4} val AUC {:.3}",
                e.epoch, e.train_loss, e.validation_loss, e.validation_auc
            ));
            log::debug!(target: LOG_TARGET, "{e:?}");
        }
    })?;
    bar.finish_and_clear();
    let hash = write_model(&a.out, &outcome.metadata, outcome.tensors, stored)?;
    if let Some(path) = &a.history {
        std::fs::write(path, serde_json::to_string_pretty(&outcome.history)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    writeln!(
        out,
        "wrote {} {hash}\n{} training and {} validation cases; best validation AUC {:.4} at epoch {} of {}",
        a.out.display(),
        outcome.training_cases,
        outcome.validation_cases,
        outcome.best.validation_auc,
        outcome.best.epoch,
        outcome.history.len()
    )?;
    Ok(())
}
