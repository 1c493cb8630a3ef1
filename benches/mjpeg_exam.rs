//! CPU per 1080p60 MJPEG frame over a whole 120 s exam, as `Exam::process` takes it: frames
//! outside the key-frame window assessed on block means (every third frame), every frame of
//! the window (30-40 s after injection) decoded in full. The same-run baseline is the old
//! per-frame work: a full decode of each pane (two decodes) and the quality checks.
//!
//! The frames are the synthetic scanner's, 1920x1080, encoded once as JPEG (quality 90) and
//! played as a loop (`loop=31`), as `ceusd run` plays them; CPU time from getrusage, so that
//! other programs on the machine do not count.
//!
//! Run: `cargo bench --bench mjpeg_exam`

use std::time::Duration;

use ceusd::capture::frame::{Frame, LumaRange, PixelFormat};
use ceusd::capture::source::Pacing;
use ceusd::capture::synthetic::{LesionKind, SyntheticConfig, SyntheticScanner};
use ceusd::exam::{Exam, ExamSettings};
use ceusd::layout::Layout;
use ceusd::quality::{QualityLimits, QualityTracker};

const FPS: f64 = 60.0;
const EXAM_S: f64 = 120.0;
const INJECTION_S: f64 = 5.0;
const BASELINE_FRAMES: u64 = 240;

/// User plus system CPU time of this process, in seconds.
fn cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn main() {
    let config = SyntheticConfig {
        width: 1920,
        height: 1080,
        fps: FPS,
        duration_s: EXAM_S,
        injection_s: INJECTION_S,
        format: PixelFormat::Mjpeg,
        jpeg_loop: Some(31),
        ..SyntheticConfig::new(LesionKind::Pdac, 7)
    };
    let mut scanner =
        SyntheticScanner::new(config, Pacing::AsFastAsPossible).expect("synthetic scanner");
    let truth = scanner.truth().clone();
    let layout = Layout {
        bmode: truth.bmode_pane,
        ceus: truth.ceus_pane,
    };
    let frames: Vec<Frame> = (0..31).map(|i| scanner.frame(i)).collect();
    let bytes: usize = frames.iter().map(|f| f.data.len()).sum();
    println!(
        "frames: 1920x1080 MJPEG, {} KB on average",
        bytes / frames.len() / 1024
    );
    let at = |index: u64| {
        let mut f = frames[(index % frames.len() as u64) as usize].clone();
        f.sequence = index;
        f.timestamp = Duration::from_secs_f64(index as f64 / FPS);
        f
    };

    // The old path: each pane decoded in full, then the quality checks.
    let mut tracker = QualityTracker::new(QualityLimits::default());
    let start = cpu_s();
    for index in 0..BASELINE_FRAMES {
        let f = at(index);
        let ceus = f.gray_region(&layout.ceus, LumaRange::Full).expect("ceus");
        let bmode = f
            .gray_region(&layout.bmode, LumaRange::Full)
            .expect("bmode");
        std::hint::black_box(tracker.assess(index as f64 / FPS, &ceus, &bmode));
    }
    let baseline_ms = (cpu_s() - start) * 1e3 / BASELINE_FRAMES as f64;

    let mut exam = Exam::new(ExamSettings::default(), layout).expect("exam");
    exam.recorded_injection(0.0, INJECTION_S);
    let total = (EXAM_S * FPS) as u64;
    let start = cpu_s();
    for index in 0..total {
        std::hint::black_box(exam.process(&at(index)).expect("frame"));
    }
    let exam_ms = (cpu_s() - start) * 1e3 / total as f64;
    println!(
        "old path (two full decodes + quality), {BASELINE_FRAMES} frames: {baseline_ms:.2} ms CPU per frame"
    );
    println!(
        "Exam::process over a {EXAM_S} s exam at {FPS} fps ({total} frames, {} in the window, {} kept): {exam_ms:.2} ms CPU per frame",
        exam.window.counts.frames,
        exam.window.kept().len()
    );
    println!("ratio old / new: {:.1}", baseline_ms / exam_ms);
}
