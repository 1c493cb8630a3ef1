//! The ROC plot as a PNG, like the paper's Fig. 3: one curve per cohort, each reader as a
//! point at (1 − specificity, sensitivity) in the cohort's colour, the diagonal for chance.
//! Drawn directly on an RGB image (text in an 8x8 bitmap font), so it needs no font files or
//! plotting system on the cart or the researcher's machine.

use font8x8::legacy::BASIC_LEGACY;
use image::{Rgb, RgbImage};

use super::results::EvalReport;

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

pub fn roc_png(report: &EvalReport) -> RgbImage {
    let mut img = RgbImage::from_pixel(SIZE, SIZE, Rgb([255, 255, 255]));
    let (black, grid) = ([0, 0, 0], [225, 225, 225]);
    for k in 0..=5 {
        let v = k as f64 / 5.0;
        line(&mut img, to_px(v, 0.0), to_px(v, 1.0), grid, 1, false);
        line(&mut img, to_px(0.0, v), to_px(1.0, v), grid, 1, false);
        let label = format!("{v:.1}");
        let (x, y) = to_px(v, 0.0);
        text(&mut img, x - 12.0, y + 8.0, &label, black, 1);
        let (x, y) = to_px(0.0, v);
        text(&mut img, x - 32.0, y - 4.0, &label, black, 1);
    }
    line(
        &mut img,
        to_px(0.0, 0.0),
        to_px(1.0, 1.0),
        [150, 150, 150],
        1,
        true,
    );
    line(&mut img, to_px(0.0, 0.0), to_px(1.0, 0.0), black, 2, false);
    line(&mut img, to_px(0.0, 0.0), to_px(0.0, 1.0), black, 2, false);
    text(
        &mut img,
        LEFT + PLOT / 2.0 - 104.0,
        TOP + PLOT + 28.0,
        "1 - Specificity",
        black,
        2,
    );
    text(&mut img, 8.0, 16.0, "Sensitivity", black, 2);

    let mut legend_y = TOP + PLOT - 20.0 - 16.0 * report.cohorts.len() as f64;
    for (i, c) in report.cohorts.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for pair in c.roc.windows(2) {
            line(
                &mut img,
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
                disc(&mut img, at, 6.0, black);
                disc(&mut img, at, 4.5, colour);
                text(
                    &mut img,
                    at.0 + 8.0,
                    at.1 - 12.0,
                    &format!("R{}", r + 1),
                    colour,
                    1,
                );
            }
        }
        let auc = c
            .auc
            .map(|a| format!("{a:.3}"))
            .unwrap_or_else(|| "-".into());
        line(
            &mut img,
            (LEFT + PLOT * 0.45, legend_y + 4.0),
            (LEFT + PLOT * 0.45 + 24.0, legend_y + 4.0),
            colour,
            3,
            false,
        );
        text(
            &mut img,
            LEFT + PLOT * 0.45 + 32.0,
            legend_y,
            &format!("{} AUC {auc}", c.name),
            black,
            1,
        );
        legend_y += 16.0;
    }
    if let Some(first) = report.cohorts.first() {
        let names: Vec<String> = first
            .readers
            .iter()
            .enumerate()
            .map(|(r, rd)| format!("R{}={}", r + 1, rd.name))
            .collect();
        if !names.is_empty() {
            text(
                &mut img,
                LEFT + PLOT * 0.45,
                legend_y + 4.0,
                &names.join(" "),
                black,
                1,
            );
        }
    }
    img
}
