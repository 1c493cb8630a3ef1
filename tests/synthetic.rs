//! The synthetic scanner: deterministic frames, ground truth that matches the picture, the
//! contrast time-intensity curve, PDAC-like vs CP-like enhancement, and the faults it can play.

use ceusd::capture::frame::{Frame, LumaRange};
use ceusd::capture::source::{Pacing, SourceEvent};
use ceusd::capture::spec::SourceSpec;
use ceusd::capture::synthetic::{parse_spec, LesionKind, Span, SyntheticConfig, SyntheticScanner};
use ceusd::roi::Roi;

fn config(kind: LesionKind, seed: u64) -> SyntheticConfig {
    SyntheticConfig {
        width: 640,
        height: 360,
        fps: 2.0,
        duration_s: 60.0,
        ..SyntheticConfig::new(kind, seed)
    }
}

fn scanner(c: SyntheticConfig) -> SyntheticScanner {
    SyntheticScanner::new(c, Pacing::AsFastAsPossible).unwrap()
}

fn mean(frame: &Frame, r: &Roi) -> f64 {
    let g = frame.gray_region(r, LumaRange::Full).unwrap();
    g.as_raw().iter().map(|v| *v as f64).sum::<f64>() / g.as_raw().len() as f64
}

/// The inner part of the lesion box, and parenchyma at the same depth beside the lesion.
fn lesion_and_parenchyma(s: &SyntheticScanner) -> (Roi, Roi) {
    let t = s.truth();
    let b = t.lesion_ceus;
    let lesion = Roi {
        x: b.x + b.width * 2 / 5,
        y: b.y + b.height * 2 / 5,
        width: b.width / 5,
        height: b.height / 5,
    };
    let pane = t.ceus_pane;
    let parenchyma = Roi {
        x: pane.x + pane.width / 50,
        y: lesion.y,
        width: pane.width / 20,
        height: lesion.height,
    };
    (lesion, parenchyma)
}

#[test]
fn frames_are_deterministic_and_independent_of_order() {
    let mut a = scanner(config(LesionKind::Pdac, 5));
    let mut b = scanner(config(LesionKind::Pdac, 5));
    let direct = b.frame(70).data;
    for i in 0..3 {
        a.frame(i);
    }
    assert!(
        a.frame(70).data == direct,
        "frame 70 depends on what was rendered before"
    );
    let other = scanner(config(LesionKind::Pdac, 6)).render(70);
    assert!(other != direct, "another seed must give another exam");
}

#[test]
fn ground_truth_places_the_lesion_in_both_panes() {
    for seed in 0..20 {
        for kind in [LesionKind::Pdac, LesionKind::Cp] {
            let s = scanner(config(kind, seed));
            let t = s.truth();
            t.bmode_pane.check_within(640, 360).unwrap();
            t.ceus_pane.check_within(640, 360).unwrap();
            assert!(
                t.ceus_pane.x >= t.bmode_pane.x + t.bmode_pane.width,
                "CEUS pane right of B-mode"
            );
            // Same place on both panes.
            assert_eq!(
                t.lesion_ceus.x - t.ceus_pane.x,
                t.lesion_bmode.x - t.bmode_pane.x
            );
            assert_eq!(
                (t.lesion_ceus.y, t.lesion_ceus.width, t.lesion_ceus.height),
                (
                    t.lesion_bmode.y,
                    t.lesion_bmode.width,
                    t.lesion_bmode.height
                )
            );
            // Each lesion box lies inside its own pane.
            for (lesion, pane) in [(t.lesion_bmode, t.bmode_pane), (t.lesion_ceus, t.ceus_pane)] {
                assert!(lesion.x >= pane.x && lesion.x + lesion.width <= pane.x + pane.width);
                assert!(lesion.y >= pane.y && lesion.y + lesion.height <= pane.y + pane.height);
            }
            assert!(t.arrival_s - t.injection_s >= 10.0 && t.arrival_s - t.injection_s <= 20.0);
        }
    }
}

#[test]
fn contrast_arrives_peaks_and_washes_out() {
    let mut s = scanner(config(LesionKind::Cp, 11));
    let (_, parenchyma) = lesion_and_parenchyma(&s);
    let arrival = s.truth().arrival_s;
    let at = |s: &mut SyntheticScanner, t: f64| mean(&s.frame((t * 2.0) as u64), &parenchyma);
    let before = at(&mut s, arrival - 2.0);
    let peak = at(&mut s, arrival + 12.0);
    let late = at(&mut s, 59.0);
    assert!(before < 15.0, "pre-contrast CEUS should be dark: {before}");
    assert!(
        peak > 5.0 * before && peak > 80.0,
        "peak {peak} vs baseline {before}"
    );
    assert!(
        late < peak && late > before,
        "wash-out: {late} between {before} and {peak}"
    );
    // B-mode does not change with contrast.
    let b = s.truth().bmode_pane;
    let (b0, b1) = (mean(&s.frame(2), &b), mean(&s.frame(100), &b));
    assert!((b0 - b1).abs() < 0.05 * b0, "B-mode {b0} vs {b1}");
}

