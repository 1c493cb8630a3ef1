//! The durable outbox on real SQLite files: order, acknowledgement, idempotent re-writes, the
//! bound, and a result that survives its writer being killed (SIGKILL) before it was sent.

use std::time::Duration;

use ceusd::publish::outbox::{Outbox, OutgoingMessage};

fn messages(result: &str) -> Vec<OutgoingMessage> {
    vec![
        OutgoingMessage {
            topic: "ceus/cart-1/exam/e1/result".into(),
            payload: format!("{{\"result_id\":\"{result}\",\"score\":0.91}}").into_bytes(),
            retain: true,
        },
        OutgoingMessage {
            topic: "ceus/cart-1/exam/e1/heatmap".into(),
            payload: vec![0x89, b'P', b'N', b'G', 0, 1, 2, 3],
            retain: true,
        },
    ]
}

#[test]
fn messages_wait_in_order_until_acknowledged_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    {
        let mut o = Outbox::open(&path, 100).unwrap();
        o.enqueue("r1", &messages("r1")).unwrap();
        o.enqueue("r2", &messages("r2")).unwrap();
        // The same result again (a retry after a crash between compute and enqueue's return)
        // adds nothing.
        o.enqueue("r1", &messages("r1")).unwrap();
        assert_eq!(o.len().unwrap(), 4);
        let first = o.pending().unwrap()[0].clone();
        assert_eq!(first.result_id, "r1");
        o.mark_attempt(first.id).unwrap();
        assert!(o.acknowledge(first.id).unwrap());
        assert!(
            !o.acknowledge(first.id).unwrap(),
            "a second PUBACK changes nothing"
        );
    }
    let o = Outbox::open(&path, 100).unwrap();
    let pending = o.pending().unwrap();
    let order: Vec<(&str, &str)> = pending
        .iter()
        .map(|m| {
            (
                m.result_id.as_str(),
                m.message.topic.rsplit('/').next().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [("r1", "heatmap"), ("r2", "result"), ("r2", "heatmap")]
    );
    assert_eq!(pending[1].message, messages("r2")[0]);
}

#[test]
fn a_full_outbox_refuses_a_whole_result_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    let mut o = Outbox::open(&path, 5).unwrap();
    o.enqueue("r1", &messages("r1")).unwrap();
    o.enqueue("r2", &messages("r2")).unwrap();
    assert!((o.fill().unwrap() - 0.8).abs() < 1e-12);
    let e = o.enqueue("r3", &messages("r3")).unwrap_err().to_string();
    assert!(e.contains("full") && e.contains("5 messages"), "{e}");
    assert_eq!(o.len().unwrap(), 4, "none of r3's messages went in");
    assert!(o.enqueue("r4", &[]).is_err());
}

/// The child half of the kill test: writes a result, says so, and waits to be killed.
fn child(path: &str) -> ! {
    let mut o = Outbox::open(std::path::Path::new(path), 100).unwrap();
    o.enqueue("r-killed", &messages("r-killed")).unwrap();
    std::fs::write(format!("{path}.ready"), b"written").unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_result_written_before_the_process_is_killed_is_there_after_restart() {
    if let Ok(path) = std::env::var("CEUSD_OUTBOX_CHILD") {
        child(&path);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    let mut process = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_result_written_before_the_process_is_killed_is_there_after_restart",
            "--nocapture",
        ])
        .env("CEUSD_OUTBOX_CHILD", &path)
        .spawn()
        .unwrap();
    let ready = dir.path().join("outbox.sqlite.ready");
    for _ in 0..600 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ready.exists(), "the child did not write its result");
    process.kill().unwrap(); // SIGKILL: no destructor, no flush runs.
    process.wait().unwrap();
    let o = Outbox::open(&path, 100).unwrap();
    let pending = o.pending().unwrap();
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|m| m.result_id == "r-killed"));
    assert_eq!(pending[1].message.payload, messages("r-killed")[1].payload);
}

/// The outbox holds what goes to the PACS, patient data included: it and its WAL are the
/// service's alone (mode 0600), whatever the umask.
#[test]
fn the_outbox_is_readable_by_the_service_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    let mut outbox = Outbox::open(&path, 10).unwrap();
    outbox.enqueue("r1", &messages("r1")).unwrap();
    for file in [path.clone(), dir.path().join("outbox.sqlite-wal")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", file.display());
    }
}
