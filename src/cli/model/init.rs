//! `ceusd model init`: writes a seeded random model, marked untrained, for tests and
//! benchmarks.

use anyhow::{bail, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

use ceusd::model::file::write_model;
use ceusd::model::init::{seeded_metadata, seeded_tensors};

use crate::cli::stored_type;

#[derive(Args)]
pub struct InitArgs {
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 3)]
    input_channels: u32,
    /// Stored tensor type: f32 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

pub fn run(a: InitArgs, out: &mut impl Write) -> Result<()> {
    let (seed, input_channels) = (a.seed, a.input_channels);
    if input_channels != 1 && input_channels != 3 {
        bail!("--input-channels {input_channels}: expected 1 or 3");
    }
    let meta = seeded_metadata(seed, input_channels);
    let tensors = seeded_tensors(&meta, seed)?;
    let hash = write_model(&a.out, &meta, tensors, stored_type(&a.dtype)?)?;
    writeln!(
        out,
        "wrote {} (untrained, seed {seed}) {hash}",
        a.out.display()
    )?;
    Ok(())
}
