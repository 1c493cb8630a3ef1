//! The signal on a capture card's input. An HDMI receiver detects the timings of what comes
//! in (VIDIOC_QUERY_DV_TIMINGS) and says when they change (V4L2_EVENT_SOURCE_CHANGE): a
//! scanner switching preset, or an HDMI link re-negotiating. The stream keeps its old format
//! until the application stops it, locks to the new timings (VIDIOC_S_DV_TIMINGS) and
//! allocates buffers of the new size; `v4l2.rs` does that by reopening the device.
//!
//! The v4l crate wraps none of these calls; they are made here on the device's descriptor,
//! with the kernel's structures from the committed bindings.

use std::mem::{size_of, zeroed};
use std::os::raw::c_void;
use std::os::unix::io::RawFd;

use v4l::v4l_sys::{
    v4l2_dv_timings, v4l2_event, v4l2_event_subscription, V4L2_EVENT_SOURCE_CHANGE,
    V4L2_EVENT_SRC_CH_RESOLUTION,
};

/// An ioctl number as linux/ioctl.h builds it (`_IOC(dir, 'V', nr, sizeof(T))`).
fn ioc<T>(dir: u64, nr: u64) -> v4l::v4l2::vidioc::_IOC_TYPE {
    ((dir << 30) | ((size_of::<T>() as u64) << 16) | ((b'V' as u64) << 8) | nr) as _
}
const WRITE: u64 = 1;
const READ: u64 = 2;
const READ_WRITE: u64 = 3;

fn vidioc<T>(fd: RawFd, number: v4l::v4l2::vidioc::_IOC_TYPE, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: `arg` is the structure the ioctl `number` reads or writes (its size is encoded
    // in the number), alive and exclusively borrowed for the call.
    unsafe { v4l::v4l2::ioctl(fd, number, arg as *mut T as *mut c_void) }
}

/// Asks the driver to report source changes on this descriptor; false when it cannot
/// (webcams and most USB grabbers report none: their changes show as a failed stream).
pub fn subscribe_source_change(fd: RawFd) -> bool {
    // SAFETY: a plain C structure, valid when zeroed.
    let mut subscription: v4l2_event_subscription = unsafe { zeroed() };
    subscription.type_ = V4L2_EVENT_SOURCE_CHANGE;
    vidioc(
        fd,
        ioc::<v4l2_event_subscription>(WRITE, 90),
        &mut subscription,
    )
    .is_ok()
}

/// Whether the input's resolution changed since the last call: takes every pending event
/// without waiting.
pub fn resolution_changed(fd: RawFd) -> bool {
    let mut changed = false;
    loop {
        let mut pending = libc::pollfd {
            fd,
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let ready = unsafe { libc::poll(&mut pending, 1, 0) };
        if ready <= 0 || pending.revents & libc::POLLPRI == 0 {
            return changed;
        }
        // SAFETY: a plain C structure, valid when zeroed.
        let mut event: v4l2_event = unsafe { zeroed() };
        if vidioc(fd, ioc::<v4l2_event>(READ, 89), &mut event).is_err() {
            return changed;
        }
        if event.type_ == V4L2_EVENT_SOURCE_CHANGE {
            // SAFETY: the union's member for this event type.
            let changes = unsafe { event.u.src_change.changes };
            changed |= changes & V4L2_EVENT_SRC_CH_RESOLUTION != 0;
        }
    }
}

/// What an input that reports DV timings carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSignal {
    /// Not such an input (a webcam, a USB grabber that scales whatever comes in).
    NoTimings,
    /// Locked to the detected timings: their frame size; `changed` when they were not the
    /// ones set before.
    Locked {
        width: u32,
        height: u32,
        changed: bool,
    },
}

/// For an input that reports DV timings (HDMI, DVI, SDI receivers): sets the timings it
/// detects, so that the format read next is the signal's. An error says why there is
/// nothing to capture (no signal, no lock, out of range).
pub fn lock_to_detected_timings(fd: RawFd) -> Result<InputSignal, String> {
    // SAFETY: plain C structures, valid when zeroed.
    let mut detected: v4l2_dv_timings = unsafe { zeroed() };
    if let Err(e) = vidioc(fd, ioc::<v4l2_dv_timings>(READ, 99), &mut detected) {
        return match e.raw_os_error() {
            Some(libc::ENOLINK) => Err("the input has no signal (no HDMI link)".into()),
            Some(libc::ENOLCK) => Err("the input cannot lock to the signal".into()),
            Some(libc::ERANGE) => Err("the input's signal is out of the receiver's range".into()),
            // ENOTTY, ENODATA, EINVAL: this input has no DV timings.
            _ => Ok(InputSignal::NoTimings),
        };
    }
    // SAFETY: a plain C structure, valid when zeroed.
    let mut current: v4l2_dv_timings = unsafe { zeroed() };
    let current_ok = vidioc(fd, ioc::<v4l2_dv_timings>(READ_WRITE, 88), &mut current).is_ok();
    // The structure is packed: its fields are copied out, never borrowed.
    // SAFETY: `bt` is the member the kernel fills for V4L2_DV_BT_656_1120, the only type.
    let (new, old) = unsafe { (detected.__bindgen_anon_1.bt, current.__bindgen_anon_1.bt) };
    let (width, height, interlaced, clock) =
        (new.width, new.height, new.interlaced, new.pixelclock);
    let same = current_ok
        && (width, height, interlaced, clock)
            == (old.width, old.height, old.interlaced, old.pixelclock);
    if !same {
        vidioc(fd, ioc::<v4l2_dv_timings>(READ_WRITE, 87), &mut detected).map_err(|e| {
            format!(
                "the input carries {width}x{height}{}; setting those timings failed: {e}",
                if interlaced != 0 { "i" } else { "p" }
            )
        })?;
    }
    Ok(InputSignal::Locked {
        width,
        height,
        changed: !same,
    })
}