#[test]
fn pdac_like_lesions_are_hypo_enhancing_and_cp_like_iso_enhancing() {
    for seed in 0..6 {
        let ratio = |kind| {
            let mut s = scanner(config(kind, seed));
            let (lesion, parenchyma) = lesion_and_parenchyma(&s);
            let f = s.frame(70); // 35 s
            mean(&f, &lesion) / mean(&f, &parenchyma)
        };
        let (pdac, cp) = (ratio(LesionKind::Pdac), ratio(LesionKind::Cp));
        assert!(
            pdac < 0.75,
            "seed {seed}: PDAC-like lesion/parenchyma {pdac}"
        );
        assert!(
            cp > 0.85 && cp < 1.15,
            "seed {seed}: CP-like lesion/parenchyma {cp}"
        );
    }
}

#[test]
fn frozen_black_and_motion_segments_play_as_configured() {
    let mut c = config(LesionKind::Pdac, 2);
    c.frozen = vec![Span {
        start_s: 10.0,
        end_s: 12.0,
    }];
    c.black = vec![Span {
        start_s: 20.0,
        end_s: 21.0,
    }];
    c.motion = vec![Span {
        start_s: 30.0,
        end_s: 34.0,
    }];
    let mut s = scanner(c);
    let live = s.frame(19).data; // 9.5 s, the last live frame before the freeze
    assert!(
        s.frame(20).data == live && s.frame(23).data == live,
        "frozen frames repeat the last live one"
    );
    assert!(s.frame(24).data != live, "live again after the freeze");
    assert!(s.frame(40).data.iter().all(|v| *v == 0) && s.frame(41).data.iter().all(|v| *v == 0));
    let still = scanner(config(LesionKind::Pdac, 2));
    let moving = s.frame(62); // 31 s, inside the motion episode
    let resting = still.render(62);
    let still_frame = Frame {
        data: resting,
        ..moving.clone()
    };
    let diff = |a: &Frame, b: &Frame| {
        let (x, y) = (
            a.gray_region(&still.truth().lesion_bmode, LumaRange::Full)
                .unwrap(),
            b.gray_region(&still.truth().lesion_bmode, LumaRange::Full)
                .unwrap(),
        );
        x.as_raw()
            .iter()
            .zip(y.as_raw())
            .map(|(p, q)| (*p as f64 - *q as f64).abs())
            .sum::<f64>()
            / x.as_raw().len() as f64
    };
    assert!(
        diff(&moving, &still_frame) > 5.0,
        "the probe moved, the lesion must have moved"
    );
    // Outside the episode the two exams are identical.
    assert!(s.frame(90).data == still.render(90));
}

#[test]
fn the_source_ends_and_parses_its_options() {
    let spec: SourceSpec = "synthetic:cp?seed=4&size=320x240&fps=5&duration=2&injection=0.5"
        .parse()
        .unwrap();
    let mut src = spec.open(Pacing::AsFastAsPossible).unwrap();
    let mut n = 0;
    while let SourceEvent::Frame(f) = src.next_event().unwrap() {
        assert_eq!((f.width, f.height, f.sequence), (320, 240, n));
        n += 1;
    }
    assert_eq!(n, 10);
    assert_eq!(src.injection_offset_s(), Some(0.5));
    for (bad, expect) in [
        ("pdac?speed=3", "unknown option 'speed'"),
        ("pdac?size=12", "expected WxH"),
        ("pdac?size=100x100", "expected 320x240"),
        ("pdac?motion=5", "expected START-END"),
        ("pdac?frozen=9-3", "empty"),
        ("liver", "unknown lesion kind"),
    ] {
        let e = parse_spec(bad).unwrap_err();
        assert!(e.contains(expect), "{bad}: {e}");
    }
}

