//! Static activation scales: counting the values that reach each int8 convolution over a set of
//! calibration images, and choosing the layer's scale from a high percentile of them.
//!
//! Why a percentile: post-ReLU feature maps are heavy-tailed, so the largest value seen (min-max
//! calibration) would spend most of the 255 steps on a handful of outliers, while a percentile
//! near 100 clips those few and keeps the resolution for the rest. Entropy (KL) calibration
//! chooses the clip by comparing histograms; it needs a model-specific bin count and a search
//! per layer and is harder to explain to whoever validates the model, for gains that the
//! agreement test would have to show first. The percentile is recorded in the model file's
//! provenance and can be changed on the command line.
//!
//! Values are counted in a histogram keyed by the top 16 bits of their f32 encoding (sign,
//! exponent and 7 mantissa bits): for non-negative floats that order is the numeric order, each
//! bin spans under 0.8% of its value, and no range has to be known before the first image.

use std::sync::Mutex;

/// Bins: every non-negative f32's top 16 bits (the sign bit is 0, so 2^15 bins).
const BINS: usize = 1 << 15;

/// Counts of one layer's input values.
#[derive(Debug)]
pub struct InputHistogram {
    counts: Mutex<Counts>,
}

#[derive(Debug)]
struct Counts {
    bins: Vec<u64>,
    total: u64,
    max: f32,
    /// Values that cannot be counted (negative, NaN, infinite): a calibration over them is
    /// refused rather than silently wrong.
    invalid: u64,
}

impl Default for InputHistogram {
    fn default() -> Self {
        Self {
            counts: Mutex::new(Counts {
                bins: vec![0; BINS],
                total: 0,
                max: 0.0,
                invalid: 0,
            }),
        }
    }
}

/// What a calibration found for one layer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LayerCalibration {
    /// Values counted.
    pub values: u64,
    /// The largest value seen.
    pub max: f32,
    /// The value at the chosen percentile (the upper edge of its bin), where inputs clip.
    pub clip: f32,
    /// The value of one u8 step: `clip / 255`.
    pub scale: f32,
}

impl InputHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `values`.
    pub fn record(&self, values: &[f32]) {
        let mut bins = vec![0u64; BINS];
        let (mut max, mut invalid) = (0f32, 0u64);
        for &v in values {
            if v.is_finite() && v >= 0.0 {
                // -0.0 has the sign bit set; it is zero.
                let bits = (v + 0.0).to_bits();
                bins[(bits >> 16) as usize] += 1;
                max = max.max(v);
            } else {
                invalid += 1;
            }
        }
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for (total, new) in counts.bins.iter_mut().zip(&bins) {
            *total += new;
        }
        counts.total += values.len() as u64 - invalid;
        counts.invalid += invalid;
        counts.max = counts.max.max(max);
    }

    /// The scale that clips at `percentile` (in (0, 100]) of the counted values. Errors when
    /// nothing was counted, when invalid values were seen, or when every value is zero.
    pub fn calibrate(&self, percentile: f64) -> Result<LayerCalibration, String> {
        if !(percentile > 0.0 && percentile <= 100.0) {
            return Err(format!("percentile {percentile} is not in (0, 100]"));
        }
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.invalid > 0 {
            return Err(format!(
                "{} input values were negative, NaN or infinite",
                counts.invalid
            ));
        }
        if counts.total == 0 {
            return Err("no input values were seen".into());
        }
        if counts.max <= 0.0 {
            return Err("every input value was zero".into());
        }
        // The smallest bin at which at least `percentile` of the values are counted.
        let wanted = ((percentile / 100.0) * counts.total as f64).ceil() as u64;
        let mut seen = 0u64;
        let mut bin = BINS - 1;
        for (i, &c) in counts.bins.iter().enumerate() {
            seen += c;
            if seen >= wanted.max(1) {
                bin = i;
                break;
            }
        }
        // The bin's upper edge, never above the largest value seen. A percentile that falls
        // among the zeros (or values too small for a normal f32 step) clips at the largest
        // value instead: the layer still needs a usable step.
        let upper = f32::from_bits(((bin as u32) + 1) << 16);
        let smallest = 255.0 * f32::MIN_POSITIVE;
        let clip = match upper.min(counts.max) {
            clip if clip >= smallest => clip,
            _ if counts.max >= smallest => counts.max,
            _ => {
                return Err(format!(
                    "the largest input value, {}, is too small for a u8 step",
                    counts.max
                ))
            }
        };
        Ok(LayerCalibration {
            values: counts.total,
            max: counts.max,
            clip,
            scale: clip / 255.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact percentile by sorting, for comparison.
    fn sorted_percentile(values: &[f32], percentile: f64) -> f32 {
        let mut v = values.to_vec();
        v.sort_by(f32::total_cmp);
        let rank = ((percentile / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.max(1) - 1]
    }

    #[test]
    fn the_clip_is_the_percentile_within_a_bin() {
        // A heavy tail: mostly zeros and small values, a few large ones.
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        let values: Vec<f32> = (0..200_000)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                if i % 3 == 0 {
                    0.0
                } else {
                    (u * 6.0).exp() / 20.0
                }
            })
            .collect();
        let h = InputHistogram::new();
        for chunk in values.chunks(777) {
            h.record(chunk);
        }
        for p in [50.0, 99.0, 99.99, 100.0] {
            let c = h.calibrate(p).unwrap();
            let exact = sorted_percentile(&values, p);
            assert!(
                c.clip >= exact && c.clip <= exact * 1.008,
                "p{p}: clip {} vs exact {exact}",
                c.clip
            );
            assert_eq!(c.scale, c.clip / 255.0);
            assert_eq!(c.values, values.len() as u64);
        }
        let all = h.calibrate(100.0).unwrap();
        assert_eq!(all.clip, all.max);
        assert_eq!(all.max, values.iter().fold(0f32, |a, &v| a.max(v)));
    }

    #[test]
    fn nothing_counted_all_zero_or_invalid_inputs_are_refused() {
        let h = InputHistogram::new();
        assert!(h.calibrate(99.99).unwrap_err().contains("no input values"));
        h.record(&[0.0, -0.0, 0.0]);
        assert!(h.calibrate(99.99).unwrap_err().contains("zero"));
        h.record(&[1.0, f32::NAN, -2.0, f32::INFINITY]);
        assert!(h
            .calibrate(99.99)
            .unwrap_err()
            .contains("3 input values were negative, NaN or infinite"));
        let ok = InputHistogram::new();
        ok.record(&[1.0]);
        assert!(ok.calibrate(0.0).unwrap_err().contains("percentile"));
        assert!(ok.calibrate(100.5).unwrap_err().contains("percentile"));
    }

    #[test]
    fn a_percentile_among_the_zeros_still_gives_a_usable_scale() {
        let h = InputHistogram::new();
        let mut values = vec![0.0f32; 999];
        values.push(3.0);
        h.record(&values);
        let c = h.calibrate(50.0).unwrap();
        assert!(c.scale > 0.0 && c.clip <= 3.0, "{c:?}");
    }
}
