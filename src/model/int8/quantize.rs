//! Turning f32 into int8: weights once (one symmetric scale per output channel), activations on
//! every call (to u8, with a scale from the largest value it covers: by default each output
//! pixel's input patch, otherwise the whole tensor, or a calibrated static scale).
//!
//! Weights are stored in the model file as GGUF `Q8_0` blocks (an f16 scale and 32 int8 values)
//! in which every block of a channel carries that channel's scale. Any GGUF reader dequantizes
//! them correctly, and this crate reads them back as exact per-channel int8.

use std::mem::MaybeUninit;

use half::f16;

/// Values per `Q8_0` block, and bytes per block (f16 scale + values).
pub const Q8_0_BLOCK: usize = 32;
const Q8_0_BYTES: usize = 2 + Q8_0_BLOCK;

/// One convolution's weights as int8, channel by channel: `values[c * k + i] · scales[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelQuantized {
    pub out_channels: usize,
    /// Weights per output channel (kh·kw·cin).
    pub k: usize,
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantizeError {
    #[error("{found} values do not make {channels} channels of {k}")]
    Shape {
        channels: usize,
        k: usize,
        found: usize,
    },
    #[error("{found} bytes do not make {channels} channels of {k} Q8_0 values ({expected} bytes)")]
    ByteLength {
        channels: usize,
        k: usize,
        expected: usize,
        found: usize,
    },
    #[error("a channel of {k} weights: a convolution has at least one weight per channel")]
    EmptyChannel { k: usize },
    #[error("channel {channel} has weight scale {scale}; scales are finite and not negative")]
    BadScale { channel: usize, scale: f32 },
    #[error("channel length {k} is not a multiple of the Q8_0 block ({Q8_0_BLOCK})")]
    BlockAlignment { k: usize },
    #[error("weight {index} is not finite")]
    NotFinite { index: usize },
    #[error(
        "channel {channel}: block {block} has scale {found} but the channel's first block has \
         {expected}; not a per-channel int8 tensor"
    )]
    NotPerChannel {
        channel: usize,
        block: usize,
        expected: f32,
        found: f32,
    },
}

impl ChannelQuantized {
    /// Symmetric per-channel quantization of `weights` ([channels][k], row-major). The scale
    /// is `max |w| / 127` rounded to f16 (what the file stores), so what runs is exactly what
    /// is stored.
    pub fn quantize(weights: &[f32], channels: usize, k: usize) -> Result<Self, QuantizeError> {
        if weights.len() != channels * k {
            return Err(QuantizeError::Shape {
                channels,
                k,
                found: weights.len(),
            });
        }
        if let Some(index) = weights.iter().position(|w| !w.is_finite()) {
            return Err(QuantizeError::NotFinite { index });
        }
        let mut values = vec![0i8; channels * k];
        let mut scales = vec![0f32; channels];
        for c in 0..channels {
            let row = &weights[c * k..(c + 1) * k];
            let max = row.iter().fold(0f32, |m, w| m.max(w.abs()));
            let scale = f16::from_f32(max / 127.0).to_f32();
            scales[c] = scale;
            if scale > 0.0 {
                for (q, w) in values[c * k..(c + 1) * k].iter_mut().zip(row) {
                    *q = (w / scale).round().clamp(-127.0, 127.0) as i8;
                }
            }
        }
        Ok(Self {
            out_channels: channels,
            k,
            values,
            scales,
        })
    }

