//! The timing path on seeded synthetic exams: the contrast clock from a mark, a recorded time
//! and detected arrival; the key frame and the window's frames; the warnings and refusals of
//! bad video; scores of a trained model; rescoring with a new ROI.

use candle_core::Device;
use ceusd::capture::source::{FrameSource, Pacing, SourceEvent};
use ceusd::capture::synthetic::{GroundTruth, LesionKind, Span, SyntheticConfig, SyntheticScanner};
use ceusd::capture::InputError;
use ceusd::exam::{Exam, ExamSettings};
use ceusd::exam_lifecycle::{
    run_offline, Effect, ExamLifecycle, ExamSetup, InjectionHint, Recorded,
};
use ceusd::layout::{Layout, Presets};
use ceusd::model::DlrModel;
use ceusd::rng::SplitMix64;
use ceusd::timing::ClockSource;

fn small(kind: LesionKind, seed: u64, injection_s: f64, after_s: f64) -> SyntheticConfig {
    let mut c = SyntheticConfig::new(kind, seed);
    c.width = 320;
    c.height = 240;
    c.fps = 10.0;
    c.injection_s = injection_s;
    c.duration_s = injection_s + after_s;
    c
}

fn run(
    config: SyntheticConfig,
    settings: ExamSettings,
    hint: InjectionHint,
) -> (Exam, GroundTruth) {
    let mut scanner = SyntheticScanner::new(config, Pacing::AsFastAsPossible).unwrap();
    let truth = scanner.truth().clone();
    let layout = Layout {
        bmode: truth.bmode_pane,
        ceus: truth.ceus_pane,
    };
    let exam = run_offline(
        &mut scanner,
        settings,
        Some(layout),
        &Presets::default(),
        hint,
        Some(truth.lesion_bmode),
        |_| {},
    )
    .unwrap();
    (exam, truth)
}

fn untrained() -> DlrModel {
    DlrModel::seeded(7, 3, &Device::Cpu).unwrap()
}

#[test]
fn injection_from_a_mark_or_a_recorded_time_is_exact() {
    let (exam, truth) = run(
        small(LesionKind::Cp, 1, 6.5, 12.0),
        ExamSettings::default(),
        InjectionHint::default(),
    );
    let i = exam.clock.injection().unwrap();
    assert_eq!(
        (i.at_s, i.source, i.estimated),
        (truth.injection_s, ClockSource::Recorded, false)
    );

    let (exam, _) = run(
        small(LesionKind::Cp, 1, 6.5, 12.0),
        ExamSettings::default(),
        InjectionHint {
            marked_at_s: Some(7.25),
        },
    );
    let i = exam.clock.injection().unwrap();
    assert_eq!((i.at_s, i.source), (7.25, ClockSource::Manual));
    // The mark stays: the arrival detected later (recorded time ignored or not) is worse.
    assert_eq!(exam.clock.switches.len(), 1);
}

/// A source whose clock started long before the exam, as V4L2's monotonic timestamps do: the
/// recorded injection is on that same clock, and the exam must read it so.
struct LateClock {
    inner: SyntheticScanner,
    shift: std::time::Duration,
}

impl FrameSource for LateClock {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn next_event(&mut self) -> Result<SourceEvent, InputError> {
        let mut event = self.inner.next_event()?;
        if let SourceEvent::Frame(frame) = &mut event {
            frame.timestamp += self.shift;
        }
        Ok(event)
    }
    fn injection_offset_s(&self) -> Option<f64> {
        self.inner
            .injection_offset_s()
            .map(|at| at + self.shift.as_secs_f64())
    }
}

