//! `ceusd model build-demo` re-runs the demo model's recipe (synthetic exams, head-only
//! training from the seeded backbone) and writes what the binary embeds; `ceusd model
//! export-demo` writes the embedded demo model to a file.

use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

use ceusd::model::file::{write_model, StoredType};
use ceusd::train::Progress;

use crate::cli::progress_bar;

#[derive(Args)]
pub struct BuildDemoArgs {
    #[arg(long, default_value = "models/demo")]
    out_dir: PathBuf,
    /// Also write the assembled model as a GGUF file.
    #[arg(long)]
    model_out: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExportDemoArgs {
    #[arg(long)]
    out: PathBuf,
}

pub fn build(a: BuildDemoArgs, out: &mut impl Write) -> Result<()> {
    let cases_bar = progress_bar(0, "synthetic exams");
    let bar = progress_bar(0, "training");
    let outcome = ceusd::train::demo::build(
        |done, total| {
            cases_bar.set_length(total as u64);
            cases_bar.set_position(done as u64);
        },
        |p| match p {
            Progress::Images { done, total } => {
                cases_bar.finish_and_clear();
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            Progress::Epoch(e) => bar.set_message(format!(
                "epoch {} loss {:.4} val AUC {:.3}",
                e.epoch, e.train_loss, e.validation_auc
            )),
        },
    )?;
    bar.finish_and_clear();
    let manifest = ceusd::train::demo::write_artefacts(&outcome, &a.out_dir)?;
    writeln!(
        out,
        "wrote {}/head.safetensors and manifest.json: demo model {}; best validation AUC {:.4} at epoch {} of {}",
        a.out_dir.display(),
        manifest.content_hash,
        outcome.best.validation_auc,
        outcome.best.epoch,
        outcome.history.len()
    )?;
    if let Some(path) = a.model_out {
        let hash = write_model(&path, &outcome.metadata, outcome.tensors, StoredType::F32)?;
        writeln!(
            out,
            "wrote {} {hash} (f32 head, before rounding to f16)",
            path.display()
        )?;
    }
    Ok(())
}

pub fn export(a: ExportDemoArgs, out: &mut impl Write) -> Result<()> {
    let hash = ceusd::model::demo::write_demo_model(&a.out)?;
    writeln!(out, "wrote {} {hash}", a.out.display())?;
    Ok(())
}
