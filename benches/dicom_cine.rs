//! Replaying a DICOM cine through `DicomReplay`: wall time per frame and peak memory, which
//! must not grow with the cine's length. `tools/cine_scaling.sh` runs it on cines of 900,
//! 1800 and 3600 frames, each in its own process so that the peak RSS is the replay's alone.
//!
//! Run: `cargo bench --bench dicom_cine` (a short demonstration on small generated cines), or
//! the built binary with
//!   decode CINE.dcm              replay every frame as fast as possible, print one line
//!   native SRC.dcm OUT.dcm       write SRC's frames as an uncompressed RGB cine

#[path = "../tests/dicom_support/native_cine.rs"]
mod native_cine;

use ceusd::capture::dicom::DicomFile;
use ceusd::capture::dicom_write::{write_cine, CineInfo};
use ceusd::capture::replay::{cine_timing, DicomReplay};
use ceusd::capture::source::{FrameSource, Pacing, SourceEvent};
use ceusd::capture::Picture;
use std::path::Path;
use std::time::Instant;

/// Peak resident set of this process, MB (VmHWM).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn decode(path: &Path) -> Result<(), String> {
    let by_frame = DicomFile::open(path)
        .map_err(|e| e.to_string())?
        .reads_by_frame();
    let t = Instant::now();
    let mut replay =
        DicomReplay::open(path, Pacing::AsFastAsPossible).map_err(|e| e.to_string())?;
    let mut frames = 0u64;
    let mut checksum = 0u64;
    while let SourceEvent::Frame(f) = replay.next_event().map_err(|e| e.to_string())? {
        frames += 1;
        checksum = checksum.wrapping_add(f.data[f.data.len() / 2] as u64);
    }
    let wall = t.elapsed().as_secs_f64();
    println!(
        "decode {}: {frames} frames, {wall:.2} s, {:.2} ms/frame, peak RSS {:.0} MB, by frame: {by_frame} (checksum {checksum})",
        path.display(),
        1e3 * wall / frames.max(1) as f64,
        peak_rss_mb()
    );
    Ok(())
}

fn native(src: &Path, out: &Path) -> Result<(), String> {
    let file = DicomFile::open(src).map_err(|e| e.to_string())?;
    let timing = cine_timing(&file)?;
    let step_ms = match timing.frame_times.get(1) {
        Some(t) => t.as_secs_f64() * 1e3,
        None => 40.0,
    };
    let first = file.frame(0).map_err(|e| e.to_string())?;
    let (w, h) = (first.picture.width(), first.picture.height());
    let mut failure = None;
    native_cine::write_native_rgb_cine(out, w, h, file.frames(), step_ms, |i| {
        match file.frame(i).map(|f| f.picture) {
            Ok(Picture::Rgb(img)) => img,
            Ok(Picture::Gray(g)) => image::DynamicImage::ImageLuma8(g).to_rgb8(),
            Err(e) => {
                failure.get_or_insert(e.to_string());
                image::RgbImage::new(w, h)
            }
        }
    })
    .map_err(|e| e.to_string())?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `cargo bench`: small cines, doubling in length; time per frame should stay flat.
fn demonstration() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("ceusd-dicom-cine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let picture = |i: u32| {
        image::RgbImage::from_fn(320, 240, |x, y| {
            let v = ((x + 2 * y + 3 * i) % 251) as u8;
            image::Rgb([v, v.wrapping_mul(3), 255 - v])
        })
    };
    let info = CineInfo {
        frame_time_ms: 66.7,
        acquisition_time: "101500.000000".into(),
        acquisition_date: "20240101".into(),
        injection_s: None,
        uid_seed: 1,
        description: "bench".into(),
    };
    for frames in [150u32, 300, 600] {
        let jpeg = dir.join(format!("jpeg_{frames}.dcm"));
        write_cine(&jpeg, (0..frames).map(picture), &info).map_err(|e| e.to_string())?;
        decode(&jpeg)?;
        let raw = dir.join(format!("native_{frames}.dcm"));
        native(&jpeg, &raw)?;
        decode(&raw)?;
    }
    std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["decode", cine] => decode(Path::new(cine)),
        ["native", src, out] => native(Path::new(src), Path::new(out)),
        [] => demonstration(),
        _ => Err("usage: dicom_cine [decode CINE.dcm | native SRC.dcm OUT.dcm]".into()),
    };
    if let Err(e) = result {
        eprintln!("dicom_cine: {e}");
        std::process::exit(1);
    }
}
