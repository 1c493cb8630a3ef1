//! The int8 matrix product under every quantized convolution:
//! `C[m, n] = Σ_k A[m, k] · B[k, n]`, with A the unsigned 8-bit activations (one row per output
//! pixel, im2col order), B the signed 8-bit weights (one column per output channel), summed
//! exactly in i32 and turned into f32 by the epilogue (scales, bias, shortcut, ReLU).
//!
//! Both operands are packed into the order a micro-kernel reads them: the weights once at load
//! time, the activations while they are quantized, by each rayon task for its own rows just
//! before it multiplies them (see `gemm`). A micro-kernel computes an `mr x NR` tile of C over
//! the whole K.
//!
//! Kernels, chosen at run time by CPU feature detection (never by `target-cpu`):
//! - `Avx2` (x86_64): `vpmaddwd` on 8-bit values widened to 16 bits. Every product pair is summed
//!   exactly; `vpmaddubsw` would be faster per instruction but saturates at 16 bits when two
//!   large products meet, which would make results depend on the kernel. Avoiding that takes a
//!   7-bit operand, and either one (7-bit weights or 7-bit activations) brought the demo
//!   model's worst Grad-CAM correlation with f32 from 0.981 to 0.94–0.96, below the 0.98
//!   required.
//! - `NeonDot` (aarch64 with the dot-product extension, as on Jetson Orin): `sdot` over four
//!   8-bit pairs per lane. `sdot` is signed x signed, so activations are stored shifted by -128
//!   and `128 · Σ_k B[k, n]` is added back, which keeps the sum exact.
//! - `Scalar`: portable; the reference every SIMD kernel must match bit for bit.
//!
//! Sums cannot overflow: |A·B| ≤ 255·128 per product, so any K up to `MAX_K` keeps |C| below
//! 2^31 (ResNet-50's largest is 4608, 3x3x512); packing refuses a longer K.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::quantize::quantize_activations;

/// Columns (output channels) per micro-tile and per packed weight panel.
pub const NR: usize = 16;
/// The longest K whose i32 sums cannot overflow: `MAX_K · 255 · 128 < 2^31`.
pub const MAX_K: usize = (i32::MAX as usize) / (255 * 128);
/// K is padded to a multiple of this (zeros), so every kernel steps whole pairs or quads.
const K_ALIGN: usize = 4;
/// Bytes of packed weights a GEMM task keeps hot while its row panels pass over them: well
/// inside the L2 of the CPUs we run on (Jetson Orin's Cortex-A78AE: 256 KiB per core; x86
/// servers: 512 KiB and more), leaving room for the activation panels and the output rows.
const WEIGHTS_IN_L2: usize = 128 * 1024;

/// A micro-kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    Avx2,
    NeonDot,
}

/// How a kernel wants its operands laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PackFormat {
    /// K in pairs: activations as u16, row by row; weights as i8 pairs per column.
    Pairs,
    /// K in quads: activations as i8 (value - 128) quads, weights as i8 quads per column.
    ShiftedQuads,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Kernel::Avx2;
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            return Kernel::NeonDot;
        }
        Kernel::Scalar
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "aarch64")]
            Kernel::NeonDot => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this CPU runs, the scalar reference first.
    pub fn available() -> Vec<Kernel> {
        [Kernel::Scalar, Kernel::Avx2, Kernel::NeonDot]
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::NeonDot => "neon-sdot",
        }
    }

    /// Rows per micro-tile: as many accumulator rows as the register file holds.
    pub fn mr(self) -> usize {
        match self {
            // 6 rows x 2 ymm accumulators; the other 4 ymm hold the two weight halves, the
            // broadcast and a product (see `avx2::tile`).
            Kernel::Scalar | Kernel::Avx2 => 6,
            // 4 rows x 4 q accumulators + 4 weight registers + 1 activation register.
            Kernel::NeonDot => 4,
        }
    }

    /// Panics unless operands may be packed for this kernel here. Its SIMD code exists only
    /// on its own architecture and must never reach a CPU without the feature (the kernels'
    /// safety rests on this check); on another architecture its layout runs through the
    /// scalar reference (the tests use that to check the layout on every machine).
    fn check_may_pack(self) {
        let may = match self {
            Kernel::Scalar => true,
            Kernel::Avx2 => !cfg!(target_arch = "x86_64") || self.is_available(),
            Kernel::NeonDot => !cfg!(target_arch = "aarch64") || self.is_available(),
        };
        assert!(may, "this CPU cannot run the {} kernel", self.name());
    }

    fn format(self) -> PackFormat {
        match self {
            Kernel::Scalar | Kernel::Avx2 => PackFormat::Pairs,
            Kernel::NeonDot => PackFormat::ShiftedQuads,
        }
    }
}

impl PackFormat {
    /// Bytes one packed activation takes.
    fn activation_bytes(self) -> usize {
        match self {
            PackFormat::Pairs => std::mem::size_of::<u16>(),
            PackFormat::ShiftedQuads => std::mem::size_of::<i8>(),
        }
    }
}

impl std::str::FromStr for Kernel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "scalar" => Ok(Kernel::Scalar),
            "avx2" => Ok(Kernel::Avx2),
            "neon-sdot" => Ok(Kernel::NeonDot),
            other => Err(format!(
                "unknown int8 kernel '{other}' (expected scalar, avx2 or neon-sdot)"
            )),
        }
    }
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Weights packed for one kernel: `panels` panels of NR output channels, each holding the
/// padded K in the kernel's order.
#[derive(Debug, Clone)]
pub struct PackedWeights {
    kernel: Kernel,
    k: usize,
    k_padded: usize,
    n: usize,
    data: Vec<i8>,
    /// `128 · Σ_k B[k, n]`: what the shifted activations of `ShiftedQuads` leave out.
    shift_correction: Vec<i32>,
}

