//! V4L2 capture against the kernel's virtual video driver `vivid`. These tests need a kernel
//! with vivid loaded, which this machine and CI have only inside a virtual machine:
//! `tests/v4l2-vm/run.sh` boots one (QEMU, a Debian kernel, a busybox initramfs) and runs them
//! there with `--ignored`. What they cover and what only a real capture card can show is
//! written in `tests/v4l2-vm/README.md`.

use ceusd::capture::frame::{LumaRange, PixelFormat};
use ceusd::capture::source::{FrameSource, Pacing, SourceEvent};
use ceusd::capture::spec::SourceSpec;
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
    let webcam = vivid_node("platform:vivid-000", false);
    let vivid = devices
        .iter()
        .find(|d| d.path == webcam && d.driver == "vivid")
        .expect("vivid's webcam listed");
    let hdmi_out = vivid_node("platform:vivid-001", true);
    assert!(devices
        .iter()
        .any(|d| d.path == vivid_node("platform:vivid-001", false)));
    assert!(
        devices.iter().all(|d| d.path != hdmi_out),
        "an output-only node is not listed as a capture device"
    );
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

    // A stable name, as udev makes them under /dev/v4l/by-id (there is no udev in the guest,
    // so the link is made here): the source follows it.
    std::fs::create_dir_all("/dev/v4l/by-id").unwrap();
    let link = Path::new("/dev/v4l/by-id/usb-Vivid_HDMI_Capture_0001-video-index0");
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&path, link).unwrap();
    let mut src = source(&format!("v4l2:{}?format=YUYV&size=640x360", link.display()));
    let f = next_frame(src.as_mut());
    assert_eq!((f.width, f.height, f.format), (640, 360, PixelFormat::Yuyv));
    assert!(src.describe().contains("by-id"), "{}", src.describe());
}

#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2-vm/run.sh inside a VM"]
fn vivid_streams_every_supported_format_with_sequence_and_time() {
    let path = vivid_node("platform:vivid-000", false);
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
    let path = vivid_node("platform:vivid-000", false);
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

/// A vivid node found by its bus (one vivid instance per bus) and direction.
fn vivid_node(bus: &str, output: bool) -> std::path::PathBuf {
    use v4l::capability::Flags;
    let mut paths: Vec<_> = std::fs::read_dir("/dev")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().starts_with("/dev/video"))
        .collect();
    paths.sort();
    for p in paths {
        let caps = v4l::Device::with_path(&p).unwrap().query_caps().unwrap();
        let wanted = if output {
            Flags::VIDEO_OUTPUT
        } else {
            Flags::VIDEO_CAPTURE
        };
        if caps.bus == bus && caps.capabilities.contains(wanted) {
            return p;
        }
    }
    panic!(
        "no vivid {} node on {bus}",
        if output { "output" } else { "capture" }
    )
}

fn set_control(dev: &v4l::Device, name: &str, value: i64) {
    use v4l::control::{Control, Value};
    let ctrl = dev
        .query_controls()
        .unwrap()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("vivid has no control '{name}'"));
    dev.set_control(Control {
        id: ctrl.id,
        value: Value::Integer(value),
    })
    .unwrap_or_else(|e| panic!("setting '{name}' to {value}: {e}"));
}

/// An ioctl number as linux/ioctl.h builds it, for the two DV-timings calls the v4l crate does
/// not wrap.
fn iowr<T>(nr: u64) -> v4l::v4l2::vidioc::_IOC_TYPE {
    ((3u64 << 30) | ((std::mem::size_of::<T>() as u64) << 16) | ((b'V' as u64) << 8) | nr) as _
}

