//! Live capture from a Video4Linux2 device (an HDMI/SDI capture card behind the scanner's video
//! output) with the `v4l` crate: format negotiation, mmap streaming, and device listing.
//! Recovery from unplugging and signal loss is `reconnect::Reconnecting`'s job.

use std::path::{Path, PathBuf};
use std::time::Duration;
use v4l::buffer::Type;
use v4l::framesize::FrameSizeEnum;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Format, FourCC};

use super::frame::{Frame, LumaRange, PixelFormat};
use super::reconnect::Device;
use super::v4l2_signal::{
    lock_to_detected_timings, resolution_changed, subscribe_source_change, InputSignal,
};

/// What to ask the device for: `v4l2:/dev/video0?format=YUYV&size=1920x1080&fps=60&range=limited`.
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Options {
    /// `/dev/videoN` or a stable `/dev/v4l/by-id/…` link.
    pub path: PathBuf,
    pub format: Option<PixelFormat>,
    pub size: Option<(u32, u32)>,
    pub fps: Option<u32>,
    pub range: LumaRange,
    /// mmap buffers in the driver's queue.
    pub buffers: u32,
    /// No frame for this long is reported as no signal.
    pub timeout: Duration,
}

impl V4l2Options {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (path, query) = spec.split_once('?').unwrap_or((spec, ""));
        let mut o = V4l2Options {
            path: path.into(),
            format: None,
            size: None,
            fps: None,
            range: LumaRange::Limited,
            buffers: 4,
            timeout: Duration::from_millis(1000),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("'{pair}': expected key=value"))?;
            match k {
                "format" => o.format = Some(v.parse()?),
                "size" => {
                    o.size = Some(
                        super::source::parse_frame_size(v).ok_or_else(|| format!("size={v}: expected WxH"))?,
                    );
                }
                "fps" => o.fps = Some(v.parse().map_err(|_| format!("fps={v}: expected a whole number"))?),
                "range" => {
                    o.range = match v {
                        "limited" => LumaRange::Limited,
                        "full" => LumaRange::Full,
                        _ => return Err(format!("range={v}: expected limited or full")),
                    }
                }
                "buffers" => {
                    o.buffers = v.parse().map_err(|_| format!("buffers={v}: expected a number"))?;
                    if !(4..=32).contains(&o.buffers) {
                        return Err(format!("buffers={v}: expected 4 to 32"));
                    }
                }
                "timeout_ms" => {
                    let ms: u64 = v.parse().map_err(|_| format!("timeout_ms={v}: expected a number"))?;
                    o.timeout = Duration::from_millis(ms.max(50));
                }
                other => {
                    return Err(format!(
                        "unknown option '{other}' (expected format, size, fps, range, buffers, timeout_ms)"
                    ))
                }
            }
        }
        Ok(o)
    }
}

fn fourcc_of(f: PixelFormat) -> FourCC {
    FourCC::new(match f {
        PixelFormat::Yuyv => b"YUYV",
        PixelFormat::Uyvy => b"UYVY",
        PixelFormat::Nv12 => b"NV12",
        PixelFormat::Mjpeg => b"MJPG",
        PixelFormat::Rgb24 => b"RGB3",
        PixelFormat::Bgr24 => b"BGR3",
        PixelFormat::Grey => b"GREY",
    })
}

fn format_of(f: FourCC) -> Option<PixelFormat> {
    PixelFormat::ALL.into_iter().find(|p| fourcc_of(*p) == f)
}

/// What a device offers, for `ceusd devices` and for negotiation errors.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Offer {
    pub fourcc: String,
    pub description: String,
    pub supported: bool,
    /// "1920x1080 @ 60, 30 fps" per size.
    pub sizes: Vec<String>,
}

