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
    assert_eq!(r["model"]["hash"], hash.as_str());
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
    assert!(shown.contains("52 Q8_0"), "{shown}");
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

/// The same input quantized twice, even renamed and in another folder, gives the same bytes
/// and content hash: a site can re-derive the hash it pinned. The file keeps its input's
/// creation time, or takes SOURCE_DATE_EPOCH's when that is set.
#[test]
fn quantizing_twice_gives_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = init_model(dir.path());
    let renamed = dir.path().join("renamed-input.gguf");
    std::fs::copy(&m, &renamed).unwrap();
    let quantize = |input: &Path, out: &Path, epoch: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ceusd"));
        command.args(["model", "quantize"]).arg(input);
        command.args(["--to", "q8", "--out"]).arg(out);
        command
            .env("RUST_LOG", "warn")
            .env_remove("SOURCE_DATE_EPOCH");
        if let Some(e) = epoch {
            command.env("SOURCE_DATE_EPOCH", e);
        }
        command.output().expect("run ceusd")
    };
    let inspect = |path: &Path| -> serde_json::Value {
        let json = ok(&ceusd(&[
            "model",
            "inspect",
            path.to_str().unwrap(),
            "--json",
        ]));
        serde_json::from_str(&json).unwrap()
    };
    std::fs::create_dir(dir.path().join("other")).unwrap();
    let first = dir.path().join("first.gguf");
    let second = dir.path().join("other/second.gguf");
    ok(&quantize(&m, &first, None));
    ok(&quantize(&renamed, &second, None));
    assert!(
        std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap(),
        "two quantizations of one input differ"
    );
    let (a, b) = (inspect(&first), inspect(&second));
    assert_eq!(a["content_hash"], b["content_hash"]);
    assert_eq!(
        a["metadata"]["provenance"]["created"],
        inspect(&m)["metadata"]["provenance"]["created"],
        "a quantized file keeps its input's creation time"
    );

    let dated = dir.path().join("dated.gguf");
    let dated_again = dir.path().join("dated-again.gguf");
    ok(&quantize(&m, &dated, Some("86400")));
    ok(&quantize(&m, &dated_again, Some("86400")));
    let d = inspect(&dated);
    assert_eq!(
        d["metadata"]["provenance"]["created"],
        "1970-01-02T00:00:00Z"
    );
    assert_eq!(d["content_hash"], inspect(&dated_again)["content_hash"]);
    assert_ne!(d["content_hash"], a["content_hash"]);

    let never = dir.path().join("never.gguf");
    let err = fails(&quantize(&m, &never, Some("yesterday")));
    assert!(
        err.contains("SOURCE_DATE_EPOCH 'yesterday' is not a whole number of seconds"),
        "{err}"
    );
    assert!(!never.exists());
}

/// Every user error is one line, said once, with no backtrace or panic even when
/// RUST_BACKTRACE is set (as it is in many shells and CI images).
fn one_line_error(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run ceusd");
    let e = fails(&o);
    // Log lines only (a warning may come before the error), and one error.
    let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().all(|l| l.starts_with('[')) || lines.len() == 1,
        "{args:?}: not log lines:\n{e}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(" ERROR ") || l.starts_with("error: "))
            .count(),
        1,
        "{args:?}: not one error line:\n{e}"
    );
    for word in ["backtrace", "panicked", "RUST_BACKTRACE", "stack"] {
        assert!(!e.contains(word), "{args:?}: {word} in:\n{e}");
    }
    e
}

/// No part of the message is repeated (a cause whose text its error already holds).
fn said_once(e: &str, part: &str) {
    assert_eq!(
        e.matches(part).count(),
        1,
        "'{part}' not said exactly once: {e}"
    );
}

#[test]
fn cli_errors_are_one_line_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let image = data("pillow/src_us640.png");

    let e = one_line_error(&["analyze", "/nonexistent/x.png"]);
    said_once(&e, "No such file or directory");
    said_once(&e, "/nonexistent/x.png");

    let e = one_line_error(&["analyze", &image, "--model", "/nonexistent/m.gguf"]);
    said_once(&e, "No such file or directory");
    said_once(&e, "/nonexistent/m.gguf");

    // A recording never overwrites a folder that holds something.
    let out = dir.path().join("rec");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let e = one_line_error(&[
        "capture",
        "--source",
        "synthetic:cp?duration=1",
        "--out",
        out.to_str().unwrap(),
    ]);
    said_once(&e, "not empty");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );

    // An unknown source kind lists the kinds.
    let e = one_line_error(&["analyze", "foo:bar"]);
    for kind in ["v4l2:", "dicom:", "frames:", "synthetic:"] {
        assert!(e.contains(kind), "{e}");
    }

    // A negative ROI gets the ROI's own message, not the argument parser's.
    let e = one_line_error(&["analyze", &image, "--roi", "-10,20,100,100"]);
    assert!(e.contains("ROI '-10,20,100,100'"), "{e}");
    assert!(!e.contains("unexpected argument"), "{e}");

    // Not a model file: text, a truncated GGUF, a directory.
    let text = dir.path().join("notes.gguf");
    std::fs::write(&text, "these are notes, not weights\n").unwrap();
    let e = one_line_error(&["analyze", &image, "--model", text.to_str().unwrap()]);
    assert!(e.contains("not a readable GGUF"), "{e}");
    let (model, _) = init_model(dir.path());
    let bytes = std::fs::read(&model).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = one_line_error(&["analyze", &image, "--model", truncated.to_str().unwrap()]);
    assert!(e.contains("truncated.gguf"), "{e}");
    let e = one_line_error(&["analyze", &image, "--model", dir.path().to_str().unwrap()]);
    assert!(e.contains("is a directory, not a model file"), "{e}");
    assert!(!e.contains("corrupt"), "{e}");
}

#[test]
fn inspect_describes_the_embedded_demo_model() {
    let out = ok(&ceusd(&["model", "inspect", "demo"]));
    assert!(out.contains("demo (the embedded demo model)"), "{out}");
    assert!(out.contains("content hash  sha256:"), "{out}");
    let json = ok(&ceusd(&["model", "inspect", "demo", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // The same hash the service reports for `--model demo`.
    let analyze = ok(&ceusd(&[
        "analyze",
        &data("pillow/src_us640.png"),
        "--model",
        "demo",
        "--json",
    ]));
    let a: serde_json::Value = serde_json::from_str(&analyze).unwrap();
    assert_eq!(v["content_hash"], a["model"]["hash"], "{json}\n{analyze}");
}

#[test]
fn analyze_aligns_its_rows() {
    let out = ok(&ceusd(&[
        "analyze",
        &data("pillow/src_us640.png"),
        "--model",
        "demo",
    ]));
    // Every row's value starts in the same column.
    let column = |line: &str| {
        line.find(char::is_whitespace)
            .map(|i| i + line[i..].len() - line[i..].trim_start().len())
    };
    let columns: Vec<(usize, &str)> = out
        .lines()
        .filter_map(|l| column(l).map(|c| (c, l)))
        .collect();
    assert!(columns.iter().any(|(_, l)| l.starts_with("P(CP)")), "{out}");
    assert!(
        columns.iter().all(|(c, _)| *c == columns[0].0),
        "rows not aligned: {columns:?}"
    );
}
