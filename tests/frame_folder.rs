//! Recording a source to a frame folder and replaying it: same frames, same pixels, same
//! times; manifests that lie are refused.

use ceusd::capture::folder::{FolderReplay, Manifest, MANIFEST};
use ceusd::capture::record::{record, RecordLimit};
use ceusd::capture::replay::DicomReplay;
use ceusd::capture::source::{FrameSource, Pacing, SourceEvent};
use ceusd::capture::spec::SourceSpec;
use std::path::{Path, PathBuf};
use std::process::Command;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dicom")
        .join(name)
}

fn frames(src: &mut dyn FrameSource) -> Vec<ceusd::capture::frame::Frame> {
    let mut out = Vec::new();
    while let SourceEvent::Frame(f) = src.next_event().unwrap() {
        out.push(f);
    }
    out
}

#[test]
fn a_recorded_cine_replays_frame_for_frame() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exam");
    let mut src =
        DicomReplay::open(&data("examples_ybr_color.dcm"), Pacing::AsFastAsPossible).unwrap();
    let summary = record(&mut src, &out, RecordLimit::default()).unwrap();
    assert_eq!((summary.frames, summary.dropped), (30, 0));
    assert!((summary.fps - 30.0).abs() < 0.01, "{}", summary.fps);

    let original = frames(
        &mut DicomReplay::open(&data("examples_ybr_color.dcm"), Pacing::AsFastAsPossible).unwrap(),
    );
    let mut replay = FolderReplay::open(&out, Pacing::AsFastAsPossible).unwrap();
    assert!(replay.describe().starts_with("frames:"));
    let replayed = frames(&mut replay);
    assert!(matches!(replay.next_event().unwrap(), SourceEvent::End));
    assert_eq!(replayed.len(), original.len());
    for (a, b) in original.iter().zip(&replayed) {
        assert_eq!(
            (a.sequence, a.width, a.height, a.format),
            (b.sequence, b.width, b.height, b.format)
        );
        assert!(
            a.timestamp.abs_diff(b.timestamp).as_nanos() < 1000,
            "{:?} vs {:?}",
            a.timestamp,
            b.timestamp
        );
        assert!(a.data == b.data, "frame {} pixels differ", a.sequence);
    }
}

#[test]
fn limits_stop_the_recording_and_gaps_count_as_drops() {
    let dir = tempfile::tempdir().unwrap();
    let mut src =
        DicomReplay::open(&data("examples_ybr_color.dcm"), Pacing::AsFastAsPossible).unwrap();
    let s = record(
        &mut src,
        &dir.path().join("ten"),
        RecordLimit {
            frames: Some(10),
            seconds: None,
        },
    )
    .unwrap();
    assert_eq!(s.frames, 10);
    let mut src =
        DicomReplay::open(&data("examples_ybr_color.dcm"), Pacing::AsFastAsPossible).unwrap();
    let s = record(
        &mut src,
        &dir.path().join("half"),
        RecordLimit {
            frames: None,
            seconds: Some(0.5),
        },
    )
    .unwrap();
    assert_eq!(s.frames, 16); // 0, 33.3, …, 500 ms
                              // A recording with frames missing in the middle: the replay counts them as dropped.
    let half = dir.path().join("half");
    let mut m = Manifest::read(&half).unwrap();
    m.frames.retain(|f| f.sequence != 3 && f.sequence != 4);
    std::fs::write(half.join(MANIFEST), serde_json::to_string(&m).unwrap()).unwrap();
    assert_eq!(
        FolderReplay::open(&half, Pacing::AsFastAsPossible)
            .unwrap()
            .dropped(),
        2
    );
    // Never overwrite a recording.
    let mut src =
        DicomReplay::open(&data("examples_ybr_color.dcm"), Pacing::AsFastAsPossible).unwrap();
    let e = record(&mut src, &half, RecordLimit::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not empty"), "{e}");
}

#[test]
fn manifests_that_lie_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec");
    let mut src =
        DicomReplay::open(&data("mono2_multiframe.dcm"), Pacing::AsFastAsPossible).unwrap();
    record(&mut src, &out, RecordLimit::default()).unwrap();
    let good = std::fs::read_to_string(out.join(MANIFEST)).unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            good.replacen("\"timestamp_s\": 0.04", "\"timestamp_s\": -1.0", 1),
            "not a time from the start",
        ),
        (
            good.replacen("\"timestamp_s\": 0.08", "\"timestamp_s\": 0.01", 1),
            "goes back in time",
        ),
        (
            good.replacen("00000002.png", "../secret.png", 1),
            "not a plain file name",
        ),
        (good.replacen("00000002.png", "00000009.png", 1), "missing"),
        (
            good.replacen("\"sequence\": 2", "\"sequence\": 1", 1),
            "does not increase",
        ),
        (
            good.replacen("\"format_version\": 1", "\"format_version\": 7", 1),
            "format_version 7",
        ),
        (
            good.replacen("\"dropped\"", "\"droped\"", 1),
            "unknown field",
        ),
        ("{".to_string(), "not a frame manifest"),
    ];
    for (text, expect) in cases {
        assert_ne!(text, good, "case '{expect}' did not change the manifest");
        std::fs::write(out.join(MANIFEST), &text).unwrap();
        let e = FolderReplay::open(&out, Pacing::AsFastAsPossible)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(expect), "expected '{expect}': {e}");
    }
}