    /// The weights this stands for, as f32.
    pub fn dequantize(&self) -> Vec<f32> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * self.scales[i / self.k])
            .collect()
    }

    /// The raw bytes of a `Q8_0` tensor of shape [channels, k].
    pub fn to_q8_0(&self) -> Result<Vec<u8>, QuantizeError> {
        if self.k % Q8_0_BLOCK != 0 {
            return Err(QuantizeError::BlockAlignment { k: self.k });
        }
        let blocks = self.k / Q8_0_BLOCK;
        let mut out = Vec::with_capacity(self.out_channels * blocks * Q8_0_BYTES);
        for c in 0..self.out_channels {
            let d = f16::from_f32(self.scales[c]).to_le_bytes();
            for b in 0..blocks {
                out.extend_from_slice(&d);
                let start = c * self.k + b * Q8_0_BLOCK;
                out.extend(
                    self.values[start..start + Q8_0_BLOCK]
                        .iter()
                        .map(|&v| v as u8),
                );
            }
        }
        Ok(out)
    }

    /// Reads the raw bytes of a `Q8_0` tensor of shape [channels, k], which must have one
    /// finite, non-negative scale per channel.
    pub fn from_q8_0(bytes: &[u8], channels: usize, k: usize) -> Result<Self, QuantizeError> {
        if k == 0 {
            return Err(QuantizeError::EmptyChannel { k });
        }
        if k % Q8_0_BLOCK != 0 {
            return Err(QuantizeError::BlockAlignment { k });
        }
        let blocks = k / Q8_0_BLOCK;
        let expected = channels * blocks * Q8_0_BYTES;
        if bytes.len() != expected {
            return Err(QuantizeError::ByteLength {
                channels,
                k,
                expected,
                found: bytes.len(),
            });
        }
        let mut values = vec![0i8; channels * k];
        let mut scales = vec![0f32; channels];
        for c in 0..channels {
            let row = &bytes[c * blocks * Q8_0_BYTES..(c + 1) * blocks * Q8_0_BYTES];
            let first = [row[0], row[1]];
            scales[c] = f16::from_le_bytes(first).to_f32();
            // A NaN or infinite scale would turn the channel's outputs into NaN, which ReLU
            // then hides as zeros: a wrong score with no error.
            if !(scales[c].is_finite() && scales[c] >= 0.0) {
                return Err(QuantizeError::BadScale {
                    channel: c,
                    scale: scales[c],
                });
            }
            for (b, block) in row.chunks_exact(Q8_0_BYTES).enumerate() {
                if block[..2] != first {
                    return Err(QuantizeError::NotPerChannel {
                        channel: c,
                        block: b,
                        expected: scales[c],
                        found: f16::from_le_bytes([block[0], block[1]]).to_f32(),
                    });
                }
                let start = c * k + b * Q8_0_BLOCK;
                for (q, &v) in values[start..start + Q8_0_BLOCK]
                    .iter_mut()
                    .zip(&block[2..])
                {
                    *q = v as i8;
                }
            }
        }
        Ok(Self {
            out_channels: channels,
            k,
            values,
            scales,
        })
    }
}

/// The scale that maps a non-negative tensor onto 0..=255 (1 for an all-zero tensor).
pub fn activation_scale(max: f32) -> f32 {
    // Below this the scale would be subnormal or zero and its reciprocal infinite.
    if max >= 255.0 * f32::MIN_POSITIVE {
        max / 255.0
    } else {
        1.0
    }
}

/// Quantizes non-negative activations with the reciprocal of their scale into `out` (same
/// length), one u8 value (0..=255) per u16, the width the AVX2 kernel reads: round to nearest,
/// saturating at 255. Compiled for AVX2 where the CPU has it (same operations, same values).
pub fn quantize_activations(values: &[f32], inverse_scale: f32, out: &mut [MaybeUninit<u16>]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        unsafe { quantize_activations_avx2(values, inverse_scale, out) };
        return;
    }
    quantize_activations_body(values, inverse_scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_activations_avx2(
    values: &[f32],
    inverse_scale: f32,
    out: &mut [MaybeUninit<u16>],
) {
    quantize_activations_body(values, inverse_scale, out)
}

/// The loop, written so that it compiles to packed float-to-int conversions.
#[inline(always)]
fn quantize_activations_body(values: &[f32], inverse_scale: f32, out: &mut [MaybeUninit<u16>]) {
    for (q, &x) in out.iter_mut().zip(values) {
        // x ≥ 0, so adding one half and truncating rounds to nearest. Clamped first, so the
        // conversion needs none of `as`'s saturation checks. Not `clamp`: it passes a NaN
        // through, while `max` and `min` with a number never return NaN.
        #[allow(clippy::manual_clamp)]
        let v = (x * inverse_scale + 0.5).max(0.0).min(255.0);
        // SAFETY: `v` is in [0, 255], so it is representable in i32.
        q.write(unsafe { v.to_int_unchecked::<i32>() } as u16);
    }
}

/// Smallest and largest value of a slice, and whether it holds a NaN (which neither bound
/// reflects). Written as eight independent lanes of compare-and-select, so it compiles to
/// packed min/max instructions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub lo: f32,
    pub hi: f32,
    pub nan: bool,
}