#[test]
fn a_recorded_injection_is_read_on_the_frames_own_clock_whatever_its_origin() {
    let statuses = |shift_s: u64| {
        let config = small(LesionKind::Pdac, 4, 6.5, 45.0);
        let inner = SyntheticScanner::new(config, Pacing::AsFastAsPossible).unwrap();
        let truth = inner.truth().clone();
        let layout = Layout {
            bmode: truth.bmode_pane,
            ceus: truth.ceus_pane,
        };
        let mut source = LateClock {
            inner,
            shift: std::time::Duration::from_secs(shift_s),
        };
        let mut seen = Vec::new();
        let exam = run_offline(
            &mut source,
            ExamSettings::default(),
            Some(layout),
            &Presets::default(),
            InjectionHint::default(),
            Some(truth.lesion_bmode),
            |s| seen.push((s.phase, s.elapsed_s, s.in_window)),
        )
        .unwrap();
        let injection = exam.clock.injection().unwrap();
        assert_eq!(injection.source, ClockSource::Recorded);
        assert!(
            (injection.at_s - shift_s as f64 - truth.injection_s).abs() < 1e-6,
            "injection at {} on a clock shifted by {shift_s} s; the scanner injected at {}",
            injection.at_s,
            truth.injection_s
        );
        seen
    };
    // A day of uptime before the exam, against a clock that starts at the first frame.
    let from_zero = statuses(0);
    let from_a_day = statuses(86_400);
    assert_eq!(from_zero.len(), from_a_day.len());
    for (i, (a, b)) in from_zero.iter().zip(&from_a_day).enumerate() {
        assert_eq!((a.0, a.2), (b.0, b.2), "frame {i}: phase or window differ");
        let (ea, eb) = (a.1.unwrap(), b.1.unwrap());
        assert!(
            (ea - eb).abs() < 1e-6,
            "frame {i}: {ea} s vs {eb} s since injection"
        );
    }
    assert!(
        from_zero.iter().any(|s| s.2),
        "the exam reached its key-frame window"
    );
}

/// The daemon drives the exam lifecycle frame by frame (started by a command, the recorded
/// injection handed in with each frame, stopped when its time is over); `analyze` drives it
/// through `run_offline`. On a clock that started a day before the exam, both must read the
/// same injection and give every frame the same time since it.
#[test]
fn the_daemons_lifecycle_and_analyze_agree_on_the_clock_of_a_late_clock_source() {
    let source = || {
        let config = small(LesionKind::Pdac, 4, 6.5, 45.0);
        let inner = SyntheticScanner::new(config, Pacing::AsFastAsPossible).unwrap();
        let truth = inner.truth().clone();
        let shift = std::time::Duration::from_secs(86_400);
        (LateClock { inner, shift }, truth)
    };
    let (mut offline_source, truth) = source();
    let layout = Layout {
        bmode: truth.bmode_pane,
        ceus: truth.ceus_pane,
    };
    let mut offline = Vec::new();
    let analyzed = run_offline(
        &mut offline_source,
        ExamSettings::default(),
        Some(layout),
        &Presets::default(),
        InjectionHint::default(),
        Some(truth.lesion_bmode),
        |s| offline.push(*s),
    )
    .unwrap();

    let (mut live_source, _) = source();
    let setup = ExamSetup {
        settings: ExamSettings::default(),
        layout: Some(layout),
        presets: Presets::default(),
        speed: 1.0,
        follow_recorded_exams: true,
        stop_when_over: true,
    };
    let mut lifecycle = ExamLifecycle::new(setup, Some("exam-0".into()), vec!["exam-0".into()]);
    let plan = lifecycle.plan_start(None, "exam-1".into()).unwrap();
    assert_eq!(plan.clears(), Some("exam-0"));
    lifecycle.begin(plan);
    let mut live = Vec::new();
    let mut results = Vec::new();
    while let SourceEvent::Frame(frame) = live_source.next_event().unwrap() {
        lifecycle.frame(
            &frame,
            Recorded::of(&live_source),
            std::time::Instant::now(),
        );
        for effect in lifecycle.take_effects() {
            match effect {
                Effect::Timing { status, .. } => live.push(status),
                Effect::Score(request) => results.push(request),
                _ => {}
            }
        }
    }
    let injection = lifecycle.exam().unwrap().clock.injection().unwrap();
    assert_eq!(injection.source, ClockSource::Recorded);
    assert!((injection.at_s - 86_400.0 - truth.injection_s).abs() < 1e-6);
    assert_eq!(
        Some(injection),
        analyzed.clock.injection(),
        "the daemon and analyze disagree on the injection"
    );
    assert_eq!(
        live, offline,
        "the daemon and analyze disagree on a frame's timing"
    );
    // The window closed once: one result asked for, of the exam as it stood then.
    assert_eq!(results.len(), 1);
    assert_eq!(
        (results[0].result_id.as_str(), results[0].revision),
        ("exam-1-r1", 1)
    );
    let kept = |e: &Exam| {
        e.window
            .kept()
            .iter()
            .map(|c| c.sequence)
            .collect::<Vec<_>>()
    };
    assert_eq!(kept(results[0].exam.as_ref().unwrap()), kept(&analyzed));
}

