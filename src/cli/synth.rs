//! `ceusd synth`: writes a seeded synthetic CEUS exam as a frame folder or a DICOM cine, with
//! its ground truth (injection and arrival times, panes, lesion boxes) beside it.

use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};

use ceusd::capture::dicom_write::{write_cine, CineInfo};
use ceusd::capture::record::{record, RecordLimit};
use ceusd::capture::source::Pacing;
use ceusd::capture::synthetic::{parse_spec, LesionKind, SyntheticScanner};

#[derive(Args)]
pub struct SynthArgs {
    /// pdac or cp.
    #[arg(long)]
    kind: LesionKind,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Seconds of exam.
    #[arg(long, default_value_t = 120.0)]
    duration: f64,
    /// Frame size WxH.
    #[arg(long, default_value = "1280x720")]
    size: String,
    #[arg(long, default_value_t = 15.0)]
    fps: f64,
    /// A new or empty folder (frames + manifest.json), or a file ending in .dcm (a DICOM
    /// ultrasound cine, JPEG baseline).
    #[arg(long)]
    out: PathBuf,
    /// DICOM only: leave out Contrast/Bolus Start Time, as many scanners do.
    #[arg(long)]
    omit_injection_tag: bool,
}

pub fn run(a: SynthArgs, out: &mut impl Write) -> Result<()> {
    let spec = format!(
        "{}?seed={}&duration={}&size={}&fps={}",
        a.kind.as_str(),
        a.seed,
        a.duration,
        a.size,
        a.fps
    );
    let config = parse_spec(&spec).map_err(anyhow::Error::msg)?;
    let mut scanner =
        SyntheticScanner::new(config, Pacing::AsFastAsPossible).map_err(anyhow::Error::msg)?;
    let truth = serde_json::to_string_pretty(scanner.truth())?;
    let is_dicom = a
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"));
    if is_dicom {
        let truth_path = a.out.with_extension("ground_truth.json");
        let n = write_dicom(&a, &mut scanner)?;
        write_truth(&truth_path, truth)?;
        writeln!(
            out,
            "wrote a {n}-frame DICOM cine to {} and {}",
            a.out.display(),
            truth_path.display()
        )?;
    } else {
        let summary = record(&mut scanner, &a.out, RecordLimit::default())?;
        write_truth(&a.out.join("ground_truth.json"), truth)?;
        writeln!(
            out,
            "wrote {} frames ({:.1} s at {:.1} fps) and ground_truth.json to {}",
            summary.frames,
            summary.seconds,
            summary.fps,
            a.out.display()
        )?;
    }
    Ok(())
}

/// The whole exam as one JPEG-baseline ultrasound cine; returns the number of frames.
fn write_dicom(a: &SynthArgs, scanner: &mut SyntheticScanner) -> Result<u32> {
    let injection_s = scanner.truth().injection_s;
    let (w, h) = (scanner.truth().config.width, scanner.truth().config.height);
    let images = (0..scanner.frame_count())
        .map(|i| image::RgbImage::from_raw(w, h, scanner.frame(i).data).unwrap_or_default());
    let info = CineInfo {
        frame_time_ms: 1000.0 / a.fps,
        acquisition_time: "120000.000".into(),
        acquisition_date: "20260101".into(),
        injection_s: (!a.omit_injection_tag).then_some(injection_s),
        uid_seed: a.seed,
        description: format!(
            "synthetic CEUS exam, {}-like lesion, seed {}",
            a.kind.as_str(),
            a.seed
        ),
    };
    Ok(write_cine(&a.out, images, &info)?)
}

fn write_truth(path: &Path, truth: String) -> Result<()> {
    std::fs::write(path, truth).with_context(|| format!("writing {}", path.display()))
}
