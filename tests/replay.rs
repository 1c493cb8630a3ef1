//! DICOM cine replay: frame timing from the real pydicom cines and from every timing
//! attribute, the injection time, end of stream, and pacing.

use ceusd::capture::frame::PixelFormat;
use ceusd::capture::replay::{parse_tm, DicomReplay};
use ceusd::capture::source::{FrameSource, Pacing, SourceEvent};
use dicom_core::{dicom_value, DataElement, VR};
use dicom_dictionary_std::tags;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dicom")
        .join(name)
}

/// Drains a source: (sequence, timestamp, format, width, height) of every frame.
fn drain(src: &mut dyn FrameSource) -> Vec<(u64, Duration, PixelFormat, u32, u32)> {
    let mut out = Vec::new();
    loop {
        match src.next_event().unwrap() {
            SourceEvent::Frame(f) => {
                out.push((f.sequence, f.timestamp, f.format, f.width, f.height))
            }
            SourceEvent::End => break,
            SourceEvent::NoSignal { reason } => panic!("a file never loses its signal: {reason}"),
        }
    }
    // Ended sources stay ended.
    assert!(matches!(src.next_event().unwrap(), SourceEvent::End));
    out
}

fn assert_times(frames: &[(u64, Duration, PixelFormat, u32, u32)], step_ms: f64) {
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.0, i as u64);
        let want = i as f64 * step_ms / 1e3;
        assert!(
            (f.1.as_secs_f64() - want).abs() < 1e-6,
            "frame {i}: {:?} vs {want}",
            f.1
        );
    }
}

#[test]
fn pydicom_ultrasound_cines_replay_at_their_frame_time() {
    for name in ["examples_ybr_color.dcm", "color3d_jpeg_baseline_30f.dcm"] {
        let mut src = DicomReplay::open(&data(name), Pacing::AsFastAsPossible).unwrap();
        assert_eq!(src.timing().source, "Frame Time");
        assert_eq!(src.timing().injection_offset_s, None);
        assert!(src.describe().contains("30 frames"), "{}", src.describe());
        let frames = drain(&mut src);
        assert_eq!(frames.len(), 30, "{name}");
        assert_times(&frames, 33.333);
        assert!(frames.iter().all(|f| f.2 == PixelFormat::Rgb24));
    }
    let mut src =
        DicomReplay::open(&data("mono2_multiframe.dcm"), Pacing::AsFastAsPossible).unwrap();
    let frames = drain(&mut src);
    assert_eq!(frames.len(), 5);
    assert_times(&frames, 40.0);
    assert!(frames
        .iter()
        .all(|f| (f.2, f.3, f.4) == (PixelFormat::Grey, 64, 48)));
}

/// mono2_multiframe.dcm (5 frames, Frame Time 40 ms) with its timing attributes replaced.
fn variant(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut dicom_object::DefaultDicomObject),
) -> PathBuf {
    let mut obj = dicom_object::open_file(data("mono2_multiframe.dcm")).unwrap();
    obj.remove_element(tags::FRAME_TIME);
    edit(&mut obj);
    let out = dir.join(name);
    obj.write_to_file(&out).unwrap();
    out
}

