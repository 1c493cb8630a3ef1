//! `ceusd capture`: records a source (capture card, DICOM cine, frame folder, synthetic
//! scanner) to a frame folder of PNG frames and manifest.json that `frames:DIR` replays.

use anyhow::{bail, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

use ceusd::capture::record::{record, RecordLimit};
use ceusd::capture::source::Pacing;
use ceusd::capture::spec::SourceSpec;

use super::LOG_TARGET;

#[derive(Args)]
pub struct CaptureArgs {
    /// v4l2:/dev/videoN[?format=..&size=WxH&fps=N], dicom:FILE, frames:DIR or synthetic:pdac|cp[?seed=N..].
    #[arg(long)]
    source: SourceSpec,
    /// A new or empty folder.
    #[arg(long)]
    out: PathBuf,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds of recorded time.
    #[arg(long)]
    seconds: Option<f64>,
    /// Replay speed for recorded sources (1 = real time); without it, as fast as possible.
    #[arg(long)]
    speed: Option<f64>,
}

pub fn run(c: CaptureArgs, out: &mut impl Write) -> Result<()> {
    let pacing = match c.speed {
        Some(s) => Pacing::real_time(s).map_err(anyhow::Error::msg)?,
        None => Pacing::AsFastAsPossible,
    };
    if c.seconds.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
        bail!("--seconds: expected a positive number");
    }
    let mut source = c.source.open(pacing)?;
    log::info!(target: LOG_TARGET, "recording {}", source.describe());
    let summary = record(
        source.as_mut(),
        &c.out,
        RecordLimit {
            frames: c.frames,
            seconds: c.seconds,
        },
    )?;
    writeln!(
        out,
        "recorded {} frames over {:.2} s ({:.2} fps), {} dropped, to {}",
        summary.frames,
        summary.seconds,
        summary.fps,
        summary.dropped,
        c.out.display()
    )?;
    Ok(())
}
