//! The int8 convolution engine: BatchNorm-folded ResNet-50 convolutions with int8 weights (one
//! scale per output channel) and u8 activations: by default one scale per output pixel's input
//! patch, found at run time; or one per tensor at run time; or a static scale per layer,
//! calibrated and stored in the model file.
//!
//! - `quantize.rs`: f32 to int8, and the per-channel `Q8_0` form the model file stores.
//! - `gemm.rs`: the packed int8 matrix product and its micro-kernels (AVX2, NEON `sdot`,
//!   scalar), chosen by CPU feature detection at run time.
//! - `conv.rs`: a convolution as a candle custom op: quantize + im2col + pack, GEMM, epilogue.
//! - `calibration.rs`: static activation scales from the values a set of images produces.

pub mod calibration;
pub mod conv;
pub mod gemm;
pub mod quantize;

pub use calibration::{InputHistogram, LayerCalibration};
pub use conv::{ActivationScaling, Int8Conv};
pub use gemm::{Kernel, RowWriter};
pub use quantize::ChannelQuantized;

/// The kernel to run: `CEUSD_INT8_KERNEL` (scalar, avx2, neon-sdot) when set, for measuring
/// one kernel against another; otherwise the fastest this CPU has.
pub fn selected_kernel() -> Result<Kernel, String> {
    match std::env::var("CEUSD_INT8_KERNEL") {
        Ok(name) => {
            let kernel: Kernel = name.parse()?;
            if kernel.is_available() {
                Ok(kernel)
            } else {
                Err(format!(
                    "CEUSD_INT8_KERNEL={name}: this CPU cannot run that kernel"
                ))
            }
        }
        Err(_) => Ok(Kernel::detect()),
    }
}