#[test]
fn source_syntax_names_what_is_wrong() {
    assert_eq!(
        "dicom:a.dcm".parse::<SourceSpec>().unwrap(),
        SourceSpec::Dicom("a.dcm".into())
    );
    assert_eq!(
        "frames:dir/".parse::<SourceSpec>().unwrap(),
        SourceSpec::Frames("dir/".into())
    );
    assert!("exam.dcm"
        .parse::<SourceSpec>()
        .unwrap_err()
        .contains("KIND:WHERE"));
    assert!("dicom:"
        .parse::<SourceSpec>()
        .unwrap_err()
        .contains("nothing after"));
    assert!("rtsp:cam"
        .parse::<SourceSpec>()
        .unwrap_err()
        .contains("'rtsp'"));
}

#[test]
fn the_capture_command_records_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap");
    let o = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(["capture", "--source"])
        .arg(format!("dicom:{}", data("mono2_multiframe.dcm").display()))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("recorded 5 frames over 0.16 s (25.00 fps), 0 dropped"),
        "{text}"
    );
    let replay = FolderReplay::open(&out, Pacing::AsFastAsPossible).unwrap();
    assert_eq!(replay.manifest().frames.len(), 5);
    assert!(replay.manifest().source.contains("mono2_multiframe.dcm"));
}

#[test]
fn the_injection_time_survives_recording() {
    use dicom_core::{dicom_value, DataElement, VR};
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    let mut obj = dicom_object::open_file(data("mono2_multiframe.dcm")).unwrap();
    obj.put(DataElement::new(
        tags::ACQUISITION_TIME,
        VR::TM,
        dicom_value!(Strs, ["120000"]),
    ));
    obj.put(DataElement::new(
        tags::CONTRAST_BOLUS_START_TIME,
        VR::TM,
        dicom_value!(Strs, ["115956"]),
    ));
    let cine = dir.path().join("bolus.dcm");
    obj.write_to_file(&cine).unwrap();
    let mut src = DicomReplay::open(&cine, Pacing::AsFastAsPossible).unwrap();
    record(&mut src, &dir.path().join("rec"), RecordLimit::default()).unwrap();
    let replay = FolderReplay::open(&dir.path().join("rec"), Pacing::AsFastAsPossible).unwrap();
    assert_eq!(replay.injection_offset_s(), Some(-4.0));
}
