//! How `inspect` and `quantize` report a set of int8 scales.

/// The smallest and largest of a set of scales (all positive), as the reports print them:
/// infinity and 0 for none.
pub(super) fn span(scales: impl Iterator<Item = f32>) -> (f32, f32) {
    scales.fold((f32::INFINITY, 0f32), |(lo, hi), s| (lo.min(s), hi.max(s)))
}
