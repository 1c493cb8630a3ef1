//! The `ceusd` binary end to end: model init/inspect, analyze on PNG and DICOM, and the
//! errors a user meets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ceusd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ceusd")
}

fn data(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
        .to_string_lossy()
        .to_string()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn init_model(dir: &Path) -> (PathBuf, String) {
    let m = dir.join("m.gguf");
    ok(&ceusd(&[
        "model",
        "init",
        "--seed",
        "3",
        "--out",
        m.to_str().unwrap(),
        "--dtype",
        "f16",
    ]));
    let inspect = ok(&ceusd(&["model", "inspect", m.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["metadata"]["provenance"]["trained"], false);
    assert_eq!(v["metadata"]["classes"], serde_json::json!(["CP", "PDAC"]));
    assert_eq!(v["parameters"], 24_558_146);
    let hash = v["content_hash"].as_str().unwrap().to_string();
    assert!(hash.starts_with("sha256:") && hash.len() == 71);
    (m, hash)
}

#[test]
fn analyze_a_png_roi_with_heatmap_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (model, hash) = init_model(dir.path());
    let heat = dir.path().join("heat.png");
    let out = ok(&ceusd(&[
        "analyze",
        &data("pillow/src_us640.png"),
        "--roi",
        "100,80,300,200",
        "--model",
        model.to_str().unwrap(),
        "--model-hash",
        &hash,
        "--heatmap",
        heat.to_str().unwrap(),
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let p_pdac = r["probabilities"]["PDAC"].as_f64().unwrap();
    let p_cp = r["probabilities"]["CP"].as_f64().unwrap();
    assert!((p_pdac + p_cp - 1.0).abs() < 1e-5);
    assert_eq!(r["score"].as_f64().unwrap(), p_pdac);
    let expected_label = if p_pdac >= 0.5 { "PDAC" } else { "CP" };
    assert_eq!(r["label"], expected_label);
    assert_eq!(
        r["roi"],
        serde_json::json!({"x": 100, "y": 80, "width": 300, "height": 200})
    );
    assert_eq!(r["model"]["content_hash"], hash.as_str());
    assert!(r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("untrained")));
    let png = image::open(&heat).unwrap();
    assert_eq!((png.width(), png.height()), (300, 200));
}

#[test]
fn analyze_a_jpeg_still() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = init_model(dir.path());
    let jpeg = dir.path().join("frame.jpg");
    image::open(data("pillow/src_us640.png"))
        .unwrap()
        .to_rgb8()
        .save(&jpeg)
        .unwrap();
    let out = ok(&ceusd(&[
        "analyze",
        jpeg.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["input"]["format"], "JPEG");
    assert_eq!(
        (r["input"]["width"].as_u64(), r["input"]["height"].as_u64()),
        (Some(640), Some(480))
    );
    assert_eq!(r["roi"]["width"], 640);
}

#[test]
fn analyze_a_dicom_cine_frame_in_text() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = init_model(dir.path());
    let out = ok(&ceusd(&[
        "analyze",
        &data("dicom/color3d_jpeg_baseline_30f.dcm"),
        "--frame",
        "29",
        "--roi",
        "200,100,240,200",
        "--model",
        model.to_str().unwrap(),
    ]));
    for needle in [
        "frame 29 of 30",
        "JPEG Baseline",
        "P(PDAC)",
        "label",
        "untrained-seed-3",
        "inference",
    ] {
        assert!(out.contains(needle), "missing '{needle}' in:\n{out}");
    }
}

#[test]
fn user_errors_are_explained_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = init_model(dir.path());
    let m = model.to_str().unwrap();
    let heat = dir.path().join("never.png");
    let h = heat.to_str().unwrap();

    let e = fails(&ceusd(&[
        "analyze",
        &data("pillow/src_us640.png"),
        "--roi",
        "500,400,200,200",
        "--model",
        m,
        "--heatmap",
        h,
    ]));
    assert!(e.contains("outside the 640x480 image"), "{e}");
    let e = fails(&ceusd(&[
        "analyze",
        &data("pillow/src_us640.png"),
        "--roi",
        "1,2,3",
        "--model",
        m,
    ]));
    assert!(e.contains("x,y,w,h"), "{e}");
    let e = fails(&ceusd(&[
        "analyze",
        &data("dicom/mono2_multiframe.dcm"),
        "--frame",
        "9",
        "--model",
        m,
        "--heatmap",
        h,
    ]));
    assert!(e.contains("frame 9") && e.contains("5 frame"), "{e}");
    let e = fails(&ceusd(&["analyze", "/nonexistent/x.png", "--model", m]));
    assert!(e.contains("/nonexistent/x.png"), "{e}");
    let e = fails(&ceusd(&[
        "analyze",
        &data("pillow/src_us640.png"),
        "--model",
        m,
        "--model-hash",
        "sha256:beef",
        "--heatmap",
        h,
    ]));
    assert!(e.contains("sha256:beef"), "{e}");
    let e = fails(&ceusd(&[
        "analyze",
        &data("pillow/src_us640.png"),
        "--model",
        &data("dicom/not_dicom.dcm"),
    ]));
    assert!(e.contains("not a readable GGUF"), "{e}");
    let e = fails(&ceusd(&[
        "analyze",
        &data("pillow/src_us640.png"),
        "--model",
        m,
        "--device",
        "cuda:0",
    ]));
    assert!(e.contains("cuda"), "{e}");
    assert!(
        !heat.exists(),
        "no heatmap may be written when analysis fails"
    );
}

#[test]
fn quantize_writes_an_int8_model_that_inspect_describes_and_analyze_uses() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = init_model(dir.path());
    let q8 = dir.path().join("m-q8.gguf");
    let said = ok(&ceusd(&[
        "model",
        "quantize",
        m.to_str().unwrap(),
        "--to",
        "q8",
        "--out",
        q8.to_str().unwrap(),
    ]));
    assert!(said.contains("folded-int8-dynamic"), "{said}");
    let shown = ok(&ceusd(&["model", "inspect", q8.to_str().unwrap()]));
    assert!(shown.contains("\"Q8_0\": 52"), "{shown}");
    assert!(shown.contains("int8          52 convolutions"), "{shown}");
    let json = ok(&ceusd(&[
        "model",
        "inspect",
        q8.to_str().unwrap(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["metadata"]["weight_format"], "folded-int8-dynamic");
    let scored = ok(&ceusd(&[
        "analyze",
        &data("dicom/US1_UNCR.dcm"),
        "--roi",
        "220,140,200,160",
        "--model",
        q8.to_str().unwrap(),
        "--json",
    ]));
    let r: serde_json::Value = serde_json::from_str(&scored).unwrap();
    let p = r["score"].as_f64().expect("a score");
    assert!((0.0..=1.0).contains(&p), "{scored}");

    // A wrong target names the choices; a missing input names the file; nothing is written.
    let bad = fails(&ceusd(&[
        "model",
        "quantize",
        m.to_str().unwrap(),
        "--to",
        "q4",
        "--out",
        "x.gguf",
    ]));
    assert!(bad.contains("q8 or f16"), "{bad}");
    let missing = dir.path().join("absent.gguf");
    let out = dir.path().join("never.gguf");
    let err = fails(&ceusd(&[
        "model",
        "quantize",
        missing.to_str().unwrap(),
        "--to",
        "f16",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("absent.gguf"), "{err}");
    assert!(!out.exists());

    // Calibrated: one fixed input scale per int8 layer, which inspect reports.
    let images = dir.path().join("calibration");
    std::fs::create_dir(&images).unwrap();
    std::fs::copy(data("dicom/US1_UNCR.dcm"), images.join("US1_UNCR.dcm")).unwrap();
    let calibrated = dir.path().join("m-static.gguf");
    let said = ok(&ceusd(&[
        "model",
        "quantize",
        m.to_str().unwrap(),
        "--to",
        "q8",
        "--out",
        calibrated.to_str().unwrap(),
        "--calibrate",
        images.to_str().unwrap(),
    ]));
    assert!(said.contains("folded-int8-static"), "{said}");
    assert!(
        said.contains("calibrated 52 int8 layers on 1 image, clipped at the 99.99 percentile"),
        "{said}"
    );
    let shown = ok(&ceusd(&["model", "inspect", calibrated.to_str().unwrap()]));
    assert!(
        shown.contains("input steps   52 convolutions, calibrated"),
        "{shown}"
    );
    let err = fails(&ceusd(&[
        "model",
        "quantize",
        m.to_str().unwrap(),
        "--to",
        "q8",
        "--out",
        out.to_str().unwrap(),
        "--calibrate",
        dir.path().join("no-such-folder").to_str().unwrap(),
    ]));
    assert!(err.contains("no-such-folder"), "{err}");
    assert!(!out.exists());
}