/// Sets the node's HDMI timings to the first preset vivid lists (640x480p60): a loopback needs
/// the same timings on both sides, and small frames keep the emulated machine fast.
fn set_first_dv_timings(dev: &v4l::Device) -> (u32, u32) {
    use v4l::v4l_sys::{v4l2_dv_timings, v4l2_enum_dv_timings};
    let fd = dev.handle().fd();
    let mut listed: v4l2_enum_dv_timings = unsafe { std::mem::zeroed() };
    listed.index = 0;
    unsafe {
        v4l::v4l2::ioctl(
            fd,
            iowr::<v4l2_enum_dv_timings>(98),
            &mut listed as *mut _ as *mut std::os::raw::c_void,
        )
    }
    .expect("VIDIOC_ENUM_DV_TIMINGS");
    let mut timings: v4l2_dv_timings = listed.timings;
    unsafe {
        v4l::v4l2::ioctl(
            fd,
            iowr::<v4l2_dv_timings>(87),
            &mut timings as *mut _ as *mut std::os::raw::c_void,
        )
    }
    .expect("VIDIOC_S_DV_TIMINGS");
    let bt = unsafe { timings.__bindgen_anon_1.bt };
    (bt.width, bt.height)
}

/// Frame `k` of the loopback pattern in `format`: luma (x*3 + y*5 + k*7) mod 256, so the first
/// pixel names the frame and every byte position differs from its neighbours; chroma varies
/// too, so swapped or shifted chroma bytes are caught by the byte-for-byte comparison.
fn loopback_pattern(format: PixelFormat, w: usize, h: usize, k: usize) -> Vec<u8> {
    let luma = |x: usize, y: usize| ((x * 3 + y * 5 + k * 7) & 255) as u8;
    let cb = |x: usize, y: usize| ((x + y * 2 + k) & 255) as u8;
    let cr = |x: usize, y: usize| ((x * 2 + y + 3 * k) & 255) as u8;
    let mut out = Vec::new();
    match format {
        PixelFormat::Grey => {
            for y in 0..h {
                out.extend((0..w).map(|x| luma(x, y)));
            }
        }
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => {
            // Gray pixels (R = G = B), whose Pillow luma is exactly the value.
            for y in 0..h {
                for x in 0..w {
                    out.extend([luma(x, y); 3]);
                }
            }
        }
        PixelFormat::Yuyv | PixelFormat::Uyvy => {
            for y in 0..h {
                for x in (0..w).step_by(2) {
                    let (y0, y1, u, v) = (luma(x, y), luma(x + 1, y), cb(x, y), cr(x, y));
                    if format == PixelFormat::Yuyv {
                        out.extend([y0, u, y1, v]);
                    } else {
                        out.extend([u, y0, v, y1]);
                    }
                }
            }
        }
        PixelFormat::Nv12 => {
            for y in 0..h {
                out.extend((0..w).map(|x| luma(x, y)));
            }
            for y in (0..h).step_by(2) {
                for x in (0..w).step_by(2) {
                    out.extend([cb(x, y), cr(x, y)]);
                }
            }
        }
        PixelFormat::Mjpeg => unreachable!("vivid has no MJPEG"),
    }
    out
}

/// Streams frames to a V4L2 output node through mmap buffers. (The v4l crate's output stream
/// polls for a free buffer before it has queued any, which waits forever on a vb2 queue, so
/// this queues every buffer before STREAMON, then dequeues, refills and requeues one by one.)
struct MmapOutput {
    node: std::fs::File,
    buffers: Vec<(*mut u8, usize)>,
    next_frame: Box<dyn FnMut(usize) -> Vec<u8>>,
    sent: usize,
}

