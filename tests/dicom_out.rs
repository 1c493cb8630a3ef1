//! `ceusd analyze … --dicom-out`: the Structured Report and key image the PACS receives, read
//! back by independent DICOM tools: dcmtk's `dcmdump` and `dsrdump`, and dicom3tools'
//! `dciodvfy`, which checks each object against its IOD in the standard.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::dicom_tools::{dumped, sr_number, tool};

fn ceusd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ceusd")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A 50 s synthetic PDAC cine, 5 frames a second, as the scanner would export it.
fn cine(dir: &Path) -> PathBuf {
    let path = dir.join("cine.dcm");
    ok(&ceusd(&[
        "synth",
        "--kind",
        "pdac",
        "--seed",
        "11",
        "--duration",
        "50",
        "--fps",
        "5",
        "--out",
        path.to_str().expect("utf-8 path"),
    ]));
    path
}

/// Runs analyze with `--dicom-out DIR` and `extra` flags; returns its JSON and the files.
fn analyze(
    cine: &Path,
    roi: &str,
    out: &Path,
    extra: &[&str],
) -> (serde_json::Value, Vec<PathBuf>) {
    let mut args = vec![
        "analyze",
        cine.to_str().expect("utf-8"),
        "--roi",
        roi,
        "--model",
        "demo",
        "--json",
        "--dicom-out",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let json: serde_json::Value = serde_json::from_str(&ok(&ceusd(&args))).expect("JSON");
    let files = json["dicom_out"]
        .as_array()
        .expect("dicom_out lists the files")
        .iter()
        .map(|p| PathBuf::from(p.as_str().expect("a path")))
        .collect();
    (json, files)
}

/// dciodvfy's errors; its warnings about ceusd's private coding scheme and the empty Study ID
/// (a type 2 attribute ceusd has no value for) are expected.
fn conformance_errors(file: &Path) -> Vec<String> {
    tool("dciodvfy", file)
        .lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_result_becomes_a_conformant_report_and_key_image_in_the_cines_study() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cine = cine(dir.path());
    let cine_dump = tool("dcmdump", &cine);
    let (json, files) = analyze(
        &cine,
        "250,220,240,230",
        &dir.path().join("out"),
        &[
            "--accession",
            "ACC-2026-42",
            "--patient-name",
            "Müller^Anna",
        ],
    );
    assert_eq!(files.len(), 2, "{files:?}");
    let (report, image) = (&files[0], &files[1]);
    assert!(report.to_string_lossy().ends_with("-report.dcm"));
    assert!(image.to_string_lossy().ends_with("-key-image.dcm"));
    for f in &files {
        assert_eq!(
            conformance_errors(f),
            Vec::<String>::new(),
            "{}",
            f.display()
        );
    }

    let report_dump = tool("dcmdump", report);
    let image_dump = tool("dcmdump", image);
    // Both join the cine's study and patient; the name given on the command line wins.
    let study = dumped(&cine_dump, "(0020,000d)");
    for dump in [&report_dump, &image_dump] {
        assert_eq!(dumped(dump, "(0020,000d)"), study);
        assert_eq!(
            dumped(dump, "(0010,0020)"),
            dumped(&cine_dump, "(0010,0020)")
        );
        assert_eq!(dumped(dump, "(0010,0010)"), "Müller^Anna");
        assert_eq!(dumped(dump, "(0008,0050)"), "ACC-2026-42");
    }
    assert_eq!(
        dumped(&report_dump, "(0008,0016)"),
        "1.2.840.10008.5.1.4.1.1.88.33"
    );
    assert_eq!(
        dumped(&image_dump, "(0008,0016)"),
        "1.2.840.10008.5.1.4.1.1.7"
    );
    assert_eq!(
        dumped(&image_dump, "(0028,0301)"),
        "YES",
        "burned-in annotation"
    );
    assert_ne!(
        dumped(&report_dump, "(0020,000e)"),
        dumped(&image_dump, "(0020,000e)"),
        "report and image are series of their own"
    );

    // The report holds the result as the analysis printed it.
    let sr = tool("dsrdump", report);
    let result = &json["result"];
    let score = result["score"].as_f64().expect("scored");
    assert!(
        (sr_number(&sr, "Probability of cancer") - score).abs() < 1e-6,
        "{sr}"
    );
    let label = result["label"].as_str().expect("label");
    assert!(
        sr.contains(&format!("\"Finding\")=({label},99CEUSD,")),
        "{sr}"
    );
    let key_s = result["key_frame"]["elapsed_s"]
        .as_f64()
        .expect("key frame");
    let reported = sr_number(&sr, "Key frame time after contrast injection");
    assert!((reported - key_s).abs() < 1e-6, "{sr}");
    let threshold = result["threshold"].as_f64().expect("threshold");
    assert!((sr_number(&sr, "Decision threshold") - threshold).abs() < 1e-6);
    let hash = result["model"]["hash"].as_str().expect("hash");
    assert!(sr.contains(&hash[..20]), "the model's content hash: {sr}");
    assert!(sr.contains("\"Not for clinical use\")"), "{sr}");
    assert!(
        sr.contains("(SC image,)"),
        "the key image is referenced: {sr}"
    );
    assert!(sr.contains("SCOORD:(,,\"Image Region\")=(POLYLINE"), "{sr}");
    assert!(sr.contains("\"Exam context from the DICOM file"), "{sr}");
    let referenced = dumped(&image_dump, "(0008,0018)");
    assert!(
        report_dump.contains(&format!("[{referenced}]")),
        "SR references the image"
    );
}

#[test]
fn the_same_analysis_makes_the_same_uids_and_another_roi_new_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cine = cine(dir.path());
    let uids = |out: &str, roi: &str| -> Vec<String> {
        let (_, files) = analyze(&cine, roi, &dir.path().join(out), &[]);
        files
            .iter()
            .map(|f| dumped(&tool("dcmdump", f), "(0008,0018)"))
            .collect()
    };
    let first = uids("a", "250,220,240,230");
    assert_eq!(first.len(), 2);
    assert_eq!(first, uids("b", "250,220,240,230"));
    let other = uids("c", "260,230,200,200");
    assert!(
        first.iter().all(|u| !other.contains(u)),
        "{first:?} {other:?}"
    );
}

