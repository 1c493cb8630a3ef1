//! The ROC plot as a PNG, like the paper's Fig. 3: one curve per cohort, each reader as a
//! point at (1 − specificity, sensitivity) in the cohort's colour, the diagonal for chance.
//! Drawn directly on an RGB image (text in an 8x8 bitmap font), so it needs no font files or
//! plotting system on the cart or the researcher's machine.

use image::{Rgb, RgbImage};

use super::results::{CohortReport, EvalReport};
use crate::draw::{line, put, text};

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