impl MmapOutput {
    fn start(path: &Path, count: u32, next_frame: impl FnMut(usize) -> Vec<u8> + 'static) -> Self {
        use std::os::fd::AsRawFd;
        use v4l::v4l2::vidioc::*;
        use v4l::v4l_sys::{v4l2_buffer, v4l2_requestbuffers};
        const OUTPUT: u32 = 2; // V4L2_BUF_TYPE_VIDEO_OUTPUT
        const MMAP: u32 = 1; // V4L2_MEMORY_MMAP
        let node = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let fd = node.as_raw_fd();
        let mut req: v4l2_requestbuffers = unsafe { std::mem::zeroed() };
        req.count = count;
        req.type_ = OUTPUT;
        req.memory = MMAP;
        unsafe { v4l::v4l2::ioctl(fd, VIDIOC_REQBUFS, &mut req as *mut _ as *mut _) }
            .expect("VIDIOC_REQBUFS");
        let mut output = MmapOutput {
            node,
            buffers: Vec::new(),
            next_frame: Box::new(next_frame),
            sent: 0,
        };
        for index in 0..req.count {
            let mut buf: v4l2_buffer = unsafe { std::mem::zeroed() };
            buf.index = index;
            buf.type_ = OUTPUT;
            buf.memory = MMAP;
            unsafe { v4l::v4l2::ioctl(fd, VIDIOC_QUERYBUF, &mut buf as *mut _ as *mut _) }
                .expect("VIDIOC_QUERYBUF");
            let ptr = unsafe {
                v4l::v4l2::mmap(
                    std::ptr::null_mut(),
                    buf.length as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    buf.m.offset as libc::off_t,
                )
            }
            .expect("mmap");
            output.buffers.push((ptr as *mut u8, buf.length as usize));
            output.fill_and_queue(index);
        }
        let mut typ = OUTPUT;
        unsafe { v4l::v4l2::ioctl(fd, VIDIOC_STREAMON, &mut typ as *mut _ as *mut _) }
            .expect("VIDIOC_STREAMON");
        output
    }

    fn fill_and_queue(&mut self, index: u32) {
        use std::os::fd::AsRawFd;
        let frame = (self.next_frame)(self.sent);
        self.sent += 1;
        let (ptr, len) = self.buffers[index as usize];
        assert!(
            frame.len() <= len,
            "frame of {} bytes, buffer of {len}",
            frame.len()
        );
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), ptr, frame.len()) };
        let mut buf: v4l::v4l_sys::v4l2_buffer = unsafe { std::mem::zeroed() };
        buf.index = index;
        buf.type_ = 2;
        buf.memory = 1;
        buf.bytesused = frame.len() as u32;
        buf.field = 1; // V4L2_FIELD_NONE: progressive, as the timings say
        unsafe {
            v4l::v4l2::ioctl(
                self.node.as_raw_fd(),
                v4l::v4l2::vidioc::VIDIOC_QBUF,
                &mut buf as *mut _ as *mut _,
            )
        }
        .expect("VIDIOC_QBUF");
    }

    /// Waits for the driver to hand back a buffer (the node is blocking), refills it and
    /// queues it again.
    fn send_next(&mut self) {
        use std::os::fd::AsRawFd;
        let mut buf: v4l::v4l_sys::v4l2_buffer = unsafe { std::mem::zeroed() };
        buf.type_ = 2;
        buf.memory = 1;
        unsafe {
            v4l::v4l2::ioctl(
                self.node.as_raw_fd(),
                v4l::v4l2::vidioc::VIDIOC_DQBUF,
                &mut buf as *mut _ as *mut _,
            )
        }
        .expect("VIDIOC_DQBUF");
        self.fill_and_queue(buf.index);
    }
}

impl Drop for MmapOutput {
    fn drop(&mut self) {
        for &(ptr, len) in &self.buffers {
            let _ = unsafe { v4l::v4l2::munmap(ptr as *mut _, len) };
        }
    }
}