#[test]
fn without_a_study_one_is_made_and_the_report_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let frames = dir.path().join("frames");
    ok(&ceusd(&[
        "synth",
        "--kind",
        "cp",
        "--seed",
        "4",
        "--duration",
        "50",
        "--fps",
        "5",
        "--out",
        frames.to_str().expect("utf-8"),
    ]));
    let (_, files) = analyze(
        &frames,
        "250,220,240,230",
        &dir.path().join("out"),
        &["--uid-root", "1.2.826.0.1.3680043.10.777"],
    );
    let dump = tool("dcmdump", &files[0]);
    assert!(dumped(&dump, "(0020,000d)").starts_with("1.2.826.0.1.3680043.10.777."));
    assert!(dumped(&dump, "(0008,0018)").starts_with("1.2.826.0.1.3680043.10.777."));
    assert_eq!(
        dumped(&dump, "(0010,0020)"),
        "",
        "no patient id is invented"
    );
    let sr = tool("dsrdump", &files[0]);
    assert!(sr.contains("ceusd made a new study"), "{sr}");
}

#[test]
fn bad_context_and_one_image_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cine = cine(dir.path());
    let out = dir.path().join("out");
    let o = ceusd(&[
        "analyze",
        cine.to_str().expect("utf-8"),
        "--roi",
        "250,220,240,230",
        "--model",
        "demo",
        "--dicom-out",
        out.to_str().expect("utf-8"),
        "--patient-birth-date",
        "1961-03-14",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("patient birth date") && err.contains("YYYYMMDD"),
        "{err}"
    );
    assert!(
        !err.contains("1961-03-14"),
        "the value is not repeated: {err}"
    );
    assert!(!out.exists(), "nothing written");

    let o = ceusd(&[
        "analyze",
        cine.to_str().expect("utf-8"),
        "--frame",
        "3",
        "--model",
        "demo",
        "--dicom-out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--dicom-out needs a cine"), "{err}");
    assert!(!out.exists(), "nothing written");
}
