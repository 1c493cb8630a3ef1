//! `ceusd demo`, the README's main command: embedded broker, synthetic scanner, demo model and
//! the terminal display, end to end in one process.

use std::process::Command;

#[test]
fn the_demo_scores_a_pdac_like_and_a_cp_like_exam() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args([
            "demo",
            "--no-view",
            "--speed",
            "8",
            "--port",
            &port.to_string(),
            "--state-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("NOT FOR CLINICAL USE"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "mosquitto_sub -h 127.0.0.1 -p {port} -t 'ceus/demo/#' -v"
        )),
        "{stdout}"
    );
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("exam "))
        .collect();
    assert_eq!(summary.len(), 2, "{stdout}");
    assert!(
        summary[0].contains("(Pdac-like lesion)") && summary[0].contains("→ PDAC"),
        "{stdout}"
    );
    assert!(
        summary[1].contains("(Cp-like lesion)") && summary[1].contains("→ CP"),
        "{stdout}"
    );
    for line in &summary {
        let bytes: usize = line
            .rsplit("heatmap ")
            .next()
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(bytes > 0, "no heatmap: {line}");
    }
    // The log shows the service's story: the model, the source, each exam's result id.
    assert!(stderr.contains("ready: device demo"), "{stderr}");
    assert!(
        stderr.matches("queued for the broker").count() >= 2,
        "{stderr}"
    );
}
