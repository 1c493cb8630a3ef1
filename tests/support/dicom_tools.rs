//! dcmtk and dicom3tools, reading back the DICOM objects ceusd makes.

use std::path::Path;
use std::process::Command;

/// A tool from dcmtk or dicom3tools; their absence fails the test (`.ci/run` installs them).
pub fn tool(name: &str, file: &Path) -> String {
    // UIDs as numbers, long texts whole.
    let options: &[&str] = match name {
        "dcmdump" => &["-Un"],
        "dsrdump" => &["+Pl"],
        _ => &[],
    };
    let o = Command::new(name)
        .args(options)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{name} (install dcmtk and dicom3tools): {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The value of `tag` as dcmdump prints it, e.g. `(0008,0018) UI [1.2.3]`.
pub fn dumped(dump: &str, tag: &str) -> String {
    let line = dump
        .lines()
        .find(|l| l.trim_start().starts_with(tag))
        .unwrap_or_else(|| panic!("{tag} not in\n{dump}"));
    let value = line.split_once('[').map_or("", |(_, v)| v);
    value.split_once(']').map_or(value, |(v, _)| v).to_string()
}

/// The numeric value of the NUM item named `concept` in dsrdump's rendering.
pub fn sr_number(sr: &str, concept: &str) -> f64 {
    let marker = format!("\"{concept}\")=\"");
    let at = sr
        .find(&marker)
        .unwrap_or_else(|| panic!("{concept} not in\n{sr}"))
        + marker.len();
    let value = &sr[at..];
    value[..value.find('"').expect("closing quote")]
        .parse()
        .expect("a number")
}
