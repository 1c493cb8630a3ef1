//! A live source that fails on cue: timeouts and unplugging become "no signal", the device is
//! reopened with backoff, and frames resume with continuous sequence numbers and times. Also
//! the V4L2 option syntax and `ceusd devices` on a machine without a capture card.

use ceusd::capture::frame::{Frame, LumaRange, PixelFormat};
use ceusd::capture::reconnect::{Backoff, Device, Reconnecting};
use ceusd::capture::source::{FrameSource, SourceEvent};
use ceusd::capture::spec::SourceSpec;
use ceusd::capture::v4l2::V4l2Options;
use std::collections::VecDeque;
use std::time::Duration;

/// What the fake device does at each call, in order.
#[derive(Debug, Clone)]
enum Step {
    OpenOk,
    OpenFails(&'static str),
    /// A frame with the driver's sequence number and timestamp (ms).
    Frame(u64, u64),
    Timeout,
    Unplugged,
}

struct Scripted {
    script: VecDeque<Step>,
    opens: u32,
}

impl Device for Scripted {
    type Stream = ();
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn open(&mut self) -> Result<(), String> {
        self.opens += 1;
        match self.script.pop_front() {
            Some(Step::OpenOk) => Ok(()),
            Some(Step::OpenFails(why)) => Err(why.into()),
            other => panic!("script expected an open, got {other:?}"),
        }
    }
    fn read(&mut self, _: &mut ()) -> Result<Option<Frame>, String> {
        match self.script.pop_front() {
            Some(Step::Frame(seq, ms)) => Ok(Some(Frame {
                sequence: seq,
                timestamp: Duration::from_millis(ms),
                width: 2,
                height: 1,
                format: PixelFormat::Grey,
                stride: 2,
                data: vec![seq as u8, 0],
            })),
            Some(Step::Timeout) => Ok(None),
            Some(Step::Unplugged) => Err("No such device (os error 19)".into()),
            other => panic!("script expected a read, got {other:?}"),
        }
    }
}

#[derive(Debug, PartialEq)]
enum Seen {
    Frame(u64, u64),
    NoSignal,
}

#[test]
fn unplug_and_signal_loss_become_no_signal_then_recovery() {
    use Step::*;
    let script = vec![
        OpenOk,
        Frame(100, 5000),
        Frame(101, 5040),
        Frame(104, 5160), // the driver lost two frames
        Timeout,          // scanner switched off: no frame within the timeout
        OpenOk,
        Frame(7, 9000),
        Unplugged, // cable pulled
        OpenFails("No such file or directory"),
        OpenFails("No such file or directory"),
        OpenOk,
        Frame(0, 12000),
    ];
    let device = Scripted {
        script: script.into(),
        opens: 0,
    };
    let backoff = Backoff {
        first: Duration::from_millis(1),
        max: Duration::from_millis(4),
    };
    let mut src = Reconnecting::new(device, backoff);
    let mut seen = Vec::new();
    for _ in 0..9 {
        match src.next_event().unwrap() {
            SourceEvent::Frame(f) => {
                seen.push(Seen::Frame(f.sequence, f.timestamp.as_millis() as u64))
            }
            SourceEvent::NoSignal { reason } => {
                assert!(!reason.is_empty());
                seen.push(Seen::NoSignal)
            }
            SourceEvent::End => panic!("a live device never ends"),
        }
    }
    // Sequence numbers run on across reopens; times stay on the device's monotonic clock.
    assert_eq!(
        seen,
        vec![
            Seen::Frame(0, 0),
            Seen::Frame(1, 40),
            Seen::Frame(2, 160),
            Seen::NoSignal, // timeout
            Seen::Frame(3, 4000),
            Seen::NoSignal, // unplugged
            Seen::NoSignal, // reopen failed
            Seen::NoSignal, // reopen failed
            Seen::Frame(4, 7000),
        ]
    );
    assert_eq!(
        src.dropped(),
        2,
        "frames 102 and 103 were lost by the driver"
    );
    assert_eq!(src.device().opens, 5);
    assert_eq!(src.reopens, 2);
}

#[test]
fn v4l2_options_parse_and_name_their_errors() {
    let o = V4l2Options::parse(
        "/dev/v4l/by-id/usb-cap-video-index0?format=YUYV&size=1920x1080&fps=60&range=full",
    )
    .unwrap();
    assert_eq!(o.path.to_str(), Some("/dev/v4l/by-id/usb-cap-video-index0"));
    assert_eq!(
        (o.format, o.size, o.fps, o.range),
        (
            Some(PixelFormat::Yuyv),
            Some((1920, 1080)),
            Some(60),
            LumaRange::Full
        )
    );
    assert_eq!(o.buffers, 4);
    for (bad, expect) in [
        ("/dev/video0?format=H264", "unknown pixel format 'H264'"),
        ("/dev/video0?size=1920", "expected WxH"),
        ("/dev/video0?buffers=2", "4 to 32"),
        ("/dev/video0?range=tv", "limited or full"),
        ("/dev/video0?gain=3", "unknown option 'gain'"),
    ] {
        let e = V4l2Options::parse(bad).unwrap_err();
        assert!(e.contains(expect), "{bad}: {e}");
    }
    assert!(matches!(
        "v4l2:/dev/video0".parse::<SourceSpec>().unwrap(),
        SourceSpec::V4l2(_)
    ));
}

#[test]
fn a_missing_capture_device_is_no_signal_not_a_crash() {
    let spec: SourceSpec = "v4l2:/dev/video-that-does-not-exist?timeout_ms=50"
        .parse()
        .unwrap();
    let mut src = spec
        .open(ceusd::capture::source::Pacing::AsFastAsPossible)
        .unwrap();
    match src.next_event().unwrap() {
        SourceEvent::NoSignal { reason } => assert!(
            reason.contains("/dev/video-that-does-not-exist"),
            "{reason}"
        ),
        other => panic!("expected no signal, got {other:?}"),
    }
}

#[test]
fn devices_says_so_when_there_are_none() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .arg("devices")
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let has_devices = std::fs::read_dir("/dev")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("video"));
    if has_devices {
        assert!(text.contains("/dev/video"), "{text}");
    } else {
        assert!(text.contains("no video capture devices found"), "{text}");
    }
}
