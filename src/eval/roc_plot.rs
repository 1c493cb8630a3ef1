//! The ROC plot as a PNG, like the paper's Fig. 3: one curve per cohort, each reader as a
//! point at (1 − specificity, sensitivity) in the cohort's colour, the diagonal for chance.
//! Drawn directly on an RGB image (text in an 8x8 bitmap font), so it needs no font files or
//! plotting system on the cart or the researcher's machine.

use font8x8::legacy::BASIC_LEGACY;
use image::{Rgb, RgbImage};

use super::results::{CohortReport, EvalReport};

const SIZE: u32 = 720;
const LEFT: f64 = 80.0;
const TOP: f64 = 50.0;
const PLOT: f64 = 560.0;
const COLOURS: [[u8; 3]; 6] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [148, 103, 189],
    [255, 127, 14],
    [23, 190, 207],
];

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

fn line(
    img: &mut RgbImage,
    (x0, y0): (f64, f64),
    (x1, y1): (f64, f64),
    c: [u8; 3],
    width: i64,
    dash: bool,
) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) * 2.0).ceil().max(1.0) as usize;
    for i in 0..=steps {
        if dash && (i / 12) % 2 == 1 {
            continue;
        }
        let t = i as f64 / steps as f64;
        let (x, y) = (
            (x0 + t * (x1 - x0)).round() as i64,
            (y0 + t * (y1 - y0)).round() as i64,
        );
        for dx in -(width / 2)..=(width - 1) / 2 {
            for dy in -(width / 2)..=(width - 1) / 2 {
                put(img, x + dx, y + dy, c);
            }
        }
    }
}

fn disc(img: &mut RgbImage, (cx, cy): (f64, f64), r: f64, c: [u8; 3]) {
    let ri = r.ceil() as i64;
    for dy in -ri..=ri {
        for dx in -ri..=ri {
            if (dx * dx + dy * dy) as f64 <= r * r {
                put(img, cx.round() as i64 + dx, cy.round() as i64 + dy, c);
            }
        }
    }
}

fn text(img: &mut RgbImage, x: f64, y: f64, s: &str, c: [u8; 3], scale: i64) {
    for (i, ch) in s.chars().enumerate() {
        let glyph = BASIC_LEGACY.get(ch as usize).copied().unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    for sy in 0..scale {
                        for sx in 0..scale {
                            put(
                                img,
                                x as i64 + (i as i64 * 8 + col) * scale + sx,
                                y as i64 + row as i64 * scale + sy,
                                c,
                            );
                        }
                    }
                }
            }
        }
    }
}

fn to_px(fpr: f64, tpr: f64) -> (f64, f64) {
    (LEFT + fpr * PLOT, TOP + (1.0 - tpr) * PLOT)
}

const BLACK: [u8; 3] = [0, 0, 0];

/// The plot: the axes, then each cohort's curve and readers in the cohort's colour, and the
/// legend.
pub fn roc_png(report: &EvalReport) -> RgbImage {
    let mut img = RgbImage::from_pixel(SIZE, SIZE, Rgb([255, 255, 255]));
    draw_axes(&mut img);
    let mut legend_y = TOP + PLOT - 20.0 - 16.0 * report.cohorts.len() as f64;
    for (i, c) in report.cohorts.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        draw_cohort(&mut img, c, colour);
        draw_legend_entry(&mut img, c, colour, legend_y);
        legend_y += 16.0;
    }
    if let Some(first) = report.cohorts.first() {
        draw_reader_names(&mut img, first, legend_y);
    }
    img
}

/// The grid with its tick labels, the chance diagonal, the axes and their titles.
fn draw_axes(img: &mut RgbImage) {
    let grid = [225, 225, 225];
    for k in 0..=5 {
        let v = k as f64 / 5.0;
        line(img, to_px(v, 0.0), to_px(v, 1.0), grid, 1, false);
        line(img, to_px(0.0, v), to_px(1.0, v), grid, 1, false);
        let label = format!("{v:.1}");
        let (x, y) = to_px(v, 0.0);
        text(img, x - 12.0, y + 8.0, &label, BLACK, 1);
        let (x, y) = to_px(0.0, v);
        text(img, x - 32.0, y - 4.0, &label, BLACK, 1);
    }
    line(
        img,
        to_px(0.0, 0.0),
        to_px(1.0, 1.0),
        [150, 150, 150],
        1,
        true,
    );
    line(img, to_px(0.0, 0.0), to_px(1.0, 0.0), BLACK, 2, false);
    line(img, to_px(0.0, 0.0), to_px(0.0, 1.0), BLACK, 2, false);
    text(
        img,
        LEFT + PLOT / 2.0 - 104.0,
        TOP + PLOT + 28.0,
        "1 - Specificity",
        BLACK,
        2,
    );
    text(img, 8.0, 16.0, "Sensitivity", BLACK, 2);
}

/// A cohort's ROC curve, and each of its readers as a numbered point.
fn draw_cohort(img: &mut RgbImage, c: &CohortReport, colour: [u8; 3]) {
    for pair in c.roc.windows(2) {
        line(
            img,
            to_px(pair[0].false_positive_rate, pair[0].true_positive_rate),
            to_px(pair[1].false_positive_rate, pair[1].true_positive_rate),
            colour,
            3,
            false,
        );
    }
    for (r, reader) in c.readers.iter().enumerate() {
        if let (Some(sens), Some(spec)) = (reader.sensitivity.value, reader.specificity.value) {
            let at = to_px(1.0 - spec, sens);
            disc(img, at, 6.0, BLACK);
            disc(img, at, 4.5, colour);
            text(
                img,
                at.0 + 8.0,
                at.1 - 12.0,
                &format!("R{}", r + 1),
                colour,
                1,
            );
        }
    }
}

/// The cohort's line in the legend: its colour, name and AUC.
fn draw_legend_entry(img: &mut RgbImage, c: &CohortReport, colour: [u8; 3], y: f64) {
    let auc = c
        .auc
        .map(|a| format!("{a:.3}"))
        .unwrap_or_else(|| "-".into());
    line(
        img,
        (LEFT + PLOT * 0.45, y + 4.0),
        (LEFT + PLOT * 0.45 + 24.0, y + 4.0),
        colour,
        3,
        false,
    );
    text(
        img,
        LEFT + PLOT * 0.45 + 32.0,
        y,
        &format!("{} AUC {auc}", c.name),
        BLACK,
        1,
    );
}

/// Under the legend, who each reader number is (`R1=name`), from the first cohort.
fn draw_reader_names(img: &mut RgbImage, first: &CohortReport, y: f64) {
    let names: Vec<String> = first
        .readers
        .iter()
        .enumerate()
        .map(|(r, rd)| format!("R{}={}", r + 1, rd.name))
        .collect();
    if !names.is_empty() {
        text(img, LEFT + PLOT * 0.45, y + 4.0, &names.join(" "), BLACK, 1);
    }
}