/// vivid's HDMI output looped back into its HDMI input: frames written to the output node
/// must come back through `FrameSource` byte for byte, in every uncompressed format, and the
/// gray pane the pipeline sees must be the luma that was sent.
#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2-vm/run.sh inside a VM"]
fn frames_written_to_the_output_come_back_byte_for_byte() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use v4l::video::Output;

    let bus = "platform:vivid-001";
    let (cap_path, out_path) = (vivid_node(bus, false), vivid_node(bus, true));
    let cap = v4l::Device::with_path(&cap_path).unwrap();
    let out = v4l::Device::with_path(&out_path).unwrap();
    let (w, h) = set_first_dv_timings(&cap);
    assert_eq!(set_first_dv_timings(&out), (w, h));
    set_control(&cap, "Loop Video", 1);
    set_control(&cap, "OSD Text Mode", 2);
    drop((cap, out));
    let (wu, hu) = (w as usize, h as usize);

    for format in [
        PixelFormat::Yuyv,
        PixelFormat::Uyvy,
        PixelFormat::Nv12,
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Grey,
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, out_path) = (stop.clone(), out_path.clone());
            std::thread::spawn(move || {
                let out = v4l::Device::with_path(&out_path).unwrap();
                let fourcc = v4l::FourCC::new(format.fourcc().as_bytes().try_into().unwrap());
                let set = Output::set_format(&out, &v4l::Format::new(w, h, fourcc)).unwrap();
                assert_eq!((set.fourcc, set.width, set.height), (fourcc, w, h));
                drop(out);
                let mut output = MmapOutput::start(&out_path, 4, move |k| {
                    loopback_pattern(format, wu, hu, k % 256)
                });
                while !stop.load(Ordering::Relaxed) {
                    output.send_next();
                }
            })
        };

        let mut src = source(&format!(
            "v4l2:{}?format={}&size={w}x{h}&timeout_ms=5000",
            cap_path.display(),
            format.fourcc()
        ));
        let mut matched = Vec::new();
        for _ in 0..40 {
            let f = next_frame(src.as_mut());
            assert_eq!((f.width, f.height, f.format), (w, h, format));
            // The first luma byte names the pattern's frame: k*7 mod 256, and 7 is odd.
            let first_luma = match format {
                PixelFormat::Uyvy => f.data[1],
                _ => f.data[0],
            };
            let k = (0..256)
                .find(|k| (k * 7) & 255 == first_luma as usize)
                .unwrap();
            let expected = loopback_pattern(format, wu, hu, k);
            if f.data == expected {
                let gray = f.gray_region(&Roi::full(w, h), LumaRange::Full).unwrap();
                let luma_sent = loopback_pattern(PixelFormat::Grey, wu, hu, k);
                assert_eq!(
                    gray.as_raw(),
                    &luma_sent,
                    "{format}: gray pane of frame {k}"
                );
                matched.push((f.sequence, k));
                if matched.len() == 4 {
                    break;
                }
            } else {
                assert!(
                    matched.is_empty(),
                    "{format}: a frame differs from what was sent once the loop was running"
                );
            }
        }
        eprintln!("{format}: looped back byte for byte (sequence, pattern frame): {matched:?}");
        assert_eq!(
            matched.len(),
            4,
            "{format}: 4 frames came back byte for byte"
        );
        // Only now: a writer stuck on a dead output would hang the join and hide the failure.
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(
            matched.windows(2).all(|p| p[1].0 > p[0].0),
            "{format}: sequence numbers increase"
        );
    }
}

/// A device that stays open but stops delivering frames (vivid drops a set percentage of its
/// buffers): dropped frames are counted from the driver's sequence gaps, and when nothing at
/// all arrives the source reports no signal and recovers when frames come back.
#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2-vm/run.sh inside a VM"]
fn drops_are_counted_and_a_silent_device_is_no_signal() {
    let path = vivid_node("platform:vivid-000", false);
    let control = v4l::Device::with_path(&path).unwrap();
    set_control(&control, "Percentage of Dropped Buffers", 50);
    let mut src = source(&format!(
        "v4l2:{}?format=GREY&size=640x360&timeout_ms=1000",
        path.display()
    ));
    let frames: Vec<_> = (0..12).map(|_| next_frame(src.as_mut())).collect();
    let half_dropped = src.dropped();
    eprintln!("50% drop rate: {half_dropped} frames dropped before 12 arrived");
    assert!(
        half_dropped > 0,
        "gaps in the driver's sequence are counted"
    );
    assert!(frames
        .windows(2)
        .all(|p| p[1].sequence == p[0].sequence + 1));

    set_control(&control, "Percentage of Dropped Buffers", 100);
    let mut no_signal = 0;
    let mut last = frames[11].clone();
    loop {
        match src.next_event().unwrap() {
            SourceEvent::Frame(f) => {
                // Buffers filled before the control took effect may still arrive.
                assert_eq!(no_signal, 0, "no frames while all are dropped");
                last = f;
            }
            SourceEvent::NoSignal { reason } => {
                assert!(reason.contains("no frame within"), "{reason}");
                no_signal += 1;
                if no_signal == 2 {
                    break;
                }
            }
            SourceEvent::End => panic!("a device never ends"),
        }
    }
    set_control(&control, "Percentage of Dropped Buffers", 0);
    let back = next_frame(src.as_mut());
    assert_eq!(
        back.sequence,
        last.sequence + 1,
        "sequence numbers continue"
    );
    assert!(back.timestamp > last.timestamp, "time continues");
}