impl Range {
    /// The range of no values: `join` with it changes nothing.
    pub const EMPTY: Range = Range {
        lo: f32::INFINITY,
        hi: f32::NEG_INFINITY,
        nan: false,
    };

    pub fn of(values: &[f32]) -> Self {
        const LANES: usize = 8;
        let mut lo = [f32::INFINITY; LANES];
        let mut hi = [f32::NEG_INFINITY; LANES];
        let mut nan = [false; LANES];
        let mut chunks = values.chunks_exact(LANES);
        for chunk in &mut chunks {
            for i in 0..LANES {
                let v = chunk[i];
                lo[i] = if v < lo[i] { v } else { lo[i] };
                hi[i] = if v > hi[i] { v } else { hi[i] };
                nan[i] |= v.is_nan();
            }
        }
        let mut range = Range::EMPTY;
        for i in 0..LANES {
            range = range.join(Range {
                lo: lo[i],
                hi: hi[i],
                nan: nan[i],
            });
        }
        for &v in chunks.remainder() {
            range = range.join(Range {
                lo: v,
                hi: v,
                nan: v.is_nan(),
            });
        }
        range
    }

    /// The range of both slices.
    pub fn join(self, other: Range) -> Range {
        Range {
            lo: if other.lo < self.lo {
                other.lo
            } else {
                self.lo
            },
            hi: if other.hi > self.hi {
                other.hi
            } else {
                self.hi
            },
            nan: self.nan || other.nan,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_weights_round_trip_through_q8_0_exactly() {
        let (channels, k) = (5, 64);
        let w: Vec<f32> = (0..channels * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3 * (1 + i / k) as f32)
            .collect();
        let q = ChannelQuantized::quantize(&w, channels, k).unwrap();
        let back = ChannelQuantized::from_q8_0(&q.to_q8_0().unwrap(), channels, k).unwrap();
        assert_eq!(back, q);
        // Every weight within half a step of its channel's scale.
        for (i, (a, b)) in w.iter().zip(q.dequantize()).enumerate() {
            assert!((a - b).abs() <= q.scales[i / k] * 0.5 + 1e-9, "weight {i}");
        }
        // The largest weight of each channel maps to ±127 (up to the f16 rounding of scale).
        for c in 0..channels {
            let m = q.values[c * k..(c + 1) * k]
                .iter()
                .map(|v| v.abs())
                .max()
                .unwrap();
            assert!((126..=127).contains(&m), "channel {c}: {m}");
        }
    }

    #[test]
    fn blocks_with_different_scales_are_not_taken_for_per_channel() {
        let q = ChannelQuantized::quantize(&vec![0.5; 64], 1, 64).unwrap();
        let mut bytes = q.to_q8_0().unwrap();
        bytes[34] ^= 0x01; // the second block's scale
        let err = ChannelQuantized::from_q8_0(&bytes, 1, 64).unwrap_err();
        assert!(matches!(
            err,
            QuantizeError::NotPerChannel {
                channel: 0,
                block: 1,
                ..
            }
        ));
    }

    #[test]
    fn bad_weights_are_refused() {
        assert!(matches!(
            ChannelQuantized::quantize(&[1.0, f32::NAN], 1, 2),
            Err(QuantizeError::NotFinite { index: 1 })
        ));
        assert!(matches!(
            ChannelQuantized::quantize(&[1.0; 3], 2, 2),
            Err(QuantizeError::Shape { .. })
        ));
        let q = ChannelQuantized::quantize(&[1.0; 49], 1, 49).unwrap();
        assert_eq!(q.to_q8_0(), Err(QuantizeError::BlockAlignment { k: 49 }));
    }

    #[test]
    fn bad_q8_0_tensors_are_refused_with_what_is_wrong() {
        let bytes = ChannelQuantized::quantize(&[0.25; 128], 2, 64)
            .unwrap()
            .to_q8_0()
            .unwrap();
        assert_eq!(
            ChannelQuantized::from_q8_0(&bytes[..bytes.len() - 1], 2, 64),
            Err(QuantizeError::ByteLength {
                channels: 2,
                k: 64,
                expected: 136,
                found: 135
            })
        );
        assert_eq!(
            ChannelQuantized::from_q8_0(&[], 3, 0),
            Err(QuantizeError::EmptyChannel { k: 0 })
        );
        // The second channel's scale, in both of its blocks: NaN, infinite, negative.
        for bad in [f16::NAN, f16::INFINITY, f16::from_f32(-0.5)] {
            let mut b = bytes.clone();
            for block in [2, 3] {
                b[block * Q8_0_BYTES..block * Q8_0_BYTES + 2].copy_from_slice(&bad.to_le_bytes());
            }
            let err = ChannelQuantized::from_q8_0(&b, 2, 64).unwrap_err();
            assert!(
                matches!(err, QuantizeError::BadScale { channel: 1, .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("channel 1"), "{err}");
        }
    }

    /// The definition, one value at a time: `as` rounds toward zero and saturates.
    fn quantize_activation(x: f32, inverse_scale: f32) -> u16 {
        (x * inverse_scale + 0.5) as u8 as u16
    }

    #[test]
    fn activations_round_to_nearest_and_saturate() {
        let s = activation_scale(2.55);
        let inv = 1.0 / s;
        assert_eq!(quantize_activation(0.0, inv), 0);
        assert_eq!(quantize_activation(0.014, inv), 1);
        assert_eq!(quantize_activation(0.006, inv), 1);
        assert_eq!(quantize_activation(0.004, inv), 0);
        assert_eq!(quantize_activation(2.55, inv), 255);
        assert_eq!(quantize_activation(3.0, inv), 255);
        // The slice form gives the same values, saturation included.
        let values: Vec<f32> = (0..3000).map(|i| i as f32 * 0.001).collect();
        let mut out = vec![MaybeUninit::new(0u16); values.len()];
        quantize_activations(&values, inv, &mut out);
        for (x, q) in values.iter().zip(&out) {
            // SAFETY: initialised when made.
            let q = unsafe { q.assume_init() };
            assert_eq!(q, quantize_activation(*x, inv), "{x}");
        }
        assert_eq!(activation_scale(0.0), 1.0);
    }

    #[test]
    fn ranges_find_the_bounds_and_any_nan_wherever_they_are() {
        for len in [1usize, 7, 8, 9, 64, 77] {
            for at in [0, len / 2, len - 1] {
                let mut v: Vec<f32> = (0..len).map(|i| (i % 5) as f32 * 0.25 + 1.0).collect();
                v[at] = -3.0;
                let r = Range::of(&v);
                assert_eq!((r.lo, r.nan), (-3.0, false), "len {len}, at {at}");
                assert_eq!(r.hi, v.iter().cloned().fold(f32::MIN, f32::max));
                v[at] = f32::NAN;
                assert!(Range::of(&v).nan, "len {len}, NaN at {at}");
            }
        }
        assert_eq!(Range::of(&[]), Range::EMPTY);
    }
}
