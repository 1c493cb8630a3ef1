//! `ceusd model`: creates, imports, converts and inspects model files; one module per
//! subcommand.

use anyhow::Result;
use clap::Subcommand;
use std::io::Write;

mod demo;
mod import;
mod init;
mod inspect;
mod quantize;
mod scales;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Import a PyTorch (.pth/.pt) or safetensors state dict of a ResNet-50 + DLR head, or
    /// (--backbone-only) a plain torchvision ResNet-50 under a new, untrained head.
    Import(import::ImportArgs),
    /// Show a model file's metadata, parameter count, tensor types and hash.
    Inspect(inspect::InspectArgs),
    /// Re-run the demo model's recipe: synthetic exams, head-only training from the seeded
    /// backbone; writes head.safetensors and manifest.json (what the binary embeds).
    BuildDemo(demo::BuildDemoArgs),
    /// Write the built-in demo model (synthetic data only, not for clinical use) to a file.
    ExportDemo(demo::ExportDemoArgs),
    /// Fold every BatchNorm into its convolution and store the weights as int8 (one scale per
    /// output channel; activations quantized at run time, or with --calibrate at fixed
    /// calibrated scales) or f16.
    Quantize(quantize::QuantizeArgs),
    /// Write a seeded random model (marked untrained) for tests and benchmarks.
    Init(init::InitArgs),
}

pub fn run(command: ModelCommand, out: &mut impl Write) -> Result<()> {
    match command {
        ModelCommand::Import(a) => import::run(a, out),
        ModelCommand::Inspect(a) => inspect::run(a, out),
        ModelCommand::BuildDemo(a) => demo::build(a, out),
        ModelCommand::ExportDemo(a) => demo::export(a, out),
        ModelCommand::Quantize(a) => quantize::run(a, out),
        ModelCommand::Init(a) => init::run(a, out),
    }
}