impl PackedWeights {
    /// Packs `n` output channels of `k` weights each, given channel by channel
    /// (`rows[c * k + i]` = B[i, c]). Panics if this CPU cannot run `kernel`
    /// (`check_may_pack`) or if K is longer than `MAX_K`.
    pub fn pack(kernel: Kernel, rows: &[i8], n: usize, k: usize) -> Self {
        kernel.check_may_pack();
        assert!(
            k <= MAX_K,
            "K = {k} could overflow the i32 sums (at most {MAX_K})"
        );
        assert_eq!(rows.len(), n * k, "weights: expected {n} x {k} values");
        let k_padded = round_up(k, K_ALIGN);
        let panels = n.div_ceil(NR);
        let mut data = vec![0i8; panels * k_padded * NR];
        let group = match kernel.format() {
            PackFormat::Pairs => 2,
            PackFormat::ShiftedQuads => 4,
        };
        for c in 0..n {
            let (panel, col) = (c / NR, c % NR);
            let base = panel * k_padded * NR;
            for (i, &w) in rows[c * k..(c + 1) * k].iter().enumerate() {
                let (g, j) = (i / group, i % group);
                data[base + g * NR * group + col * group + j] = w;
            }
        }
        let shift_correction = (0..panels * NR)
            .map(|c| {
                if c < n && kernel.format() == PackFormat::ShiftedQuads {
                    128 * rows[c * k..(c + 1) * k]
                        .iter()
                        .map(|&w| w as i32)
                        .sum::<i32>()
                } else {
                    0
                }
            })
            .collect();
        Self {
            kernel,
            k,
            k_padded,
            n,
            data,
            shift_correction,
        }
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Bytes held (what stays resident for this layer).
    pub fn resident_bytes(&self) -> usize {
        self.data.len() + self.shift_correction.len() * 4
    }

    fn panel(&self, p: usize) -> &[i8] {
        let len = self.k_padded * NR;
        &self.data[p * len..(p + 1) * len]
    }
}

/// Activations packed for one kernel: row panels of `mr` rows over the padded K, and the
/// scale that turns each row's u8 values back into f32.
#[derive(Debug)]
pub struct PackedActivations {
    kernel: Kernel,
    m: usize,
    k: usize,
    k_padded: usize,
    data: ActivationData,
    row_scales: Vec<f32>,
    /// One row before it is shifted into quads (`ShiftedQuads` only).
    scratch: Vec<MaybeUninit<u16>>,
}

#[derive(Debug)]
enum ActivationData {
    /// Per panel, per row, the padded K as u16 (AVX2 reads a pair as one i32). Row by row, so
    /// a row is quantized straight into its place.
    Rows(Vec<u16>),
    /// Per panel, per K quad, per row: four `a - 128` bytes.
    ShiftedQuads(Vec<i8>),
}

/// Makes GEMM row `row`: writes its `k` quantized values through the writer and returns their
/// scale.
pub trait FillRow: Fn(usize, &mut RowWriter) -> f32 + Sync {}
impl<F: Fn(usize, &mut RowWriter) -> f32 + Sync> FillRow for F {}

impl PackedActivations {
    /// Room for rows of `k` activations, none packed yet. Panics if this CPU cannot run
    /// `kernel`, as `PackedWeights::pack` does.
    fn empty(kernel: Kernel, k: usize) -> Self {
        kernel.check_may_pack();
        Self {
            kernel,
            m: 0,
            k,
            k_padded: round_up(k, K_ALIGN),
            data: match kernel.format() {
                PackFormat::Pairs => ActivationData::Rows(Vec::new()),
                PackFormat::ShiftedQuads => ActivationData::ShiftedQuads(Vec::new()),
            },
            row_scales: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Packs all `m` rows of `k` activations, a panel per rayon task; `fill(row, writer)`
    /// writes row `row`'s `k` quantized values in order and returns their scale. Panics if a
    /// row is given other than `k` values.
    pub fn pack<F: FillRow>(kernel: Kernel, m: usize, k: usize, fill: F) -> Self {
        let mut packed = Self::empty(kernel, k);
        let (mr, len) = (kernel.mr(), packed.make_room(m));
        let panel_len = mr * packed.k_padded;
        match &mut packed.data {
            ActivationData::Rows(data) => {
                data.spare_capacity_mut()[..len]
                    .par_chunks_mut(panel_len)
                    .zip(packed.row_scales.par_chunks_mut(mr))
                    .enumerate()
                    .for_each(|(p, (panel, scales))| {
                        pack_row_panel(panel, scales, p * mr, m, k, &fill)
                    });
                // SAFETY: `pack_row_panel` wrote each panel's every element.
                unsafe { data.set_len(len) };
            }
            ActivationData::ShiftedQuads(data) => {
                data.par_chunks_mut(panel_len)
                    .zip(packed.row_scales.par_chunks_mut(mr))
                    .enumerate()
                    .for_each_init(
                        || vec![MaybeUninit::new(0u16); k],
                        |scratch, (p, (panel, scales))| {
                            pack_quad_panel(panel, scales, p * mr, m, scratch, &fill)
                        },
                    );
            }
        }
        packed
    }

    /// Packs rows `first..first + count` of a larger matrix on this thread, reusing the
    /// buffers; row `r` of the result is row `first + r` of the matrix.
    fn repack<F: FillRow>(&mut self, first: usize, count: usize, fill: &F) {
        let (mr, k, len) = (self.kernel.mr(), self.k, self.make_room(count));
        let panel_len = mr * self.k_padded;
        let end = first + count;
        match &mut self.data {
            ActivationData::Rows(data) => {
                for (p, (panel, scales)) in data.spare_capacity_mut()[..len]
                    .chunks_mut(panel_len)
                    .zip(self.row_scales.chunks_mut(mr))
                    .enumerate()
                {
                    pack_row_panel(panel, scales, first + p * mr, end, k, fill);
                }
                // SAFETY: `pack_row_panel` wrote each panel's every element.
                unsafe { data.set_len(len) };
            }
            ActivationData::ShiftedQuads(data) => {
                self.scratch.resize(k, MaybeUninit::new(0));
                for (p, (panel, scales)) in data
                    .chunks_mut(panel_len)
                    .zip(self.row_scales.chunks_mut(mr))
                    .enumerate()
                {
                    pack_quad_panel(panel, scales, first + p * mr, end, &mut self.scratch, fill);
                }
            }
        }
    }

    /// Makes room for `rows` rows (whole panels) and returns the packed length: the row
    /// layout's buffer empty with that much capacity (each panel is written whole, padding
    /// included), the shifted quads' zeroed (their padding is left as is).
    fn make_room(&mut self, rows: usize) -> usize {
        let mr = self.kernel.mr();
        let panels = rows.div_ceil(mr);
        let len = panels * mr * self.k_padded;
        self.m = rows;
        self.row_scales.clear();
        self.row_scales.resize(panels * mr, 0.0);
        match &mut self.data {
            ActivationData::Rows(data) => {
                data.clear();
                data.reserve(len);
            }
            ActivationData::ShiftedQuads(data) => {
                data.clear();
                data.resize(len, 0);
            }
        }
        len
    }

    pub fn rows(&self) -> usize {
        self.m
    }
}

/// One panel of the row layout: matrix rows `first..` (those before `end`) quantized straight
/// into their places, their scales into `scales`. Every element is written once, the padding
/// (K past `k`, rows at or past `end`) with 0, so the panel may come uninitialised.
fn pack_row_panel<F: FillRow>(
    panel: &mut [MaybeUninit<u16>],
    scales: &mut [f32],
    first: usize,
    end: usize,
    k: usize,
    fill: &F,
) {
    let k_padded = panel.len() / scales.len();
    for (r, row) in panel.chunks_exact_mut(k_padded).enumerate() {
        let written = if first + r < end {
            let mut writer = RowWriter::new(&mut row[..k]);
            scales[r] = fill(first + r, &mut writer);
            writer.finish();
            k
        } else {
            0
        };
        row[written..].fill(MaybeUninit::new(0));
    }
}

/// One panel of the shifted-quad layout, each row through `scratch` (K values), then shifted
/// by -128 into quads. The panel comes zeroed: the padded K stays 0 (the weights there are
/// zero too, and the correction term only counts the real K).
fn pack_quad_panel<F: FillRow>(
    panel: &mut [i8],
    scales: &mut [f32],
    first: usize,
    end: usize,
    scratch: &mut [MaybeUninit<u16>],
    fill: &F,
) {
    let mr = scales.len();
    for (r, scale) in scales
        .iter_mut()
        .enumerate()
        .take(end.saturating_sub(first))
    {
        let mut writer = RowWriter::new(scratch);
        *scale = fill(first + r, &mut writer);
        writer.finish();
        for (g, values) in scratch.chunks(4).enumerate() {
            let at = (g * mr + r) * 4;
            for (t, a) in panel[at..at + values.len()].iter_mut().zip(values) {
                // SAFETY: the writer wrote the whole row (`finish` checked).
                let a = unsafe { a.assume_init() };
                *t = (a as i16 - 128) as i8;
            }
        }
    }
}

/// Writes one row of activations, front to back, into memory that may be uninitialised, and
/// counts what it wrote, so the packer knows the whole row was written.
pub struct RowWriter<'a> {
    out: &'a mut [MaybeUninit<u16>],
    written: usize,
}

impl<'a> RowWriter<'a> {
    fn new(out: &'a mut [MaybeUninit<u16>]) -> Self {
        Self { out, written: 0 }
    }

