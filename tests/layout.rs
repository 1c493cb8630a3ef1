//! Scanner layouts: pane detection on synthetic frames of several layouts, presets, and the
//! B-mode → CEUS ROI mapping.

use ceusd::capture::frame::LumaRange;
use ceusd::capture::source::Pacing;
use ceusd::capture::synthetic::{LesionKind, SyntheticConfig, SyntheticScanner};
use ceusd::layout::{detect, preset, Layout, LayoutError};
use ceusd::roi::Roi;
use image::GrayImage;

fn close(a: &Roi, b: &Roi, tol: u32) -> bool {
    a.x.abs_diff(b.x) <= tol
        && a.y.abs_diff(b.y) <= tol
        && a.width.abs_diff(b.width) <= 2 * tol
        && a.height.abs_diff(b.height) <= 2 * tol
}

fn synthetic(width: u32, height: u32, seed: u64) -> SyntheticScanner {
    let c = SyntheticConfig {
        width,
        height,
        fps: 1.0,
        duration_s: 60.0,
        ..SyntheticConfig::new(LesionKind::Pdac, seed)
    };
    SyntheticScanner::new(c, Pacing::AsFastAsPossible).unwrap()
}

fn gray(s: &mut SyntheticScanner, index: u64) -> GrayImage {
    let f = s.frame(index);
    f.gray_region(&Roi::full(f.width, f.height), LumaRange::Full)
        .unwrap()
}

fn assert_close(found: &Layout, bmode: &Roi, ceus: &Roi, tol: u32, what: &str) {
    assert!(
        close(&found.bmode, bmode, tol),
        "{what}: B-mode {} vs {bmode}",
        found.bmode
    );
    assert!(
        close(&found.ceus, ceus, tol),
        "{what}: CEUS {} vs {ceus}",
        found.ceus
    );
}

#[test]
fn panes_are_found_on_synthetic_frames_of_several_sizes() {
    for (w, h) in [(1280, 720), (1920, 1080), (640, 360), (800, 600)] {
        for seed in [1, 2] {
            let mut s = synthetic(w, h, seed);
            let truth = s.truth().clone();
            let found = detect(&gray(&mut s, 40)).unwrap();
            let tol = (w / 100).max(3);
            let what = format!("{w}x{h} seed {seed}");
            assert_close(&found, &truth.bmode_pane, &truth.ceus_pane, tol, &what);
        }
    }
}

/// The exam opens on its first frame, long before the contrast arrives: the CEUS pane is then
/// nearly black, a few gray levels of speckle, and must still be found.
#[test]
fn panes_are_found_before_the_contrast_arrives_at_720p_and_1080p() {
    for (w, h) in [(1280, 720), (1920, 1080)] {
        for seed in [1, 2, 3] {
            let mut s = synthetic(w, h, seed);
            let truth = s.truth().clone();
            // fps 1: frame n is at n s; arrival is 10–20 s after the injection at 5 s.
            assert!(truth.arrival_s > 14.0);
            for index in [0, 4, 14, 40] {
                let found = detect(&gray(&mut s, index)).unwrap();
                let what = format!("{w}x{h} seed {seed} at {index} s");
                assert_close(&found, &truth.bmode_pane, &truth.ceus_pane, 3, &what);
            }
        }
    }
}

#[test]
fn a_black_ceus_pane_is_reported_as_one_pane_not_guessed() {
    let bmode = Roi::new(40, 60, 380, 480);
    let mut img = drawn(900, 600, &[bmode]);
    // The CEUS pane's place, beside the B-mode pane, is as flat as the screen around it.
    let e = detect(&img).unwrap_err();
    assert!(matches!(e, LayoutError::OnePane { .. }), "{e}");
    assert!(e.to_string().contains("900x600"), "{e}");
    // Capture noise of about one gray level is not a pane either.
    for (x, y, p) in img.enumerate_pixels_mut() {
        p.0[0] = p.0[0].saturating_add(((x * 7 + y * 13) % 3) as u8);
    }
    let e = detect(&img).unwrap_err();
    assert!(matches!(e, LayoutError::OnePane { .. }), "{e}");
}

/// Speckled panes at arbitrary places on a black screen with text bars above them.
fn drawn(width: u32, height: u32, panes: &[Roi]) -> GrayImage {
    let mut img = GrayImage::new(width, height);
    for x in 10..width / 3 {
        for y in 4..10 {
            if x % 5 != 0 {
                img.put_pixel(x, y, image::Luma([220]));
            }
        }
    }
    for (i, p) in panes.iter().enumerate() {
        for y in p.y..p.y + p.height {
            for x in p.x..p.x + p.width {
                let n = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503) ^ i as u32)
                    .rotate_left(7)
                    % 160;
                img.put_pixel(x, y, image::Luma([20 + n as u8]));
            }
        }
    }
    img
}

