//! `ceusd model quantize`: folds every BatchNorm into its convolution and stores the weights
//! as int8 (activation scales found at run time, or calibrated on a folder of images) or f16;
//! reports the sizes, the content hash and how far the weights moved.

use anyhow::Result;
use clap::Args;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ceusd::model::convert::{quantize_model_with, Calibration, Conversion, Target};

use super::scales::span;

#[derive(Args)]
pub struct QuantizeArgs {
    /// A torchvision-format model file (from `model import`, `init` or `export-demo`).
    input: PathBuf,
    /// q8 or f16.
    #[arg(long)]
    to: Target,
    #[arg(long)]
    out: PathBuf,
    /// q8 only: a folder of calibration images (lesion ROIs as the model sees them; PNG,
    /// JPEG or DICOM). Each int8 layer then gets one fixed input scale, stored in the file
    /// (format folded-int8-static), instead of scales found at run time.
    #[arg(long, value_name = "DIR")]
    calibrate: Option<PathBuf>,
    /// With --calibrate: each layer clips at this percentile of its input values.
    #[arg(long, default_value_t = ceusd::model::convert::DEFAULT_PERCENTILE, requires = "calibrate")]
    percentile: f64,
    /// Print what was done to every tensor.
    #[arg(long)]
    verbose: bool,
}

pub fn run(a: QuantizeArgs, out: &mut impl Write) -> Result<()> {
    // The input's creation time, unless SOURCE_DATE_EPOCH says otherwise: the same
    // input quantized twice gives the same file.
    let created = match std::env::var_os("SOURCE_DATE_EPOCH") {
        Some(_) => Some(ceusd::model::metadata::creation_time()?),
        None => None,
    };
    let calibration = a.calibrate.map(|dir| Calibration {
        dir,
        percentile: a.percentile,
    });
    let done = quantize_model_with(
        &a.input,
        a.to,
        calibration.as_ref(),
        &a.out,
        created.as_deref(),
    )?;
    // A size that cannot be read is shown as 0 rather than failing a conversion that is done.
    let bytes = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let report = Quantized {
        done: &done,
        out: &a.out,
        out_bytes: bytes(&a.out),
        input_bytes: bytes(&a.input),
        verbose: a.verbose,
    };
    write!(out, "{report}")?;
    Ok(())
}

/// The file written, its hash, the largest weight change, the calibration's input steps and,
/// verbose, each layer and tensor.
struct Quantized<'a> {
    done: &'a Conversion,
    out: &'a Path,
    out_bytes: u64,
    input_bytes: u64,
    verbose: bool,
}

impl fmt::Display for Quantized<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = self.done;
        writeln!(
            f,
            "wrote {} ({}, {} bytes; the input has {} bytes)",
            self.out.display(),
            done.format,
            self.out_bytes,
            self.input_bytes
        )?;
        writeln!(f, "content hash  {}", done.content_hash)?;
        let worst = done
            .tensors
            .iter()
            .max_by(|a, b| a.max_relative_error.total_cmp(&b.max_relative_error));
        if let Some(w) = worst {
            writeln!(
                f,
                "largest weight change: {:.2e} of the tensor's range ({}, {})",
                w.max_relative_error, w.name, w.stored
            )?;
        }
        if let Some(c) = &done.calibration {
            let (lo, hi) = span(c.layers.iter().map(|(_, l)| l.scale));
            writeln!(
                f,
                "calibrated {} int8 layers on {} image{}, clipped at the {} percentile: \
                 input steps {lo:.3e}..{hi:.3e}",
                c.layers.len(),
                c.images,
                if c.images == 1 { "" } else { "s" },
                c.percentile
            )?;
            if self.verbose {
                for (name, l) in &c.layers {
                    writeln!(
                        f,
                        "  {name:<28} clip {:.4} (max seen {:.4}, {} values)",
                        l.clip, l.max, l.values
                    )?;
                }
            }
        }
        if self.verbose {
            for t in &done.tensors {
                writeln!(
                    f,
                    "  {:<28} {:<5} {:.2e}",
                    t.name, t.stored, t.max_relative_error
                )?;
            }
        }
        Ok(())
    }
}