pub fn offers(dev: &v4l::Device) -> Result<Vec<Offer>, String> {
    let formats = dev
        .enum_formats()
        .map_err(|e| format!("cannot list formats: {e}"))?;
    let mut out = Vec::new();
    for f in formats {
        let mut sizes = Vec::new();
        for fs in dev.enum_framesizes(f.fourcc).unwrap_or_default() {
            match fs.size {
                FrameSizeEnum::Discrete(d) => {
                    let rates: Vec<String> = dev
                        .enum_frameintervals(f.fourcc, d.width, d.height)
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|i| match i.interval {
                            v4l::frameinterval::FrameIntervalEnum::Discrete(fr)
                                if fr.numerator > 0 =>
                            {
                                Some(
                                    format!("{:.3}", fr.denominator as f64 / fr.numerator as f64)
                                        .trim_end_matches('0')
                                        .trim_end_matches('.')
                                        .to_string(),
                                )
                            }
                            v4l::frameinterval::FrameIntervalEnum::Stepwise(s) => Some(format!(
                                "{}-{}",
                                s.max.denominator / s.max.numerator.max(1),
                                s.min.denominator / s.min.numerator.max(1)
                            )),
                            _ => None,
                        })
                        .collect();
                    sizes.push(format!(
                        "{}x{} @ {} fps",
                        d.width,
                        d.height,
                        if rates.is_empty() {
                            "?".into()
                        } else {
                            rates.join(", ")
                        }
                    ));
                }
                FrameSizeEnum::Stepwise(s) => sizes.push(format!(
                    "{}x{} to {}x{} (step {}x{})",
                    s.min_width,
                    s.min_height,
                    s.max_width,
                    s.max_height,
                    s.step_width,
                    s.step_height
                )),
            }
        }
        out.push(Offer {
            fourcc: f.fourcc.str().unwrap_or("????").to_string(),
            description: f.description.clone(),
            supported: format_of(f.fourcc).is_some(),
            sizes,
        });
    }
    Ok(out)
}

