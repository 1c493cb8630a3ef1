//! Per-frame quality on a 1080p synthetic exam frame (the scanner's own picture, panes of
//! 864x878): thumbnail, frozen/black check, B-mode profiles and motion, sharpness. It runs on
//! every frame, so it must stay a small fraction of a 60 fps frame period (16.7 ms). The gray
//! conversion of the two panes is measured by `pixel_formats`.
//!
//! Run: `cargo bench --bench frame_quality`

use ceusd::capture::frame::LumaRange;
use ceusd::capture::source::Pacing;
use ceusd::capture::synthetic::{LesionKind, SyntheticConfig, SyntheticScanner};
use ceusd::quality::{sharpness, QualityTracker};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut config = SyntheticConfig::new(LesionKind::Pdac, 1);
    (config.width, config.height) = (1920, 1080);
    let mut scanner = SyntheticScanner::new(config, Pacing::AsFastAsPossible).expect("scanner");
    let truth = scanner.truth().clone();
    // Two seconds of frames in the key-frame window, so motion is measured against a second
    // earlier as in an exam.
    let panes: Vec<_> = (0..30)
        .map(|i| {
            let f = scanner.frame(40 * 15 + i);
            (
                f.gray_region(&truth.ceus_pane, LumaRange::Full)
                    .expect("ceus"),
                f.gray_region(&truth.bmode_pane, LumaRange::Full)
                    .expect("bmode"),
            )
        })
        .collect();
    let mut group = c.benchmark_group("frame quality, 1920x1080 frame");
    group.bench_function("assess (CEUS + B-mode panes)", |b| {
        let mut tracker = QualityTracker::default();
        for (i, (ceus, bmode)) in panes.iter().enumerate().take(20) {
            tracker.assess(i as f64 / 15.0, ceus, bmode);
        }
        let mut i = 20;
        b.iter(|| {
            let (ceus, bmode) = &panes[20 + i % 10];
            i += 1;
            black_box(tracker.assess(i as f64 / 15.0, ceus, bmode))
        })
    });
    group.bench_function("sharpness only (CEUS pane)", |b| {
        b.iter(|| black_box(sharpness(&panes[0].0)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