#[test]
fn the_synth_command_writes_a_replayable_exam_with_its_ground_truth() {
    use ceusd::capture::folder::FolderReplay;
    use ceusd::capture::source::FrameSource;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exam");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args([
            "synth",
            "--kind",
            "cp",
            "--seed",
            "9",
            "--duration",
            "3",
            "--size",
            "320x240",
            "--fps",
            "4",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ground_truth.json")).unwrap())
            .unwrap();
    assert_eq!(truth["kind"], "cp");
    assert_eq!(truth["seed"], 9);
    let mut replay = FolderReplay::open(&out, Pacing::AsFastAsPossible).unwrap();
    assert_eq!(replay.manifest().frames.len(), 12);
    assert_eq!(replay.injection_offset_s(), Some(5.0));
    let first = match replay.next_event().unwrap() {
        SourceEvent::Frame(f) => f,
        other => panic!("{other:?}"),
    };
    let direct = scanner(SyntheticConfig {
        width: 320,
        height: 240,
        fps: 4.0,
        duration_s: 3.0,
        ..SyntheticConfig::new(LesionKind::Cp, 9)
    })
    .render(0);
    assert!(
        first.data == direct,
        "the folder holds the scanner's frames"
    );
}

#[test]
fn every_capture_format_carries_the_same_picture() {
    use ceusd::capture::frame::PixelFormat;
    use ceusd::pixels::gray_from_rgb;
    let base = config(LesionKind::Pdac, 8);
    let reference = scanner(base.clone());
    let rgb = image::RgbImage::from_raw(640, 360, reference.render(80)).unwrap();
    let t = reference.truth();
    for pane in [t.bmode_pane, t.ceus_pane] {
        let want = gray_from_rgb(&pane.crop(&rgb).unwrap());
        for format in PixelFormat::ALL {
            let mut s = scanner(SyntheticConfig {
                format,
                ..base.clone()
            });
            let f = s.frame(80);
            assert_eq!(f.format, format);
            let got = f.gray_region(&pane, LumaRange::Limited).unwrap();
            let diffs: Vec<i32> = got
                .as_raw()
                .iter()
                .zip(want.as_raw())
                .map(|(a, b)| *a as i32 - *b as i32)
                .collect();
            let max = diffs.iter().map(|d| d.abs()).max().unwrap();
            let mean = diffs.iter().map(|d| d.abs() as f64).sum::<f64>() / diffs.len() as f64;
            match format {
                // Lossless paths.
                PixelFormat::Rgb24 | PixelFormat::Bgr24 | PixelFormat::Grey => {
                    assert_eq!(max, 0, "{format}")
                }
                // 8-bit limited-range luma holds 220 levels: expanding it back rounds by one.
                PixelFormat::Yuyv | PixelFormat::Uyvy | PixelFormat::Nv12 => {
                    assert!(max <= 1, "{format}: max {max}")
                }
                // Lossy; speckle is the hardest case for JPEG.
                PixelFormat::Mjpeg => assert!(mean < 4.0, "{format}: mean {mean}"),
            }
        }
    }
}

#[test]
fn a_synthetic_exam_written_as_dicom_replays_with_its_timing_and_injection() {
    use ceusd::capture::replay::DicomReplay;
    use ceusd::capture::source::FrameSource;
    let dir = tempfile::tempdir().unwrap();
    for omit in [false, true] {
        let out = dir.path().join(format!("exam-{omit}.dcm"));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ceusd"));
        cmd.args([
            "synth",
            "--kind",
            "pdac",
            "--seed",
            "12",
            "--duration",
            "3",
            "--size",
            "320x240",
            "--fps",
            "4",
            "--out",
        ])
        .arg(&out);
        if omit {
            cmd.arg("--omit-injection-tag");
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(out.with_extension("ground_truth.json").is_file());
        let mut replay = DicomReplay::open(&out, Pacing::AsFastAsPossible).unwrap();
        assert_eq!(replay.timing().source, "Frame Time");
        assert_eq!(
            replay.injection_offset_s(),
            if omit { None } else { Some(5.0) }
        );
        let reference = scanner(SyntheticConfig {
            width: 320,
            height: 240,
            fps: 4.0,
            duration_s: 3.0,
            ..SyntheticConfig::new(LesionKind::Pdac, 12)
        });
        let mut n = 0u64;
        while let SourceEvent::Frame(f) = replay.next_event().unwrap() {
            assert!((f.timestamp.as_secs_f64() - n as f64 * 0.25).abs() < 1e-6);
            let want = Frame {
                data: reference.render(n),
                ..f.clone()
            };
            let full = Roi::full(320, 240);
            let (a, b) = (
                f.gray_region(&full, LumaRange::Full).unwrap(),
                want.gray_region(&full, LumaRange::Full).unwrap(),
            );
            let mean = a
                .as_raw()
                .iter()
                .zip(b.as_raw())
                .map(|(p, q)| (*p as f64 - *q as f64).abs())
                .sum::<f64>()
                / a.as_raw().len() as f64;
            assert!(mean < 4.0, "frame {n}: mean |diff| {mean} after JPEG");
            n += 1;
        }
        assert_eq!(n, 12);
    }
}
