//! `ceusd eval`'s statistics against an independent implementation (scikit-learn, statsmodels:
//! `tools/reference_eval.py` wrote tests/data/eval/), the paper's Table 2 arithmetic, and the
//! command end to end.

use std::path::{Path, PathBuf};
use std::process::Command;

use ceusd::eval::cohort::{read_cohort, ClassNames, CohortKind};
use ceusd::eval::stats::{proportion, Confusion};
use ceusd::eval::{evaluate, scores_from_file, EvalReport, EvalSettings};
use serde_json::Value;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn reference_report() -> (EvalReport, Value) {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(data("eval/reference.json")).unwrap())
            .unwrap();
    let cohort = read_cohort(
        &data("eval/scores.csv"),
        CohortKind::Scores,
        &ClassNames::paper(),
    )
    .unwrap();
    let report = evaluate(
        cohort.path.clone(),
        None,
        &cohort.readers,
        &scores_from_file(&cohort),
        EvalSettings {
            threshold: reference["threshold"].as_f64().unwrap(),
            bootstrap_resamples: reference["resamples"].as_u64().unwrap() as usize,
            bootstrap_seed: reference["seed"].as_u64().unwrap(),
            positive_class: "PDAC".into(),
            negative_class: "CP".into(),
        },
    );
    (report, reference)
}

fn close(a: &Value, b: &Value, tol: f64, what: &str) {
    match (a, b) {
        (Value::Null, Value::Null) => {}
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= tol, "{what}: {x} vs reference {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{what}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                close(x, y, tol, &format!("{what}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            for (k, y) in y {
                close(&x[k], y, tol, &format!("{what}.{k}"));
            }
        }
        (x, y) => assert_eq!(x, y, "{what}"),
    }
}

