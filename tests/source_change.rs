//! A source whose output changes size or pixel format during an exam (a scanner switching
//! preset, an HDMI link re-negotiating): the panes are found again, the exam goes on, and what
//! happened is in the timeline and the result's warnings.

use ceusd::capture::source::Pacing;
use ceusd::capture::synthetic::{LesionKind, SyntheticConfig, SyntheticScanner};
use ceusd::capture::synthetic_session::{parse_session_spec, SyntheticSession};
use ceusd::exam::{Exam, ExamSettings, TimelineEvent};
use ceusd::exam_lifecycle::{run_offline, InjectionHint};
use ceusd::layout::{Layout, Presets};

/// A PDAC-like exam at 1080p, injection at 5 s, whose output switches as `switch` says.
fn exam_with_switch(switch: &str) -> Exam {
    let spec = parse_session_spec(&format!(
        "pdac?seed=11&size=1920x1080&fps=2&duration=50&switch={switch}"
    ))
    .unwrap();
    let mut source = SyntheticSession::new(spec, Pacing::AsFastAsPossible).unwrap();
    run_offline(
        &mut source,
        ExamSettings::default(),
        None,
        &Presets::default(),
        InjectionHint::default(),
        None,
        |_| {},
    )
    .unwrap()
}

/// The synthetic scanner's panes at a size.
fn panes(width: u32, height: u32) -> Layout {
    let config = SyntheticConfig {
        width,
        height,
        ..SyntheticConfig::new(LesionKind::Pdac, 11)
    };
    let truth = SyntheticScanner::new(config, Pacing::AsFastAsPossible)
        .unwrap()
        .truth()
        .clone();
    Layout {
        bmode: truth.bmode_pane,
        ceus: truth.ceus_pane,
    }
}

#[test]
fn a_change_before_the_window_re_detects_the_panes_and_is_a_warning() {
    let exam = exam_with_switch("20:1280x720");
    assert_eq!(exam.layout, panes(1280, 720));
    let [change] = exam.source_changes.as_slice() else {
        panic!("one change expected: {:?}", exam.source_changes);
    };
    assert_eq!(
        change.to_string(),
        "source changed from 1920x1080 RGB3 to 1280x720 RGB3 at 15.0 s after injection; \
         panes re-detected"
    );
    // The window's frames are all of the new output, and there are K of them.
    let kept = exam.window.kept();
    assert_eq!(kept.len(), ExamSettings::default().keep);
    assert!(kept
        .iter()
        .all(|c| c.ceus_pane.dimensions() == (exam.layout.ceus.width, exam.layout.ceus.height)));
    let panes_events = exam
        .timeline
        .iter()
        .filter(|e| matches!(e, TimelineEvent::Panes { .. }))
        .count();
    assert_eq!(
        panes_events, 2,
        "found at the first frame and after the change"
    );
}

#[test]
fn a_change_inside_the_window_drops_the_frames_kept_before_it() {
    // Injection at 5 s: the window is 35–45 s of source time; the change comes at 40 s.
    let exam = exam_with_switch("40:1280x720:YUYV");
    let [change] = exam.source_changes.as_slice() else {
        panic!("one change expected: {:?}", exam.source_changes);
    };
    assert!(change.kept_dropped > 0, "{change}");
    assert!(
        change.to_string().contains("1280x720 YUYV")
            && change.to_string().contains("inside the key-frame window"),
        "{change}"
    );
    let kept = exam.window.kept();
    assert!(!kept.is_empty());
    assert!(kept.iter().all(|c| c.at_s >= 40.0), "only frames after it");
    assert_eq!(exam.layout, panes(1280, 720));
}

#[test]
fn a_change_after_the_window_keeps_the_kept_frames_and_their_roi_layout() {
    let exam = exam_with_switch("47:1280x720");
    let [change] = exam.source_changes.as_slice() else {
        panic!("one change expected: {:?}", exam.source_changes);
    };
    assert!(change.after_window && change.kept_dropped == 0, "{change}");
    assert_eq!(exam.window.kept().len(), ExamSettings::default().keep);
    // A ROI drawn on the window's (1080p) B-mode pane still maps onto its CEUS pane.
    let before = panes(1920, 1080);
    let roi = ceusd::roi::Roi::new(before.bmode.x + 300, before.bmode.y + 300, 200, 160);
    assert_eq!(
        exam.ceus_roi(&roi).unwrap(),
        before.bmode_to_ceus(&roi).unwrap()
    );
}

#[test]
fn a_bad_switch_is_refused_with_the_reason() {
    for (spec, expected) in [
        ("pdac?switch=20", "switch=20: expected SECONDS:WxH"),
        ("pdac?switch=x:1280x720", "expected SECONDS:WxH"),
        ("pdac?switch=20:100x100", "size 100x100"),
        ("pdac?switch=20:1280x720:ABCD", "ABCD"),
    ] {
        let e = parse_session_spec(spec).unwrap_err();
        assert!(e.contains(expected), "{spec}: {e}");
    }
}