fn describe_offers(offers: &[Offer]) -> String {
    offers
        .iter()
        .map(|o| {
            format!(
                "{} ({}): {}",
                o.fourcc,
                o.description,
                if o.sizes.is_empty() {
                    "sizes not listed".into()
                } else {
                    o.sizes.join("; ")
                }
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A V4L2 capture device.
pub struct V4l2Device {
    pub options: V4l2Options,
    /// What was negotiated at the last open.
    pub negotiated: Option<(PixelFormat, u32, u32, usize)>,
    /// Set once the input changed resolution: from then on the device is opened at the
    /// input's own size, whatever `size=` asked for first.
    follow_input: bool,
}

pub struct V4l2Stream {
    // Declared before the device: the stream's buffers are unmapped before the fd closes.
    stream: v4l::io::mmap::Stream<'static>,
    _device: v4l::Device,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
    /// The driver reports source changes on this descriptor.
    source_events: bool,
}

impl V4l2Device {
    pub fn new(options: V4l2Options) -> Self {
        Self {
            options,
            negotiated: None,
            follow_input: false,
        }
    }
}

/// Opens `path` and negotiates format, size and rate: what the device actually set must be
/// what was asked, or the error lists what it offers. An input that reports DV timings is
/// first locked to the timings it detects.
pub fn negotiate(
    path: &Path,
    o: &V4l2Options,
) -> Result<(v4l::Device, PixelFormat, u32, u32, usize), String> {
    open_and_negotiate(path, o, false)
}

/// [`negotiate`]; with `follow_input`, at the input's own frame size rather than `size=`.
fn open_and_negotiate(
    path: &Path,
    o: &V4l2Options,
    follow_input: bool,
) -> Result<(v4l::Device, PixelFormat, u32, u32, usize), String> {
    let dev = v4l::Device::with_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let caps = dev
        .query_caps()
        .map_err(|e| format!("{}: not a V4L2 device: {e}", path.display()))?;
    if !caps
        .capabilities
        .contains(v4l::capability::Flags::VIDEO_CAPTURE)
    {
        return Err(format!(
            "{} ({}) is not a video capture device",
            path.display(),
            caps.card
        ));
    }
    let signal = lock_to_detected_timings(dev.handle().fd())?;
    if let InputSignal::Locked {
        width,
        height,
        changed: true,
    } = signal
    {
        log::info!(
            "{}: the input carries {width}x{height}; locked to it",
            path.display()
        );
    }
    let offered = offers(&dev)?;
    let current = dev
        .format()
        .map_err(|e| format!("cannot read the current format: {e}"))?;
    let want_format = match o.format {
        Some(f) => f,
        None => format_of(current.fourcc)
            .or_else(|| {
                offered
                    .iter()
                    .find_map(|of| of.fourcc.parse::<PixelFormat>().ok())
            })
            .ok_or_else(|| {
                format!(
                    "the device offers no supported pixel format: {}",
                    describe_offers(&offered)
                )
            })?,
    };
    let (w, h) = match o.size {
        Some(size) if !follow_input => size,
        _ => (current.width, current.height),
    };
    let asked = Format::new(w, h, fourcc_of(want_format));
    let got = dev.set_format(&asked).map_err(|e| {
        format!(
            "setting {want_format} {w}x{h}: {e}; the device offers: {}",
            describe_offers(&offered)
        )
    })?;
    if got.fourcc != asked.fourcc || got.width != w || got.height != h {
        return Err(format!(
            "asked for {want_format} {w}x{h}, the device set {} {}x{}; it offers: {}",
            got.fourcc.str().unwrap_or("????"),
            got.width,
            got.height,
            describe_offers(&offered)
        ));
    }
    if let Some(fps) = o.fps {
        let params = dev
            .set_params(&v4l::video::capture::Parameters::with_fps(fps))
            .map_err(|e| {
                format!(
                    "setting {fps} fps: {e}; the device offers: {}",
                    describe_offers(&offered)
                )
            })?;
        let set = params.interval;
        if set.numerator == 0
            || (set.denominator as f64 / set.numerator as f64 - fps as f64).abs() > 0.5
        {
            return Err(format!(
                "asked for {fps} fps, the device set {}/{} s per frame; it offers: {}",
                set.numerator,
                set.denominator,
                describe_offers(&offered)
            ));
        }
    }
    let stride = if want_format == PixelFormat::Mjpeg {
        0
    } else {
        got.stride as usize
    };
    Ok((dev, want_format, w, h, stride))
}

impl Device for V4l2Device {
    type Stream = V4l2Stream;

    fn describe(&self) -> String {
        match self.negotiated {
            Some((f, w, h, _)) => format!("v4l2:{} ({f} {w}x{h})", self.options.path.display()),
            None => format!("v4l2:{}", self.options.path.display()),
        }
    }

    fn open(&mut self) -> Result<V4l2Stream, String> {
        let (dev, format, width, height, stride) =
            open_and_negotiate(&self.options.path, &self.options, self.follow_input)?;
        let source_events = subscribe_source_change(dev.handle().fd());
        let mut stream =
            v4l::io::mmap::Stream::with_buffers(&dev, Type::VideoCapture, self.options.buffers)
                .map_err(|e| format!("mmap streaming: {e}"))?;
        stream.set_timeout(self.options.timeout);
        self.negotiated = Some((format, width, height, stride));
        log::info!(
            "{}: streaming with {} buffers",
            self.describe(),
            self.options.buffers
        );
        Ok(V4l2Stream {
            stream,
            _device: dev,
            format,
            width,
            height,
            stride,
            source_events,
        })
    }

    fn read(&mut self, s: &mut V4l2Stream) -> Result<Option<Frame>, String> {
        // A new resolution on the input: the buffers are the old size, so the stream is given
        // up and the device reopened at the new timings (by the reconnecting source).
        if s.source_events && resolution_changed(s._device.handle().fd()) {
            self.follow_input = true;
            if let Some((w, h)) = self.options.size {
                log::warn!(
                    "{}: the input changed resolution; following it instead of the configured size={w}x{h}",
                    self.options.path.display()
                );
            }
            return Err(
                "the input changed resolution (V4L2 source change): reopening at its new timings"
                    .into(),
            );
        }
        match s.stream.next() {
            Ok((buf, meta)) => {
                let used = (meta.bytesused as usize).min(buf.len());
                let ts = meta.timestamp;
                let timestamp = Duration::from_secs(ts.sec.max(0) as u64)
                    + Duration::from_micros(ts.usec.max(0) as u64);
                Ok(Some(Frame {
                    sequence: meta.sequence as u64,
                    timestamp,
                    width: s.width,
                    height: s.height,
                    format: s.format,
                    stride: s.stride,
                    data: buf[..used].to_vec(),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(None),
            Err(e) => Err(format!("capture failed: {e}")),
        }
    }
}

/// A capture device found on this machine.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceInfo {
    pub path: PathBuf,
    pub card: String,
    pub driver: String,
    /// What it offers, or why that could not be read.
    pub offers: Result<Vec<Offer>, String>,
}

/// Every /dev/video* that can capture.
pub fn list_devices() -> Vec<DeviceInfo> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir("/dev")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("video"))
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let Ok(dev) = v4l::Device::with_path(&p) else {
            continue;
        };
        let Ok(caps) = dev.query_caps() else { continue };
        if !caps
            .capabilities
            .contains(v4l::capability::Flags::VIDEO_CAPTURE)
        {
            continue;
        }
        out.push(DeviceInfo {
            offers: offers(&dev),
            path: p,
            card: caps.card.clone(),
            driver: caps.driver.clone(),
        });
    }
    out
}