#[test]
fn a_detected_arrival_overrides_nothing_better_and_a_mark_overrides_it() {
    let settings = ExamSettings {
        use_recorded_injection: false,
        ..Default::default()
    };
    let (mut exam, truth) = run(
        small(LesionKind::Pdac, 2, 4.0, 20.0),
        settings,
        InjectionHint::default(),
    );
    let auto = exam.clock.injection().unwrap();
    assert_eq!(auto.source, ClockSource::Automatic);
    assert!(auto.estimated);
    exam.mark_injection(
        exam.last_s.unwrap(),
        exam.last_s.unwrap() - truth.injection_s,
    );
    let marked = exam.clock.injection().unwrap();
    assert_eq!(
        (marked.at_s, marked.source),
        (truth.injection_s, ClockSource::Manual)
    );
    let switch = exam.clock.switches.last().unwrap();
    assert_eq!(switch.from.unwrap().source, ClockSource::Automatic);
}

/// Arrival detection over 60 seeded exams: injection between 3 and 12 s after the start,
/// transit 15 s (the configured delay, so the error is the detector's), both lesion kinds, a
/// probe-motion episode before the window in every third exam, and each exam's own speckle.
#[test]
fn detected_arrival_puts_the_injection_within_2_s_in_most_exams() {
    let mut errors = Vec::new();
    for seed in 0..60u64 {
        let mut rng = SplitMix64(seed ^ 0xA11);
        let injection = 3.0 + 9.0 * rng.unit();
        let kind = if seed % 2 == 0 {
            LesionKind::Pdac
        } else {
            LesionKind::Cp
        };
        let mut config = small(kind, 100 + seed, injection, 32.0);
        config.transit_s = Some(15.0);
        if seed % 3 == 0 {
            let start = injection + 20.0 + 5.0 * rng.unit();
            config.motion = vec![Span {
                start_s: start,
                end_s: start + 3.0,
            }];
        }
        let settings = ExamSettings {
            use_recorded_injection: false,
            ..Default::default()
        };
        let (exam, truth) = run(config, settings, InjectionHint::default());
        let error = exam
            .clock
            .injection()
            .map(|i| i.at_s - truth.injection_s)
            .unwrap_or(f64::INFINITY);
        errors.push(error);
    }
    let mut sorted: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
    sorted.sort_by(f64::total_cmp);
    let within = sorted.iter().filter(|e| **e <= 2.0).count();
    let mean_signed = errors.iter().filter(|e| e.is_finite()).sum::<f64>() / errors.len() as f64;
    eprintln!(
        "arrival detection over {} exams: {} within 2 s; |error| median {:.2} s, 90th percentile {:.2} s, max {:.2} s; mean signed error {:+.2} s",
        errors.len(),
        within,
        sorted[sorted.len() / 2],
        sorted[sorted.len() * 9 / 10],
        sorted[sorted.len() - 1],
        mean_signed
    );
    assert!(
        within * 100 >= errors.len() * 90,
        "{within} of {} within 2 s",
        errors.len()
    );
}

#[test]
fn the_key_frame_lies_in_the_window_and_never_in_motion_or_a_frozen_image() {
    for seed in 0..3u64 {
        let injection = 1.0;
        // The scanner's own frame size: probe sway of 2% of the width is below what a
        // 320-pixel frame resolves against the synthetic speckle.
        let mut config = SyntheticConfig::new(LesionKind::Pdac, 300 + seed);
        config.fps = 8.0;
        config.injection_s = injection;
        config.duration_s = injection + 42.0;
        let motion = Span {
            start_s: injection + 32.0 + seed as f64 * 0.3,
            end_s: injection + 35.5,
        };
        let frozen = Span {
            start_s: injection + 36.5,
            end_s: injection + 38.0,
        };
        config.motion = vec![motion];
        config.frozen = vec![frozen];
        let (exam, _) = run(config, ExamSettings::default(), InjectionHint::default());
        let result = exam
            .result(
                &untrained(),
                &exam.layout.bmode_to_ceus(&exam_roi(&exam)).unwrap(),
            )
            .unwrap();
        let key = result.key_frame.as_ref().expect("a key frame");
        assert!(
            (30.0..=40.0).contains(&key.elapsed_s),
            "seed {seed}: key at {}",
            key.elapsed_s
        );
        for f in &result.frames {
            assert!(
                !motion.contains(f.at_s) && !frozen.contains(f.at_s),
                "seed {seed}: frame at {} s",
                f.at_s
            );
            assert!((30.0..=40.0).contains(&f.elapsed_s));
        }
        assert!(
            result.frames.len() >= 2,
            "seed {seed}: {} frames kept",
            result.frames.len()
        );
        assert!(
            result.warnings.iter().any(|w| w.contains("probe moving")),
            "{:?}",
            result.warnings
        );
        assert!(
            result.warnings.iter().any(|w| w.contains("frozen")),
            "{:?}",
            result.warnings
        );
    }
}