#[test]
fn panes_are_found_wherever_a_scanner_puts_them() {
    let layouts = [
        (
            900,
            600,
            Roi {
                x: 40,
                y: 60,
                width: 380,
                height: 480,
            },
            Roi {
                x: 470,
                y: 60,
                width: 380,
                height: 480,
            },
        ),
        (
            1024,
            768,
            Roi {
                x: 10,
                y: 100,
                width: 480,
                height: 600,
            },
            Roi {
                x: 530,
                y: 120,
                width: 460,
                height: 560,
            },
        ),
        (
            1920,
            1080,
            Roi {
                x: 200,
                y: 150,
                width: 700,
                height: 800,
            },
            Roi {
                x: 1000,
                y: 150,
                width: 700,
                height: 800,
            },
        ),
    ];
    for (w, h, b, c) in layouts {
        let found = detect(&drawn(w, h, &[b, c])).unwrap();
        assert!(
            close(&found.bmode, &b, 2),
            "{w}x{h}: B-mode {} vs {b}",
            found.bmode
        );
        assert!(
            close(&found.ceus, &c, 2),
            "{w}x{h}: CEUS {} vs {c}",
            found.ceus
        );
    }
    let one = detect(&drawn(900, 600, &[Roi::new(40, 60, 800, 480)])).unwrap_err();
    assert_eq!(
        one,
        LayoutError::OnePane {
            width: 900,
            height: 600,
            pane: Roi::new(40, 60, 800, 480)
        }
    );
}

/// What real scanners draw around their panes: a dark margin, a scale bar and a colour bar
/// beside each pane, measurement text over the image, a dark pre-contrast CEUS pane.
#[test]
fn panes_are_found_among_overlays_with_a_dark_ceus_pane() {
    let (bmode, ceus) = (Roi::new(60, 80, 400, 460), Roi::new(500, 80, 400, 460));
    let mut img = drawn(960, 600, &[bmode]);
    let mut speckle = ceusd::rng::SplitMix64(7);
    for y in ceus.y..ceus.y + ceus.height {
        for x in ceus.x..ceus.x + ceus.width {
            // Dark: 0..10 gray levels, as a contrast pane shows tissue before the bolus.
            img.put_pixel(x, y, image::Luma([(speckle.unit() * 10.0) as u8]));
        }
    }
    for y in 100..500 {
        // Depth scale ticks and a colour-map bar right of each pane.
        for x in [bmode.x + bmode.width + 6, ceus.x + ceus.width + 6] {
            if y % 40 < 3 {
                img.put_pixel(x, y, image::Luma([230]));
            }
            for dx in 12..22 {
                img.put_pixel(x + dx, y, image::Luma([(y / 2) as u8]));
            }
        }
    }
    // A measurement label over the B-mode image.
    for y in 300..312 {
        for x in 100..220 {
            if x % 4 != 0 {
                img.put_pixel(x, y, image::Luma([255]));
            }
        }
    }
    let found = detect(&img).unwrap();
    assert_close(&found, &bmode, &ceus, 2, "overlays");
}

/// Single-pane ultrasound from pydicom's test files: a linear-probe image with two colour
/// Doppler boxes (GE LOGIQ 700), sector images (Philips EPIQ, SonoSite), a palette-colour
/// obstetric screen (Philips). None is split into two panes.
#[test]
fn single_pane_ultrasound_files_are_one_pane() {
    for (file, expected) in [
        ("US1_UNCR.dcm", "one image pane"),
        ("US1_mono2.dcm", "one image pane"),
        ("US1_rgb_rle.dcm", "one image pane"),
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", "one image pane"),
        ("color3d_jpeg_baseline_30f.dcm", "one image pane"),
        ("examples_ybr_color.dcm", "one image pane"),
        ("OBXXXX1A.dcm", "no textured image area"),
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/dicom")
            .join(file);
        let loaded = ceusd::capture::dicom::load_frame(&path, 0).unwrap();
        let p = &loaded.picture;
        let gray = p.gray_roi(&Roi::full(p.width(), p.height())).unwrap();
        let e = detect(&gray).unwrap_err();
        assert!(e.to_string().contains(expected), "{file}: {e}");
    }
}

