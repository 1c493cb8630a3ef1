//! V4L2 capture against the kernel's virtual video driver `vivid`. These tests need a kernel
//! with vivid loaded, which this machine and CI have only inside a virtual machine:
//! `tests/v4l2-vm/run.sh` boots one (QEMU, a Debian kernel, a busybox initramfs) and runs them
//! there with `--ignored`. What they cover and what only a real capture card can show is
//! written in `tests/v4l2-vm/README.md`.

use ceusd::capture::frame::{LumaRange, PixelFormat};
use ceusd::capture::source::{FrameSource, Pacing, SourceEvent, SourceSpec};
use ceusd::capture::v4l2::{list_devices, negotiate, V4l2Options};
use ceusd::roi::Roi;
use std::path::Path;

fn source(spec: &str) -> Box<dyn FrameSource> {
    spec.parse::<SourceSpec>()
        .unwrap()
        .open(Pacing::AsFastAsPossible)
        .unwrap()
}

fn next_frame(src: &mut dyn FrameSource) -> ceusd::capture::frame::Frame {
    for _ in 0..20 {
        match src.next_event().unwrap() {
            SourceEvent::Frame(f) => return f,
            SourceEvent::NoSignal { reason } => eprintln!("no signal: {reason}"),
            SourceEvent::End => panic!("a device never ends"),
        }
    }
    panic!("no frame after 20 tries")
}

#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2-vm/run.sh inside a VM"]
fn vivid_is_listed_and_negotiates_or_explains() {
    let devices = list_devices();
    let vivid = devices
        .iter()
        .find(|d| d.driver == "vivid")
        .expect("vivid capture device listed");
    let offers = vivid.offers.as_ref().unwrap();
    let yuyv = offers
        .iter()
        .find(|o| o.fourcc == "YUYV")
        .expect("YUYV offered");
    assert!(
        yuyv.sizes.iter().any(|s| s.starts_with("640x360")),
        "{:?}",
        yuyv.sizes
    );
    let path = vivid.path.to_string_lossy().to_string();
    let ok = V4l2Options::parse(&format!("{path}?format=YUYV&size=640x360")).unwrap();
    let (_, format, w, h, stride) = negotiate(Path::new(&path), &ok).unwrap();
    assert_eq!((format, w, h), (PixelFormat::Yuyv, 640, 360));
    assert!(stride >= 1280);
    let bad = V4l2Options::parse(&format!("{path}?format=YUYV&size=123x45")).unwrap();
    let e = negotiate(Path::new(&path), &bad).err().unwrap();
    assert!(
        e.contains("123x45") && e.contains("offers") && e.contains("640x360"),
        "{e}"
    );
}

#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2-vm/run.sh inside a VM"]
fn vivid_streams_every_supported_format_with_sequence_and_time() {
    let path = list_devices()
        .into_iter()
        .find(|d| d.driver == "vivid")
        .expect("vivid")
        .path;
    for format in ["YUYV", "UYVY", "NV12", "RGB3", "BGR3", "GREY"] {
        let mut src = source(&format!(
            "v4l2:{}?format={format}&size=640x360&timeout_ms=5000",
            path.display()
        ));
        let frames: Vec<_> = (0..4).map(|_| next_frame(src.as_mut())).collect();
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(
                (f.width, f.height, f.format.fourcc()),
                (640, 360, format),
                "frame {i}"
            );
            assert_eq!(f.sequence, i as u64);
            f.validate().unwrap();
            let gray = f
                .gray_region(&Roi::full(640, 360), LumaRange::Full)
                .unwrap();
            let (min, max) = gray
                .as_raw()
                .iter()
                .fold((255u8, 0u8), |(a, b), v| (a.min(*v), b.max(*v)));
            assert!(
                max > min + 100,
                "{format}: vivid's test pattern has contrast ({min}..{max})"
            );
        }
        assert_eq!(frames[0].timestamp, std::time::Duration::ZERO);
        assert!(
            frames.windows(2).all(|p| p[1].timestamp > p[0].timestamp),
            "{format}: timestamps increase"
        );
        eprintln!(
            "{format}: 4 frames, {:?} apart, {} dropped",
            frames[1].timestamp - frames[0].timestamp,
            src.dropped()
        );
    }
}

/// vivid's "Disconnect" button makes the device behave like an unplugged USB capture card:
/// its nodes are unregistered and every call fails with ENODEV.
#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2-vm/run.sh inside a VM"]
fn an_unplugged_device_is_no_signal_until_it_comes_back() {
    use v4l::control::{Control, Value};
    let path = list_devices()
        .into_iter()
        .find(|d| d.driver == "vivid")
        .expect("vivid")
        .path;
    let mut src = source(&format!(
        "v4l2:{}?format=YUYV&size=640x360&timeout_ms=2000",
        path.display()
    ));
    let first = next_frame(src.as_mut());
    assert_eq!(first.sequence, 0);

    let control_dev = v4l::Device::with_path(&path).unwrap();
    let disconnect = control_dev
        .query_controls()
        .unwrap()
        .into_iter()
        .find(|c| c.name == "Disconnect")
        .expect("vivid has a Disconnect control");
    control_dev
        .set_control(Control {
            id: disconnect.id,
            value: Value::None,
        })
        .unwrap();
    drop(control_dev);

    // The open stream fails with ENODEV: that is reported as no signal, the device is
    // reopened, and frames resume on the same sequence and timeline.
    let mut no_signal = 0;
    let back = loop {
        match src.next_event().unwrap() {
            SourceEvent::NoSignal { reason } => {
                eprintln!("no signal: {reason}");
                assert!(reason.contains("No such device"), "{reason}");
                no_signal += 1;
            }
            SourceEvent::Frame(f) => break f,
            SourceEvent::End => panic!("a device never ends"),
        }
        assert!(no_signal < 10, "the device did not come back");
    };
    assert_eq!(no_signal, 1, "one no-signal event for one unplug");
    assert_eq!(
        back.sequence,
        first.sequence + 1,
        "sequence numbers continue across the reopen"
    );
    assert!(
        back.timestamp > first.timestamp,
        "time continues across the reopen"
    );
}
