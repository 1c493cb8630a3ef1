//! Preprocessing against Pillow's own output (`tools/pillow_fixtures.py` →
//! `tests/data/pillow/`): `convert("L")` exactly, and crop + gray + resize to 224 within ±1
//! gray level per pixel for bilinear and bicubic, shrinking and enlarging.

use ceusd::capture::load_frame;
use ceusd::model::preprocess::resize_gray;
use ceusd::model::ResizeFilter;
use ceusd::roi::Roi;
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pillow")
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap()).unwrap()
}

fn gray_png(name: &str) -> image::GrayImage {
    image::open(dir().join(name)).unwrap().to_luma8()
}

#[test]
fn gray_conversion_equals_pillow_exactly() {
    let m = manifest();
    let cases = m["gray"].as_array().unwrap();
    assert!(!cases.is_empty());
    for c in cases {
        let src = load_frame(&dir().join(c["gray_source"].as_str().unwrap()), 0).unwrap();
        let ours = src
            .picture
            .gray_roi(&Roi::full(src.picture.width(), src.picture.height()))
            .unwrap();
        let pillow = gray_png(c["gray_expected"].as_str().unwrap());
        assert_eq!(ours.dimensions(), pillow.dimensions());
        let differing = ours
            .as_raw()
            .iter()
            .zip(pillow.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "{}: {differing} pixels differ",
            c["gray_source"]
        );
    }
}

#[test]
fn crop_gray_resize_matches_pillow_within_one_level() {
    let m = manifest();
    let cases = m["cases"].as_array().unwrap();
    let mut filters_seen = std::collections::BTreeSet::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let roi_v: Vec<u32> = c["roi"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let roi = Roi {
            x: roi_v[0],
            y: roi_v[1],
            width: roi_v[2],
            height: roi_v[3],
        };
        let filter: ResizeFilter = c["filter"].as_str().unwrap().parse().unwrap();
        filters_seen.insert(format!(
            "{filter:?}-{}",
            if roi.width > 224 { "down" } else { "up" }
        ));
        let src = load_frame(&dir().join(c["source"].as_str().unwrap()), 0).unwrap();
        let gray = src.picture.gray_roi(&roi).unwrap();
        let ours = resize_gray(&gray, 224, filter).unwrap();
        let pillow = gray_png(c["expected"].as_str().unwrap());
        assert_eq!(ours.dimensions(), (224, 224));
        let diffs: Vec<i32> = ours
            .as_raw()
            .iter()
            .zip(pillow.as_raw())
            .map(|(a, b)| *a as i32 - *b as i32)
            .collect();
        let max = diffs.iter().map(|d| d.abs()).max().unwrap();
        let off = diffs.iter().filter(|d| **d != 0).count();
        assert!(
            max <= 1,
            "{name}: max |diff| {max}, {off} of {} pixels differ",
            diffs.len()
        );
    }
    for needed in ["Bilinear-down", "Bilinear-up", "Bicubic-down", "Bicubic-up"] {
        assert!(
            filters_seen.contains(needed),
            "no {needed} case in the fixtures: {filters_seen:?}"
        );
    }
}
