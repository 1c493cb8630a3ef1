//! What the f32 and the int8 convolution kernels (`conv`, `int8::conv`) both need, in a file
//! of its own so that neither kernel imports the other: a window's output size, and the f32
//! data of candle's CPU storage they read and write.

use candle_core::{CpuStorage, Layout};

/// Output height and width of a `kernel` x `kernel` window (convolution or pooling) sliding
/// with `stride` over an `h` x `w` input padded by `padding` on every side.
pub fn output_size(
    h: usize,
    w: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> (usize, usize) {
    (
        (h + 2 * padding - kernel) / stride + 1,
        (w + 2 * padding - kernel) / stride + 1,
    )
}

/// The f32 data of a contiguous CPU tensor a kernel reads.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: input is not contiguous")))?;
    match storage {
        CpuStorage::F32(v) => Ok(&v[start..end]),
        _ => Err(candle_core::Error::Msg(format!("{op}: expected f32 input"))),
    }
}

/// The f32 data of a contiguous CPU tensor a kernel writes in place.
pub(crate) fn contiguous_f32_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: output is not contiguous")))?;
    match storage {
        CpuStorage::F32(v) => Ok(&mut v[start..end]),
        _ => Err(candle_core::Error::Msg(format!(
            "{op}: expected f32 output"
        ))),
    }
}