#[test]
fn every_timing_attribute_is_honoured_and_none_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let vector = variant(dir.path(), "vector.dcm", |o| {
        o.put(DataElement::new(
            tags::FRAME_TIME_VECTOR,
            VR::DS,
            dicom_value!(Strs, ["0", "40", "50", "60", "40"]),
        ));
    });
    let mut src = DicomReplay::open(&vector, Pacing::AsFastAsPossible).unwrap();
    assert_eq!(src.timing().source, "Frame Time Vector");
    let t: Vec<f64> = drain(&mut src).iter().map(|f| f.1.as_secs_f64()).collect();
    let want = [0.0, 0.040, 0.090, 0.150, 0.190];
    assert!(
        t.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9),
        "{t:?}"
    );

    let rate = variant(dir.path(), "rate.dcm", |o| {
        o.put(DataElement::new(
            tags::CINE_RATE,
            VR::IS,
            dicom_value!(Strs, ["25"]),
        ));
    });
    let mut src = DicomReplay::open(&rate, Pacing::AsFastAsPossible).unwrap();
    assert_eq!(src.timing().source, "Cine Rate");
    assert_times(&drain(&mut src), 40.0);

    let short = variant(dir.path(), "short.dcm", |o| {
        o.put(DataElement::new(
            tags::FRAME_TIME_VECTOR,
            VR::DS,
            dicom_value!(Strs, ["0", "40"]),
        ));
    });
    let e = DicomReplay::open(&short, Pacing::AsFastAsPossible)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("2 values for 5 frames"), "{e}");

    let none = variant(dir.path(), "none.dcm", |_| {});
    let e = DicomReplay::open(&none, Pacing::AsFastAsPossible)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("none.dcm") && e.contains("cannot replay with correct timing"),
        "{e}"
    );
}

#[test]
fn contrast_bolus_start_time_gives_the_injection_offset() {
    let dir = tempfile::tempdir().unwrap();
    let with_bolus = |name: &str, bolus: &str| {
        let bolus = bolus.to_string();
        variant(dir.path(), name, move |o| {
            o.put(DataElement::new(
                tags::FRAME_TIME,
                VR::DS,
                dicom_value!(Strs, ["40"]),
            ));
            o.put(DataElement::new(
                tags::ACQUISITION_TIME,
                VR::TM,
                dicom_value!(Strs, ["101530.250"]),
            ));
            o.put(DataElement::new(
                tags::CONTRAST_BOLUS_START_TIME,
                VR::TM,
                dicom_value!(Strs, [bolus.as_str()]),
            ));
        })
    };
    // Injected 12.75 s before the clip's first frame.
    let src = DicomReplay::open(
        &with_bolus("before.dcm", "101517.5"),
        Pacing::AsFastAsPossible,
    )
    .unwrap();
    let offset = src.timing().injection_offset_s.unwrap();
    assert!((offset + 12.75).abs() < 1e-9, "{offset}");
    let src =
        DicomReplay::open(&with_bolus("after.dcm", "101545"), Pacing::AsFastAsPossible).unwrap();
    assert!((src.timing().injection_offset_s.unwrap() - 14.75).abs() < 1e-9);
    let e = DicomReplay::open(&with_bolus("bad.dcm", "25:99"), Pacing::AsFastAsPossible)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("Contrast/Bolus Start Time '25:99'"), "{e}");
}

#[test]
fn dicom_times_parse() {
    assert_eq!(parse_tm("101530.25"), Some(36930.25));
    assert_eq!(parse_tm("10"), Some(36000.0));
    assert_eq!(parse_tm("1015"), Some(36900.0));
    assert_eq!(parse_tm("10:15:30"), Some(36930.0));
    for bad in ["", "1", "25", "1099", "101530.x", "10.5", "abcdef"] {
        assert_eq!(parse_tm(bad), None, "{bad}");
    }
}

#[test]
fn pacing_spreads_frames_by_their_times_over_the_speed() {
    let p = Pacing::real_time(4.0).unwrap();
    assert_eq!(p.due(Duration::from_secs(10)), Duration::from_millis(2500));
    assert_eq!(
        Pacing::AsFastAsPossible.due(Duration::from_secs(10)),
        Duration::ZERO
    );
    assert!(Pacing::real_time(0.0).is_err());
    assert!(Pacing::real_time(f64::NAN).is_err());
    // A paced replay delivers the same frames with the same recorded timestamps.
    let mut src = DicomReplay::open(
        &data("mono2_multiframe.dcm"),
        Pacing::real_time(100.0).unwrap(),
    )
    .unwrap();
    assert_times(&drain(&mut src), 40.0);
}