#[test]
fn statistics_match_scikit_learn_and_statsmodels() {
    let (report, reference) = reference_report();
    let ours = serde_json::to_value(&report).unwrap();
    let cohorts = reference["cohorts"].as_array().unwrap();
    assert_eq!(ours["cohorts"].as_array().unwrap().len(), cohorts.len());
    for (mine, theirs) in ours["cohorts"].as_array().unwrap().iter().zip(cohorts) {
        let name = theirs["name"].as_str().unwrap();
        assert_eq!(mine["name"], theirs["name"]);
        for key in ["cases", "positives", "negatives", "confusion"] {
            assert_eq!(mine[key], theirs[key], "{name}: {key}");
        }
        // AUC and the ROC curve: the same arithmetic, equal to rounding.
        close(&mine["auc"], &theirs["auc"], 1e-12, &format!("{name}: auc"));
        close(&mine["roc"], &theirs["roc"], 1e-12, &format!("{name}: roc"));
        // Bootstrap: the same resample indices, so the same interval.
        close(
            &mine["auc_ci"],
            &theirs["auc_ci"],
            1e-12,
            &format!("{name}: auc_ci"),
        );
        // Clopper-Pearson from two Beta quantile implementations.
        for key in ["sensitivity", "specificity"] {
            close(&mine[key], &theirs[key], 1e-9, &format!("{name}: {key}"));
        }
        close(
            &mine["youden"],
            &theirs["youden"],
            1e-12,
            &format!("{name}: youden"),
        );
        for (r_mine, r_theirs) in mine["readers"]
            .as_array()
            .unwrap()
            .iter()
            .zip(theirs["readers"].as_array().unwrap())
        {
            let what = format!("{name}: {}", r_theirs["name"]);
            assert_eq!(r_mine["cases"], r_theirs["cases"], "{what}");
            assert_eq!(r_mine["confusion"], r_theirs["confusion"], "{what}");
            close(
                &r_mine["sensitivity"],
                &r_theirs["sensitivity"],
                1e-9,
                &what,
            );
            close(
                &r_mine["specificity"],
                &r_theirs["specificity"],
                1e-9,
                &what,
            );
            close(
                &r_mine["mcnemar"],
                &r_theirs["mcnemar"],
                1e-9,
                &format!("{what} mcnemar"),
            );
            close(
                &r_mine["model_matched"],
                &r_theirs["model_matched"],
                1e-12,
                &format!("{what} matched"),
            );
        }
    }
    // The fixture exercises both McNemar variants and missing reader calls.
    let mcnemars: Vec<bool> = ours["cohorts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["readers"].as_array().unwrap().clone())
        .map(|r| r["mcnemar"]["exact"].as_bool().unwrap())
        .collect();
    assert!(mcnemars.contains(&true) && mcnemars.contains(&false));
    assert!(report.cohorts[0].readers[1].cases < report.cohorts[0].cases);
}

/// Table 2 of Tong et al. (internal validation, 73 PDAC and 36 CP): reader 1 called 33 of the
/// 36 CP cases CP and 52 of the 73 PDAC cases PDAC; the model at 0.5 had sensitivity 97.3%
/// and specificity 83.3% (71 of 73, 30 of 36).
#[test]
fn the_papers_table_2_arithmetic() {
    let percent = |p: ceusd::eval::stats::Proportion| (p.value.unwrap() * 1000.0).round() / 10.0;
    let reader1 = Confusion::from_calls(
        std::iter::repeat_n((true, true), 52)
            .chain(std::iter::repeat_n((false, true), 21))
            .chain(std::iter::repeat_n((false, false), 33))
            .chain(std::iter::repeat_n((true, false), 3)),
    );
    assert_eq!(percent(reader1.specificity()), 91.7);
    assert_eq!(percent(reader1.sensitivity()), 71.2);
    assert_eq!(percent(proportion(71, 73)), 97.3);
    assert_eq!(percent(proportion(30, 36)), 83.3);
}

fn ceusd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn eval_on_a_scores_file_writes_the_report_json_and_roc_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let o = ceusd(&[
        "eval",
        "--scores",
        data("eval/scores.csv").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let markdown = String::from_utf8_lossy(&o.stdout).to_string();
    for expected in [
        "## internal (109 cases: 73 PDAC, 36 CP)",
        "## all cohorts",
        "reader2",
        "McNemar",
    ] {
        assert!(
            markdown.contains(expected),
            "{expected} missing from:\n{markdown}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        markdown
    );
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["cohorts"].as_array().unwrap().len(), 4);
    let roc = image::open(out.join("roc.png")).unwrap().to_rgb8();
    assert_eq!(roc.dimensions(), (720, 720));
    // The first cohort's curve colour is on the plot.
    assert!(roc.pixels().any(|p| p.0 == [31, 119, 180]));
    assert!(!out.join("scores.csv").exists(), "no model, no scores file");
}

#[test]
fn a_bad_scores_file_names_the_line_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scores.csv");
    for (text, expected) in [
        (
            "label,score\nPDAC,0.7\nbenign,0.2\n",
            "line 3: label 'benign'",
        ),
        (
            "label,score\nPDAC,1.7\n",
            "line 2: score 1.7 is outside 0..1",
        ),
        ("label,score\nPDAC,high\n", "score 'high' is not a number"),
        ("label,prob\nPDAC,0.7\n", "no 'score' column"),
        ("label,score,reader1\nPDAC,0.7,maybe\n", "reader1: 'maybe'"),
        ("label,score\n", "no cases"),
    ] {
        std::fs::write(&path, text).unwrap();
        let o = ceusd(&[
            "eval",
            "--scores",
            path.to_str().unwrap(),
            "--out",
            dir.path().join("r").to_str().unwrap(),
        ]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(expected) && err.contains("scores.csv"),
            "{expected}: {err}"
        );
    }
    assert!(
        !dir.path().join("r").exists(),
        "nothing written for bad input"
    );
}

/// With a model: the cohort's images are scored through the daemon's path, the scores file it
/// writes reproduces the same statistics without the model, and a case whose ROI does not fit
/// its image is refused by name.
#[test]
fn eval_with_a_model_scores_images_and_its_scores_file_reproduces_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    let o = ceusd(&[
        "model",
        "init",
        "--seed",
        "3",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pillow = data("pillow");
    let mut csv = String::from("case,image,roi,label,reader_a\n");
    let images = [
        "down2_square_bilinear.png",
        "down_odd_bilinear.png",
        "identity_224_bilinear.png",
        "down_nonsquare_bilinear.png",
    ];
    for (i, name) in images.iter().enumerate() {
        let label = if i % 2 == 0 { "PDAC" } else { "CP" };
        csv += &format!("c{i},{},,{label},{label}\n", pillow.join(name).display());
    }
    let cohort = dir.path().join("cohort.csv");
    std::fs::write(&cohort, &csv).unwrap();
    let out = dir.path().join("report");
    let o = ceusd(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        cohort.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let with_model: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(with_model["cohorts"][0]["cases"], 4);
    assert!(with_model["warnings"].to_string().contains("untrained"));
    let scores = out.join("scores.csv");
    let o = ceusd(&[
        "eval",
        "--scores",
        scores.to_str().unwrap(),
        "--out",
        dir.path().join("again").to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let from_scores: Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "auc",
        "auc_ci",
        "confusion",
        "sensitivity",
        "specificity",
        "youden",
        "readers",
        "roc",
    ] {
        assert_eq!(
            with_model["cohorts"][0][key], from_scores["cohorts"][0][key],
            "{key}"
        );
    }

    csv += &format!(
        "c9,{},\"5000,5000,10,10\",CP,CP\n",
        pillow.join(images[0]).display()
    );
    std::fs::write(&cohort, csv).unwrap();
    let o = ceusd(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        cohort.to_str().unwrap(),
        "--out",
        dir.path().join("bad").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("case c9") && err.contains("5000,5000,10,10"),
        "{err}"
    );
}