    /// Appends `values` quantized with the reciprocal of their scale (see
    /// `quantize_activations`).
    pub fn quantize(&mut self, values: &[f32], inverse_scale: f32) {
        let to = &mut self.out[self.written..self.written + values.len()];
        quantize_activations(values, inverse_scale, to);
        self.written += values.len();
    }

    /// Appends `count` zeros (zero padding is exactly 0 in u8).
    pub fn zeros(&mut self, count: usize) {
        self.out[self.written..self.written + count].fill(MaybeUninit::new(0));
        self.written += count;
    }

    /// Appends values already quantized.
    pub fn quantized(&mut self, values: &[u8]) {
        let to = &mut self.out[self.written..self.written + values.len()];
        for (t, &v) in to.iter_mut().zip(values) {
            t.write(v as u16);
        }
        self.written += values.len();
    }

    fn finish(self) {
        assert_eq!(
            self.written,
            self.out.len(),
            "an activation row was given {} of its {} values",
            self.written,
            self.out.len()
        );
    }
}

/// What turns an i32 tile into output:
/// `y = acc · (row_scale[m] · weight_scale[n]) + bias[n] (+ shortcut) (ReLU)`.
pub struct Epilogue<'a> {
    /// Per output channel.
    pub weight_scale: &'a [f32],
    pub bias: &'a [f32],
    /// The bottleneck's shortcut, [m, n] row-major.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// ReLU as the vector instruction computes it (`vmaxps v, 0`): anything not above zero, NaN
/// and -0 included, becomes +0, so every kernel gives the same bits.
#[inline(always)]
fn relu(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// Bytes of packed activations a GEMM task makes and keeps in L2 beside its weight block.
const ACTIVATIONS_IN_L2: usize = 192 * 1024;

/// `out[m, n] = epilogue(A · B)`, row-major [m, n], where row `i` of A is what
/// `fill(i, writer)` writes (and its scale what it returns). Every element of `out` is
/// written, so it may come uninitialised. With ReLU, `row_max` (one per row) receives each
/// output row's largest value: the next layer's activation scales, found here while the
/// values are in registers instead of by another pass over the output.
///
/// Each rayon task packs its own rows of A and multiplies them at once: the packed rows are
/// still in the core's cache when the kernel reads them, no matrix-sized buffer is made, and a
/// convolution is one parallel section, not two.
pub fn gemm<F: FillRow>(
    m: usize,
    fill: F,
    b: &PackedWeights,
    epilogue: &Epilogue,
    out: &mut [MaybeUninit<f32>],
    row_max: Option<&mut [f32]>,
) {
    let (n, kernel) = (b.n, b.kernel);
    assert_eq!(out.len(), m * n);
    assert!(epilogue.weight_scale.len() >= n && epilogue.bias.len() >= n);
    if let Some(r) = epilogue.residual {
        assert_eq!(r.len(), m * n);
    }
    let mut no_max = Vec::new();
    let row_max = match row_max {
        Some(max) => {
            assert!(epilogue.relu, "row maxima are kept for ReLU outputs only");
            assert_eq!(max.len(), m);
            max
        }
        None => &mut no_max[..],
    };
    let keep_max = !row_max.is_empty();
    let mr = kernel.mr();
    let row_panels = m.div_ceil(mr);
    // Tasks of a few row panels each: at least ~4 per thread so uneven tiles even out, and few
    // enough that each task reuses a weight panel across several row panels, but no more than
    // its packed rows' share of L2.
    let threads = rayon::current_num_threads().max(1);
    let panel_bytes = mr * b.k_padded * kernel.format().activation_bytes();
    let per_task = row_panels
        .div_ceil(4 * threads)
        .clamp(1, (ACTIVATIONS_IN_L2 / panel_bytes).clamp(1, 16));
    let task_rows = per_task * mr;
    let run = |rows: &mut PackedActivations,
               task: usize,
               out_rows: &mut [MaybeUninit<f32>],
               max: &mut [f32]| {
        let first = task * task_rows;
        rows.repack(first, task_rows.min(m - first), &fill);
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Avx2 {
            // SAFETY: the CPU has AVX2: the weights could not be packed for it otherwise
            // (`PackedWeights::pack` checks).
            unsafe { gemm_rows_avx2(rows, first, b, epilogue, out_rows, max) };
            return;
        }
        gemm_rows(rows, first, b, epilogue, out_rows, max);
    };
    let tasks = out.par_chunks_mut(task_rows * n).enumerate();
    let local = || PackedActivations::empty(kernel, b.k);
    if keep_max {
        tasks
            .zip(row_max.par_chunks_mut(task_rows))
            .for_each_init(local, |rows, ((task, out_rows), max)| {
                run(rows, task, out_rows, max)
            });
    } else {
        tasks.for_each_init(local, |rows, (task, out_rows)| {
            run(rows, task, out_rows, &mut [])
        });
    }
}

/// `gemm_rows` compiled for AVX2, with the AVX2 epilogue for whole tiles. The arithmetic is
/// the same operations in the same order as the scalar epilogue, so the results are the same
/// bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gemm_rows_avx2(
    a: &PackedActivations,
    first_row: usize,
    b: &PackedWeights,
    epilogue: &Epilogue,
    out_rows: &mut [MaybeUninit<f32>],
    row_max: &mut [f32],
) {
    gemm_rows(a, first_row, b, epilogue, out_rows, row_max)
}

/// One task of `gemm`: every row panel of `a` (rows `first_row..` of the whole product; output
/// rows `out_rows`, their maxima `row_max` when kept) against every column panel, each tile's
/// epilogue applied as it leaves the kernel.
#[inline(always)]
fn gemm_rows(
    a: &PackedActivations,
    first_row: usize,
    b: &PackedWeights,
    epilogue: &Epilogue,
    out_rows: &mut [MaybeUninit<f32>],
    row_max: &mut [f32],
) {
    let (m, n, kernel) = (a.m, b.n, a.kernel);
    let mr = kernel.mr();
    let col_panels = n.div_ceil(NR);
    let keep_max = !row_max.is_empty();
    row_max.fill(0.0);
    // The column panels go in blocks whose weights stay in L2 while every row panel of the
    // task passes over them; within a block, row panels outer and column panels inner, so
    // each output row (and its shortcut) is written (read) front to back across the block,
    // which the prefetchers follow.
    let block = (WEIGHTS_IN_L2 / (NR * b.k_padded)).clamp(1, col_panels);
    let mut acc = [0i32; 6 * NR];
    for first_col_panel in (0..col_panels).step_by(block) {
        for rp in 0..m.div_ceil(mr) {
            let local = rp * mr;
            let rows = mr.min(m - local);
            let m0 = first_row + local;
            for cp in first_col_panel..(first_col_panel + block).min(col_panels) {
                let n0 = cp * NR;
                if let Some(res) = epilogue.residual {
                    // The shortcut is read once, long after it was written: ask for the
                    // tile's lines now, so they arrive while the kernel runs.
                    for r in 0..rows {
                        let at = (m0 + r) * n + n0;
                        prefetch(&res[at..(at + NR).min(res.len())]);
                    }
                }
                run_kernel(a, rp, b, cp, &mut acc[..mr * NR]);
                if kernel.format() == PackFormat::ShiftedQuads {
                    for r in 0..mr {
                        for c in 0..NR {
                            acc[r * NR + c] += b.shift_correction[n0 + c];
                        }
                    }
                }
                let cols = NR.min(n - n0);
                let tile = Tile {
                    rows,
                    cols,
                    stride: n,
                    row_scale: &a.row_scales[local..local + rows],
                    weight_scale: &epilogue.weight_scale[n0..n0 + cols],
                    bias: &epilogue.bias[n0..n0 + cols],
                    residual: epilogue.residual.map(|r| &r[m0 * n + n0..]),
                    relu: epilogue.relu,
                };
                let out = &mut out_rows[local * n + n0..];
                let max = if keep_max {
                    &mut row_max[local..local + rows]
                } else {
                    &mut []
                };
                #[cfg(target_arch = "x86_64")]
                if kernel == Kernel::Avx2 && cols == NR {
                    // SAFETY: the CPU has AVX2 (packing checked that it runs the kernel); the
                    // epilogue checks the tile's extent itself.
                    unsafe { avx2::epilogue(&acc, &tile, out, max) };
                    continue;
                }
                epilogue_scalar(&acc, &tile, out, max);
            }
        }
    }
}

/// Asks for the cache lines holding `values` (first and last), without waiting for them.
#[inline(always)]
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(first), Some(last)) = (values.first(), values.last()) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint; it reads nothing and cannot fault (and SSE, which
        // defines it, is part of x86_64).
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first as *const f32 as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(last as *const f32 as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// Where one tile's accumulators go: `rows` x `cols` outputs at row stride `stride`, with the
/// scales, bias and shortcut that belong to them.
struct Tile<'a> {
    rows: usize,
    cols: usize,
    stride: usize,
    row_scale: &'a [f32],
    weight_scale: &'a [f32],
    bias: &'a [f32],
    /// From the tile's first output, at the same row stride.
    residual: Option<&'a [f32]>,
    relu: bool,
}

/// The epilogue, one value at a time: the definition the vector forms must match bit for bit.
/// `max`, when not empty, is raised to each row's largest output.
fn epilogue_scalar(acc: &[i32], tile: &Tile, out: &mut [MaybeUninit<f32>], max: &mut [f32]) {
    for r in 0..tile.rows {
        let row = &mut out[r * tile.stride..r * tile.stride + tile.cols];
        let residual = tile
            .residual
            .map(|res| &res[r * tile.stride..r * tile.stride + tile.cols]);
        let mut row_max = 0f32;
        for c in 0..tile.cols {
            let mut v =
                acc[r * NR + c] as f32 * (tile.row_scale[r] * tile.weight_scale[c]) + tile.bias[c];
            if let Some(res) = residual {
                v += res[c];
            }
            if tile.relu {
                v = relu(v);
                row_max = row_max.max(v);
            }
            row[c].write(v);
        }
        if let Some(m) = max.get_mut(r) {
            *m = m.max(row_max);
        }
    }
}

/// Raw i32 product (no epilogue), for tests and for checking kernels against each other.
pub fn gemm_i32(a: &PackedActivations, b: &PackedWeights) -> Vec<i32> {
    let (m, n, mr) = (a.m, b.n, a.kernel.mr());
    let mut out = vec![0i32; m * n];
    let mut acc = [0i32; 6 * NR];
    for cp in 0..n.div_ceil(NR) {
        for rp in 0..m.div_ceil(mr) {
            run_kernel(a, rp, b, cp, &mut acc[..mr * NR]);
            for r in 0..mr.min(m - rp * mr) {
                for c in 0..NR.min(n - cp * NR) {
                    out[(rp * mr + r) * n + cp * NR + c] =
                        acc[r * NR + c] + b.shift_correction[cp * NR + c];
                }
            }
        }
    }
    out
}

/// Row panel `panel` of `a` times column panel `col_panel` of `b`: one `mr x NR` tile over the
/// whole K into `acc` (overwritten). Panics if the operands were packed for different kernels
/// or K: the SIMD kernels read as far as the padded K reaches.
fn run_kernel(
    a: &PackedActivations,
    panel: usize,
    b: &PackedWeights,
    col_panel: usize,
    acc: &mut [i32],
) {
    assert_eq!(a.kernel, b.kernel, "operands packed for different kernels");
    assert_eq!(a.k_padded, b.k_padded, "operands disagree on K");
    let weights = b.panel(col_panel);
    let mr = a.kernel.mr();
    let len = mr * a.k_padded;
    match (&a.data, a.kernel) {
        (ActivationData::Rows(data), Kernel::Scalar) => scalar_pairs(
            &data[panel * len..(panel + 1) * len],
            weights,
            a.k_padded,
            acc,
        ),
        #[cfg(target_arch = "x86_64")]
        (ActivationData::Rows(data), Kernel::Avx2) => {
            let panel_data = &data[panel * len..(panel + 1) * len];
            // SAFETY: packed activations exist for a kernel only where the CPU runs it
            // (`PackedActivations::empty` checks); the kernel checks the slices' lengths.
            unsafe { avx2::tile(panel_data, weights, a.k_padded, acc) }
        }
        #[cfg(target_arch = "aarch64")]
        (ActivationData::ShiftedQuads(data), Kernel::NeonDot) => {
            let panel_data = &data[panel * len..(panel + 1) * len];
            // SAFETY: packed activations exist for a kernel only where the CPU runs it
            // (`PackedActivations::empty` checks); the kernel checks the slices' lengths.
            unsafe { neon::tile(panel_data, weights, a.k_padded, acc) }
        }
        (ActivationData::ShiftedQuads(data), _) => scalar_quads(
            &data[panel * len..(panel + 1) * len],
            weights,
            a.k_padded,
            acc,
        ),
        (ActivationData::Rows(_), other) => {
            unreachable!("{} packs shifted quads", other.name())
        }
    }
}

/// The reference: plain integer arithmetic over the row layout and K pairs (6 rows).
fn scalar_pairs(a: &[u16], b: &[i8], k_padded: usize, acc: &mut [i32]) {
    const MR: usize = 6;
    acc.fill(0);
    for p in 0..k_padded / 2 {
        let bp = &b[p * NR * 2..(p + 1) * NR * 2];
        for r in 0..MR {
            let ap = &a[r * k_padded + 2 * p..];
            let (a0, a1) = (ap[0] as i32, ap[1] as i32);
            for c in 0..NR {
                acc[r * NR + c] += a0 * bp[c * 2] as i32 + a1 * bp[c * 2 + 1] as i32;
            }
        }
    }
}

/// The reference over the shifted-quad layout (4 rows), for machines without `sdot`'s
/// extension and for testing the NEON kernel's packing everywhere.
fn scalar_quads(a: &[i8], b: &[i8], k_padded: usize, acc: &mut [i32]) {
    const MR: usize = 4;
    acc.fill(0);
    for q in 0..k_padded / 4 {
        let aq = &a[q * MR * 4..(q + 1) * MR * 4];
        let bq = &b[q * NR * 4..(q + 1) * NR * 4];
        for r in 0..MR {
            for c in 0..NR {
                let mut s = 0i32;
                for j in 0..4 {
                    s += aq[r * 4 + j] as i32 * bq[c * 4 + j] as i32;
                }
                acc[r * NR + c] += s;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Tile, NR};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    const MR: usize = 6;

    /// One K pair of one row: broadcast the row's pair at byte offset `$off` past `{i}` and
    /// add its products with both weight halves into the row's two accumulators.
    macro_rules! row_pair {
        ($row:literal, $c0:literal, $c1:literal, $off:literal) => {
            concat!(
                "vpbroadcastd ymm14, dword ptr [{a",
                $row,
                "} + {i} + ",
                $off,
                "]\n",
                "vpmaddwd ymm15, ymm14, ymm12\n",
                "vpaddd ",
                $c0,
                ", ",
                $c0,
                ", ymm15\n",
                "vpmaddwd ymm14, ymm14, ymm13\n",
                "vpaddd ",
                $c1,
                ", ",
                $c1,
                ", ymm14\n",
            )
        };
    }

    /// One K pair of the whole tile: the 16 columns' weight pair at byte offset `$w` past
    /// `{b}`, widened to i16 (columns 0-7 in ymm12, 8-15 in ymm13), then every row.
    macro_rules! tile_pair {
        ($w:literal, $off:literal) => {
            concat!(
                "vpmovsxbw ymm12, xmmword ptr [{b} + ",
                $w,
                "]\n",
                "vpmovsxbw ymm13, xmmword ptr [{b} + ",
                $w,
                " + 16]\n",
                row_pair!("0", "ymm0", "ymm1", $off),
                row_pair!("1", "ymm2", "ymm3", $off),
                row_pair!("2", "ymm4", "ymm5", $off),
                row_pair!("3", "ymm6", "ymm7", $off),
                row_pair!("4", "ymm8", "ymm9", $off),
                row_pair!("5", "ymm10", "ymm11", $off),
            )
        };
    }

    /// `acc[r][c] = Σ_k a[r][k] · b[k][c]`, K a pair at a time, with `vpmaddwd`.
    ///
    /// Written in assembly to spend as few instructions as possible besides the multiply-adds:
    /// one pointer per row (each broadcast addresses its pair with no arithmetic), two K pairs
    /// per iteration, all 16 ymm registers used (12 accumulators, the two weight halves, the
    /// broadcast and one product). The compiler's loop spent a third more instructions on
    /// addressing and, unrolled, spilled accumulators to the stack. On an idle core both run
    /// near `vpmaddwd`'s own limit; on a core shared with other work (a busy host), the
    /// leaner loop kept the forward pass 5-9% faster. The operations and their order per
    /// accumulator are those of `scalar_pairs`: integer sums, exact, the same bits.
    #[target_feature(enable = "avx2")]
    pub unsafe fn tile(a: &[u16], b: &[i8], k_padded: usize, acc: &mut [i32]) {
        assert!(a.len() >= MR * k_padded && b.len() >= NR * k_padded);
        assert!(acc.len() >= MR * NR);
        // Whole pairs of K pairs, and at least one (the loop tests at its end).
        assert!(k_padded > 0 && k_padded % 4 == 0);
        // SAFETY: the asserts above keep every pointer below within `a`, `b` and `acc` (the
        // comment on the loop details it); the caller guarantees AVX2.
        unsafe {
            let row = |r: usize| a.as_ptr().add(r * k_padded);
            let mut c = [_mm256_setzero_si256(); 2 * MR];
            let [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11] = &mut c;
            // SAFETY: each iteration reads two u32 pairs at `row(r) + i` (i < 2 · k_padded bytes,
            // within row r's k_padded u16 values) and 64 bytes at `b` (NR · 4 weights, within the
            // panel's NR · k_padded bytes, which `b` walks in steps of 64 until `i` reaches the
            // row's end). Registers: ymm0-11 the accumulators, ymm12-15 scratch (declared).
            std::arch::asm!(
                "2:",
                tile_pair!("0", "0"),
                tile_pair!("32", "4"),
                "add {b}, 64",
                "add {i}, 8",
                "cmp {i}, {end}",
                "jb 2b",
                a0 = in(reg) row(0),
                a1 = in(reg) row(1),
                a2 = in(reg) row(2),
                a3 = in(reg) row(3),
                a4 = in(reg) row(4),
                a5 = in(reg) row(5),
                b = inout(reg) b.as_ptr() => _,
                i = inout(reg) 0usize => _,
                end = in(reg) 2 * k_padded,
                inout("ymm0") *c0,
                inout("ymm1") *c1,
                inout("ymm2") *c2,
                inout("ymm3") *c3,
                inout("ymm4") *c4,
                inout("ymm5") *c5,
                inout("ymm6") *c6,
                inout("ymm7") *c7,
                inout("ymm8") *c8,
                inout("ymm9") *c9,
                inout("ymm10") *c10,
                inout("ymm11") *c11,
                out("ymm12") _,
                out("ymm13") _,
                out("ymm14") _,
                out("ymm15") _,
                options(nostack, readonly),
            );
            for (r, pair) in c.chunks_exact(2).enumerate() {
                _mm256_storeu_si256(acc.as_mut_ptr().add(r * NR) as *mut __m256i, pair[0]);
                _mm256_storeu_si256(acc.as_mut_ptr().add(r * NR + 8) as *mut __m256i, pair[1]);
            }
        }
    }

    /// `epilogue_scalar` for a tile of NR columns, eight at a time: the same multiplications
    /// and additions in the same order (no fused multiply-add), so the same bits. Panics
    /// unless the tile is NR columns wide with its scales, bias and accumulators all there
    /// (the loads below read them whole).
    #[target_feature(enable = "avx2")]
    pub unsafe fn epilogue(
        acc: &[i32],
        tile: &Tile,
        out: &mut [MaybeUninit<f32>],
        max: &mut [f32],
    ) {
        assert!(tile.cols == NR && tile.weight_scale.len() >= NR && tile.bias.len() >= NR);
        assert!(acc.len() >= tile.rows * NR);
        // SAFETY: the assert above guarantees NR scales, NR biases and the tile's rows of NR
        // accumulators; each row of `out` and of the shortcut is a slice of NR; the caller
        // guarantees AVX2.
        unsafe {
            let ws = [
                _mm256_loadu_ps(tile.weight_scale.as_ptr()),
                _mm256_loadu_ps(tile.weight_scale.as_ptr().add(8)),
            ];
            let bias = [
                _mm256_loadu_ps(tile.bias.as_ptr()),
                _mm256_loadu_ps(tile.bias.as_ptr().add(8)),
            ];
            let zero = _mm256_setzero_ps();
            for r in 0..tile.rows {
                let at = r * tile.stride;
                let row = &mut out[at..at + NR];
                let residual = tile.residual.map(|res| &res[at..at + NR]);
                let row_scale = _mm256_set1_ps(tile.row_scale[r]);
                let mut row_max = zero;
                for half in 0..2 {
                    let sums =
                        _mm256_loadu_si256(acc.as_ptr().add(r * NR + 8 * half) as *const __m256i);
                    let scale = _mm256_mul_ps(row_scale, ws[half]);
                    let mut v =
                        _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(sums), scale), bias[half]);
                    if let Some(res) = residual {
                        v = _mm256_add_ps(v, _mm256_loadu_ps(res.as_ptr().add(8 * half)));
                    }
                    if tile.relu {
                        // vmaxps returns its second operand unless the first is greater: `relu`.
                        v = _mm256_max_ps(v, zero);
                        row_max = _mm256_max_ps(row_max, v);
                    }
                    _mm256_storeu_ps(row.as_mut_ptr().add(8 * half) as *mut f32, v);
                }
                if let Some(m) = max.get_mut(r) {
                    // Eight lanes to one, in registers. Post-ReLU values hold no NaN, so the order
                    // of the comparisons does not change the result.
                    let four = _mm_max_ps(
                        _mm256_castps256_ps128(row_max),
                        _mm256_extractf128_ps::<1>(row_max),
                    );
                    let two = _mm_max_ps(four, _mm_movehl_ps(four, four));
                    let one = _mm_max_ss(two, _mm_shuffle_ps::<1>(two, two));
                    *m = m.max(_mm_cvtss_f32(one));
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::NR;
    use std::arch::aarch64::*;
    use std::arch::asm;

    const MR: usize = 4;

    /// `sdot acc.4s, w.16b, x.4b[LANE]`: each 32-bit lane of `acc` gains the dot product of its
    /// four weight bytes with the four activation bytes of row LANE.
    macro_rules! sdot_lane {
        ($acc:expr, $w:expr, $x:expr, $lane:literal) => {
            asm!(
                concat!("sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[", $lane, "]"),
                acc = inout(vreg) $acc,
                w = in(vreg) $w,
                x = in(vreg) $x,
                options(pure, nomem, nostack)
            )
        };
    }

    /// `acc[r][c] = Σ_q a[q][r] · b[q][c]` over K quads with `sdot` (activations pre-shifted).
    #[target_feature(enable = "neon,dotprod")]
    pub unsafe fn tile(a: &[i8], b: &[i8], k_padded: usize, acc: &mut [i32]) {
        assert!(a.len() >= MR * k_padded && b.len() >= NR * k_padded);
        assert!(acc.len() >= MR * NR);
        // SAFETY: the asserts above keep every load within `a` and `b` and every store within
        // `acc`; the caller guarantees NEON and dotprod.
        unsafe {
            let mut c = [[vdupq_n_s32(0); 4]; MR];
            let (a, b) = (a.as_ptr(), b.as_ptr());
            for q in 0..k_padded / 4 {
                let wq = b.add(q * NR * 4);
                let w = [
                    vld1q_s8(wq),
                    vld1q_s8(wq.add(16)),
                    vld1q_s8(wq.add(32)),
                    vld1q_s8(wq.add(48)),
                ];
                // Four rows x four bytes: one register, each row a lane.
                let x = vld1q_s8(a.add(q * MR * 4));
                for j in 0..4 {
                    sdot_lane!(c[0][j], w[j], x, "0");
                    sdot_lane!(c[1][j], w[j], x, "1");
                    sdot_lane!(c[2][j], w[j], x, "2");
                    sdot_lane!(c[3][j], w[j], x, "3");
                }
            }
            for (r, row) in c.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    vst1q_s32(acc.as_mut_ptr().add(r * NR + j * 4), *v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so failures reproduce.
    fn values(seed: u64, len: usize) -> Vec<u64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            })
            .collect()
    }

    fn naive(a: &[u8], b_rows: &[i8], m: usize, n: usize, k: usize) -> Vec<i32> {
        let mut c = vec![0i32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|x| a[i * k + x] as i32 * b_rows[j * k + x] as i32)
                    .sum();
            }
        }
        c
    }

    fn pack_both(kernel: Kernel, a: &[u8], b: &[i8], m: usize, n: usize, k: usize) -> Vec<i32> {
        let pa = PackedActivations::pack(kernel, m, k, |row, out| {
            out.quantized(&a[row * k..(row + 1) * k]);
            1.0
        });
        let pb = PackedWeights::pack(kernel, b, n, k);
        gemm_i32(&pa, &pb)
    }

    #[test]
    fn every_kernel_matches_the_naive_product_exactly_on_ragged_shapes() {
        // Shapes that leave partial row panels, partial column panels and padded K.
        for (i, &(m, n, k)) in [
            (1, 1, 1),
            (7, 17, 5),
            (13, 33, 66),
            (49, 64, 576),
            (6, 16, 8),
        ]
        .iter()
        .enumerate()
        {
            let a: Vec<u8> = values(i as u64, m * k).iter().map(|v| *v as u8).collect();
            let b: Vec<i8> = values(100 + i as u64, n * k)
                .iter()
                .map(|v| (*v as u8 as i8).max(-127))
                .collect();
            let expected = naive(&a, &b, m, n, k);
            for kernel in Kernel::available() {
                assert_eq!(
                    pack_both(kernel, &a, &b, m, n, k),
                    expected,
                    "{} on {m}x{n}x{k}",
                    kernel.name()
                );
            }
            // The shifted-quad packing, through the scalar reference, on every machine.
            let pa = PackedActivations::pack(Kernel::NeonDot, m, k, |row, out| {
                out.quantized(&a[row * k..(row + 1) * k]);
                1.0
            });
            let pb = PackedWeights::pack(Kernel::NeonDot, &b, n, k);
            if !Kernel::NeonDot.is_available() {
                assert_eq!(gemm_i32(&pa, &pb), expected, "shifted quads on {m}x{n}x{k}");
            }
        }
    }

    #[test]
    fn extreme_values_do_not_saturate() {
        let (m, n, k) = (6, 16, 4608);
        let a = vec![255u8; m * k];
        let b: Vec<i8> = (0..n * k)
            .map(|i| if i % 2 == 0 { -128 } else { 127 })
            .collect();
        let expected = naive(&a, &b, m, n, k);
        for kernel in Kernel::available() {
            assert_eq!(
                pack_both(kernel, &a, &b, m, n, k),
                expected,
                "{}",
                kernel.name()
            );
        }
    }

    /// `gemm` over rows `a` ([m, k] u8, row `i`'s scale `row_scale(i)`) into a fresh buffer;
    /// with ReLU, also each row's maximum.
    fn run_gemm(
        a: &[u8],
        row_scale: impl Fn(usize) -> f32 + Sync,
        pb: &PackedWeights,
        epilogue: &Epilogue,
    ) -> (Vec<f32>, Vec<f32>) {
        let (k, n) = (pb.k(), pb.n());
        let m = a.len() / k;
        let mut out = Vec::with_capacity(m * n);
        let mut max = vec![f32::NAN; if epilogue.relu { m } else { 0 }];
        let keep = (!max.is_empty()).then_some(&mut max[..]);
        gemm(
            m,
            |row, out: &mut RowWriter| {
                out.quantized(&a[row * k..(row + 1) * k]);
                row_scale(row)
            },
            pb,
            epilogue,
            &mut out.spare_capacity_mut()[..m * n],
            keep,
        );
        // SAFETY: `gemm` writes every element.
        unsafe { out.set_len(m * n) };
        (out, max)
    }

    #[test]
    fn the_epilogue_is_identical_for_every_kernel() {
        // 40 columns: two whole column panels and a ragged one; 50 rows: a ragged row panel.
        // 700 rows of K 600: many tasks, each packing its own rows, the last one ragged.
        for (seed, (m, n, k)) in [(50, 40, 72), (700, 24, 600)].into_iter().enumerate() {
            let seed = 10 * seed as u64;
            let a: Vec<u8> = values(seed + 1, m * k).iter().map(|v| *v as u8).collect();
            let b: Vec<i8> = values(seed + 2, n * k)
                .iter()
                .map(|v| *v as u8 as i8)
                .collect();
            let scale: Vec<f32> = (0..n).map(|j| 1e-4 * (1.0 + j as f32)).collect();
            let row_scale = |i: usize| 0.5 + (i % 97) as f32 * 0.01;
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 5.0).collect();
            let residual: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 - 3.0).collect();
            let exact = naive(&a, &b, m, n, k);
            for (relu, shortcut) in [(true, true), (false, true), (true, false)] {
                let epilogue = Epilogue {
                    weight_scale: &scale,
                    bias: &bias,
                    residual: shortcut.then_some(&residual[..]),
                    relu,
                };
                let run = |kernel: Kernel| {
                    let pb = PackedWeights::pack(kernel, &b, n, k);
                    run_gemm(&a, row_scale, &pb, &epilogue)
                };
                let (reference, reference_max) = run(Kernel::Scalar);
                for i in 0..m {
                    let mut row_max = 0f32;
                    for j in 0..n {
                        let mut v = exact[i * n + j] as f32 * (row_scale(i) * scale[j]) + bias[j];
                        if shortcut {
                            v += residual[i * n + j];
                        }
                        if relu {
                            v = v.max(0.0);
                            row_max = row_max.max(v);
                        }
                        assert_eq!(reference[i * n + j].to_bits(), v.to_bits(), "{i}, {j}");
                    }
                    if relu {
                        assert_eq!(reference_max[i], row_max, "row {i}");
                    }
                }
                let mut kernels = Kernel::available();
                if !Kernel::NeonDot.is_available() {
                    // The shifted-quad packing, through the scalar reference, everywhere.
                    kernels.push(Kernel::NeonDot);
                }
                for kernel in kernels {
                    let (out, max) = run(kernel);
                    assert!(
                        out.iter()
                            .zip(&reference)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{} differs from the scalar reference on {m}x{n}x{k} (ReLU {relu}, \
                         shortcut {shortcut})",
                        kernel.name()
                    );
                    assert_eq!(max, reference_max, "{}: row maxima", kernel.name());
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "an activation row was given 3 of its 4 values")]
    fn a_row_short_of_values_is_refused() {
        PackedActivations::pack(Kernel::Scalar, 2, 4, |_, out| {
            out.quantized(&[1, 2, 3]);
            1.0
        });
    }

    #[test]
    fn relu_turns_nan_and_negative_zero_into_zero_like_the_vector_instruction() {
        assert_eq!(relu(f32::NAN).to_bits(), 0f32.to_bits());
        assert_eq!(relu(-0.0).to_bits(), 0f32.to_bits());
        assert_eq!(relu(-1.5).to_bits(), 0f32.to_bits());
        assert_eq!(relu(2.5), 2.5);
    }
}