fn exam_roi(exam: &Exam) -> ceusd::roi::Roi {
    // A ROI in the middle of the B-mode pane.
    let b = exam.layout.bmode;
    ceusd::roi::Roi::new(
        b.x + b.width / 3,
        b.y + b.height / 3,
        b.width / 3,
        b.height / 3,
    )
}

#[test]
fn frozen_or_black_windows_and_short_clips_give_no_score_and_say_why() {
    let model = untrained();
    type Change = Box<dyn Fn(&mut SyntheticConfig)>;
    let cases: [(&str, Change, &str); 3] = [
        (
            "frozen",
            Box::new(|c| {
                c.frozen = vec![Span {
                    start_s: c.injection_s + 25.0,
                    end_s: 1e3,
                }]
            }),
            "frozen",
        ),
        (
            "black",
            Box::new(|c| {
                c.black = vec![Span {
                    start_s: c.injection_s + 29.0,
                    end_s: 1e3,
                }]
            }),
            "black",
        ),
        (
            "short",
            Box::new(|c| c.duration_s = c.injection_s + 22.0),
            "before the key-frame window",
        ),
    ];
    for (name, change, expected) in cases {
        let mut config = small(LesionKind::Cp, 7, 5.0, 45.0);
        change(&mut config);
        let (exam, truth) = run(config, ExamSettings::default(), InjectionHint::default());
        let result = exam.result(&model, &truth.lesion_bmode).unwrap();
        assert_eq!(result.score, None, "{name}");
        assert!(result.frames.is_empty(), "{name}");
        let reason = result.reason.unwrap();
        assert!(reason.contains(expected), "{name}: {reason}");
    }
}

#[test]
fn a_clip_without_timing_gives_no_score() {
    // No recorded time, no mark, and the clip ends before contrast arrives.
    let settings = ExamSettings {
        use_recorded_injection: false,
        ..Default::default()
    };
    let mut config = small(LesionKind::Pdac, 9, 5.0, 8.0);
    config.transit_s = Some(15.0);
    let (exam, truth) = run(config, settings, InjectionHint::default());
    let result = exam.result(&untrained(), &truth.lesion_bmode).unwrap();
    assert_eq!(result.score, None);
    assert!(result.reason.unwrap().contains("timing unknown"));
}

/// The demo model (trained on synthetic ROIs at the scanner's default size) on whole exams:
/// PDAC-like above the threshold and CP-like below, for the key frame and the window's median.
/// Then a new ROI re-scores the kept frames without another pass over the video.
#[test]
fn a_trained_model_separates_whole_exams_and_rescoring_uses_the_kept_frames() {
    let model = ceusd::model::demo::demo_model(&Device::Cpu).unwrap();
    for (kind, seed) in [
        (LesionKind::Pdac, 6001),
        (LesionKind::Cp, 6001),
        (LesionKind::Pdac, 6002),
        (LesionKind::Cp, 6002),
    ] {
        let mut config = SyntheticConfig::new(kind, seed);
        config.fps = 5.0;
        config.duration_s = config.injection_s + 41.0;
        let (exam, truth) = run(config, ExamSettings::default(), InjectionHint::default());
        let result = exam.result(&model, &truth.lesion_bmode).unwrap();
        let (key, median) = (result.score.unwrap(), result.spread.median.unwrap());
        eprintln!(
            "{kind:?} seed {seed}: key frame {key:.4}, median {median:.4} of {} frames",
            result.frames.len()
        );
        let pdac = kind == LesionKind::Pdac;
        assert_eq!(key >= 0.5, pdac, "{kind:?} {seed}: key {key}");
        assert_eq!(median >= 0.5, pdac, "{kind:?} {seed}: median {median}");
        assert_eq!(
            result.roi,
            Some(truth.lesion_ceus),
            "the B-mode ROI maps to the CEUS lesion box"
        );

        // Rescore with a ROI away from the lesion: the same frames, other scores.
        let elsewhere =
            ceusd::roi::Roi::new(truth.ceus_pane.x + 10, truth.ceus_pane.y + 10, 120, 100);
        let again = exam.result(&model, &elsewhere).unwrap();
        let frames =
            |r: &ceusd::exam::ExamResult| r.frames.iter().map(|f| f.sequence).collect::<Vec<_>>();
        assert_eq!(frames(&again), frames(&result));
        assert_ne!(again.frames[0].score, result.frames[0].score);
        let heat = exam
            .key_frame_heatmap(&model, &truth.lesion_bmode)
            .unwrap()
            .unwrap();
        assert_eq!(
            heat.dimensions(),
            (truth.lesion_ceus.width, truth.lesion_ceus.height)
        );
        let outside = ceusd::roi::Roi::new(0, 0, 20, 20);
        assert!(exam
            .result(&model, &outside)
            .unwrap_err()
            .to_string()
            .contains("neither inside"));
    }
}