#[test]
fn presets_match_the_synthetic_scanner() {
    for (name, w, h) in [
        ("synthetic-720p", 1280, 720),
        ("synthetic-1080p", 1920, 1080),
    ] {
        let p = preset(name).unwrap();
        let s = synthetic(w, h, 0);
        assert_eq!((p.width, p.height), (w, h));
        assert_eq!(
            p.layout,
            Layout {
                bmode: s.truth().bmode_pane,
                ceus: s.truth().ceus_pane
            }
        );
    }
    assert!(preset("logiq-e20")
        .unwrap_err()
        .to_string()
        .contains("synthetic-720p"));
}

#[test]
fn a_bmode_roi_maps_to_the_same_tissue_on_ceus() {
    for seed in 0..10 {
        let s = synthetic(1280, 720, seed);
        let t = s.truth();
        let layout = Layout {
            bmode: t.bmode_pane,
            ceus: t.ceus_pane,
        };
        assert_eq!(
            layout.bmode_to_ceus(&t.lesion_bmode).unwrap(),
            t.lesion_ceus
        );
    }
    let layout = Layout {
        bmode: Roi {
            x: 0,
            y: 0,
            width: 400,
            height: 300,
        },
        ceus: Roi {
            x: 500,
            y: 10,
            width: 200,
            height: 150,
        }, // shown at half scale
    };
    assert_eq!(
        layout
            .bmode_to_ceus(&Roi {
                x: 100,
                y: 60,
                width: 80,
                height: 40
            })
            .unwrap(),
        Roi {
            x: 550,
            y: 40,
            width: 40,
            height: 20
        }
    );
    let e = layout
        .bmode_to_ceus(&Roi {
            x: 350,
            y: 10,
            width: 80,
            height: 40,
        })
        .unwrap_err();
    assert!(matches!(e, LayoutError::OutsideBmode { .. }), "{e}");
}

#[test]
fn a_site_presets_file_adds_and_replaces_presets() {
    use ceusd::layout::Presets;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layouts.toml");
    std::fs::write(
        &path,
        r#"
[[preset]]
name = "logiq-e20-1080p"
width = 1920
height = 1080
bmode = "60,140,860,870"
ceus = "1000,140,860,870"

[[preset]]
name = "synthetic-720p"
width = 1280
height = 720
bmode = "40,90,570,585"
ceus = "660,90,570,585"
"#,
    )
    .unwrap();
    let presets = Presets::with_site_file(&path).unwrap();
    let site = presets.get("logiq-e20-1080p").unwrap();
    assert_eq!(site.layout.ceus, "1000,140,860,870".parse().unwrap());
    assert_eq!(
        presets.get("synthetic-720p").unwrap().layout.bmode,
        "40,90,570,585".parse().unwrap(),
        "a site preset replaces the built-in of the same name"
    );
    assert!(
        presets.get("synthetic-1080p").is_ok(),
        "other built-ins stay"
    );
    let for_1080p: Vec<_> = presets
        .for_frame(1920, 1080)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(for_1080p, ["synthetic-1080p", "logiq-e20-1080p"]);
}

#[test]
fn a_bad_presets_file_is_refused_with_the_reason() {
    use ceusd::layout::Presets;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layouts.toml");
    let entry = |bmode: &str, ceus: &str| {
        format!(
            "[[preset]]\nname = \"x\"\nwidth = 1280\nheight = 720\nbmode = \"{bmode}\"\nceus = \"{ceus}\"\n"
        )
    };
    for (text, expected) in [
        (entry("0,0,700,700", "600,0,600,700"), "overlap"),
        (
            entry("0,0,600,700", "700,0,600,700"),
            "outside the 1280x720",
        ),
        (entry("0,0,600", "700,0,500,700"), "bmode = \"0,0,600\""),
        (
            entry("0,0,600,700", "700,0,500,700") + "\n" + &entry("0,0,600,700", "700,0,500,700"),
            "defined twice",
        ),
        (
            "[[preset]]\nname = \"x\"\nwidth = 1280\n".to_string(),
            "missing field",
        ),
        (
            "[[preset]]\nname = \"x\"\nwidht = 1280\n".to_string(),
            "unknown field",
        ),
    ] {
        std::fs::write(&path, &text).unwrap();
        let e = Presets::with_site_file(&path).unwrap_err().to_string();
        assert!(
            e.contains(expected) && e.contains("layouts.toml"),
            "{expected}: {e}"
        );
    }
    let e = Presets::with_site_file(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
}