/// The timings of vivid's HDMI input that are progressive, smallest first: (menu index, width,
/// height) of the "DV Timings" control's entries ("720x576p50", ...).
fn progressive_dv_timings(dev: &v4l::Device) -> Vec<(u32, u32, u32)> {
    use v4l::control::MenuItem;
    let control = dev
        .query_controls()
        .unwrap()
        .into_iter()
        .find(|c| c.name == "DV Timings")
        .expect("vivid's HDMI input has a 'DV Timings' control");
    let mut found: Vec<(u32, u32, u32)> = control
        .items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(index, item)| {
            let MenuItem::Name(name) = item else {
                return None;
            };
            let (w, rest) = name.split_once('x')?;
            let (h, _) = rest.split_once('p')?;
            Some((index, w.parse().ok()?, h.parse().ok()?))
        })
        .collect();
    found.sort_by_key(|&(_, w, h)| w * h);
    found
}

/// A scanner switching preset over HDMI: vivid's input changes to other timings while the
/// source streams (V4L2_EVENT_SOURCE_CHANGE). The source says so once as no signal, reopens
/// locked to the new timings, and delivers frames of the new size; then the signal drops
/// ("No Signal") and comes back, and frames resume.
#[test]
#[ignore = "needs the vivid driver: run by tests/v4l2-vm/run.sh inside a VM"]
fn a_new_resolution_on_the_hdmi_input_is_followed() {
    let path = vivid_node("platform:vivid-001", false);
    let control = v4l::Device::with_path(&path).unwrap();
    let (w, h) = set_first_dv_timings(&control);
    set_control(&control, "Loop Video", 0);
    let mut src = source(&format!(
        "v4l2:{}?format=YUYV&size={w}x{h}&timeout_ms=5000",
        path.display()
    ));
    let first = next_frame(src.as_mut());
    assert_eq!((first.width, first.height), (w, h));

    let (index, nw, nh) = progressive_dv_timings(&control)
        .into_iter()
        .find(|&(_, tw, th)| (tw, th) != (w, h))
        .expect("vivid lists other progressive timings");
    eprintln!("switching the input from {w}x{h} to {nw}x{nh}");
    set_control(&control, "DV Timings", index as i64);
    set_control(&control, "DV Timings Signal Mode", 4); // "Selected DV Timings"

    let mut said_changed = 0;
    let new_frame = loop {
        match src.next_event().unwrap() {
            SourceEvent::Frame(f) if (f.width, f.height) == (nw, nh) => break f,
            SourceEvent::Frame(f) => {
                assert_eq!(said_changed, 0, "old-size frames after the reopen");
                assert_eq!((f.width, f.height), (w, h));
            }
            SourceEvent::NoSignal { reason } => {
                assert!(reason.contains("changed resolution"), "{reason}");
                said_changed += 1;
            }
            SourceEvent::End => panic!("a device never ends"),
        }
    };
    assert_eq!(said_changed, 1, "the change is said once");
    assert_eq!(new_frame.data.len(), (nw * nh * 2) as usize);
    assert!(
        src.describe().contains(&format!("{nw}x{nh}")),
        "{}",
        src.describe()
    );

    // The cable is pulled, then plugged back in.
    set_control(&control, "DV Timings Signal Mode", 1); // "No Signal"
    let reason = loop {
        match src.next_event().unwrap() {
            SourceEvent::NoSignal { reason } if reason.contains("no signal") => break reason,
            SourceEvent::NoSignal { .. } | SourceEvent::Frame(_) => {}
            SourceEvent::End => panic!("a device never ends"),
        }
    };
    eprintln!("while unplugged: {reason}");
    set_control(&control, "DV Timings Signal Mode", 4);
    let back = next_frame(src.as_mut());
    assert_eq!((back.width, back.height), (nw, nh));

    // The input as the other tests expect it.
    drop(src);
    set_control(&control, "DV Timings Signal Mode", 0); // "Current DV Timings"
    set_first_dv_timings(&control);
}