/// `ceusd analyze` on a DICOM cine written by `ceusd synth`: the injection comes from its
/// Contrast/Bolus Start Time, exactly; the cine ends before the window, so there is no score
/// and the reason says so. Without the tag, arrival detection takes over and says "estimated".
#[test]
fn analyze_on_a_dicom_cine_reads_the_injection_tag_and_reports_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let cine = dir.path().join("exam.dcm");
    let ceusd = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ceusd"))
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    ceusd(&[
        "synth",
        "--kind",
        "cp",
        "--seed",
        "3",
        "--duration",
        "26",
        "--size",
        "640x360",
        "--fps",
        "8",
        "--out",
        cine.to_str().unwrap(),
    ]);
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("exam.ground_truth.json")).unwrap(),
    )
    .unwrap();
    let b = &truth["lesion_bmode"];
    let roi = format!("{},{},{},{}", b["x"], b["y"], b["width"], b["height"]);
    let layouts = dir.path().join("layouts.toml");
    let pane =
        |p: &serde_json::Value| format!("{},{},{},{}", p["x"], p["y"], p["width"], p["height"]);
    std::fs::write(
        &layouts,
        format!(
            "[[preset]]\nname = \"synthetic-360p\"\nwidth = 640\nheight = 360\nbmode = \"{}\"\nceus = \"{}\"\n",
            pane(&truth["bmode_pane"]),
            pane(&truth["ceus_pane"])
        ),
    )
    .unwrap();
    let common = [
        cine.to_str().unwrap(),
        "--roi",
        &roi,
        "--layouts",
        layouts.to_str().unwrap(),
        "--json",
    ];
    let report: serde_json::Value =
        serde_json::from_str(&ceusd(&[&["analyze"][..], &common].concat())).unwrap();
    let result = &report["result"];
    assert_eq!(result["timing"]["clock_source"], "recorded");
    assert_eq!(
        result["timing"]["injection_s"].as_f64().unwrap(),
        truth["injection_s"].as_f64().unwrap()
    );
    assert_eq!(result["score"], serde_json::Value::Null);
    assert!(result["reason"]
        .as_str()
        .unwrap()
        .contains("before the key-frame window"));
    let phases: Vec<&str> = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "phase")
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["vascular"]);

    let detected: serde_json::Value = serde_json::from_str(&ceusd(
        &[&["analyze", "--ignore-recorded-injection"][..], &common].concat(),
    ))
    .unwrap();
    assert_eq!(detected["result"]["timing"]["clock_source"], "automatic");
    assert_eq!(detected["result"]["timing"]["estimated"], true);
    let error = detected["result"]["timing"]["injection_s"]
        .as_f64()
        .unwrap()
        - truth["injection_s"].as_f64().unwrap();
    let transit = truth["arrival_s"].as_f64().unwrap() - truth["injection_s"].as_f64().unwrap();
    // The estimate is off by the difference between the true transit and the assumed 15 s.
    assert!(
        (error - (transit - 15.0)).abs() < 1.0,
        "error {error}, transit {transit}"
    );
}
