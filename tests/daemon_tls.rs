//! MQTT over TLS with a client certificate, a username with a password from a file, and an
//! ACL, against a real Mosquitto: `ceusd check` passes with the right credentials, fails with
//! a reason for each wrong one, and `ceusd run` publishes its status over the same session.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::certificates::make_certificates;
use support::*;

struct TlsBroker {
    port: u16,
    child: std::process::Child,
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tls_broker(dir: &Path) -> TlsBroker {
    let out = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(dir.join("passwd"))
        .args(["cart", "s3cret"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(dir.join("acl"), "user cart\ntopic readwrite ceus/tls/#\n").unwrap();
    let port = free_port();
    let d = dir.display();
    std::fs::write(
        dir.join("mosquitto.conf"),
        format!(
            "{}listener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\nallow_anonymous false\npassword_file {d}/passwd\nacl_file {d}/acl\npersistence false\n",
            keep_user()
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    TlsBroker { port, child }
}

fn tls_config(
    dir: &Path,
    port: u16,
    device: &str,
    password: &str,
    client_cert: bool,
) -> std::path::PathBuf {
    std::fs::write(dir.join(format!("pw-{password}")), format!("{password}\n")).unwrap();
    let d = dir.display();
    let cert = if client_cert {
        format!("client_cert_file = \"{d}/client.pem\"\nclient_key_file = \"{d}/client.key\"\n")
    } else {
        String::new()
    };
    let text = format!(
        "[device]\nid = \"{device}\"\n[source]\nuri = \"synthetic:cp\"\nspeed = 4.0\n[model]\npath = \"demo\"\n\
         [mqtt]\nbroker = \"mqtts://127.0.0.1:{port}\"\nusername = \"cart\"\npassword_file = \"{d}/pw-{password}\"\n\
         ca_file = \"{d}/ca.pem\"\n{cert}[state]\ndir = \"{d}/state-{device}\"\n"
    );
    let path = dir.join(format!("{device}-{password}-{client_cert}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn check(config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(["check", "--timeout", "5", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn broker_line(text: &str) -> String {
    text.lines()
        .find(|l| l.contains("broker"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn tls_with_client_certificate_password_and_acl() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let broker = start_tls_broker(dir.path());

    let good = tls_config(dir.path(), broker.port, "tls", "s3cret", true);
    let (ok, text) = check(&good);
    assert!(ok, "{text}");
    assert!(broker_line(&text).starts_with("PASS"), "{text}");
    assert!(broker_line(&text).contains("as cart"), "{text}");

    let (ok, text) = check(&tls_config(dir.path(), broker.port, "tls", "wrong", true));
    assert!(!ok);
    assert!(broker_line(&text).starts_with("FAIL"), "{text}");

    let (ok, text) = check(&tls_config(dir.path(), broker.port, "tls", "s3cret", false));
    assert!(!ok, "{text}");
    assert!(broker_line(&text).starts_with("FAIL"), "{text}");

    // Allowed on the broker, but not under this device's topics.
    let (ok, text) = check(&tls_config(
        dir.path(),
        broker.port,
        "other",
        "s3cret",
        true,
    ));
    assert!(!ok);
    assert!(broker_line(&text).contains("ACL"), "{text}");

    // The service itself over TLS: its retained status reaches a TLS subscriber.
    let daemon = Daemon::start(&good, &dir.path().join("daemon.log"), &[]);
    let d = dir.path().display().to_string();
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-t",
            "ceus/tls/status",
            "-C",
            "1",
            "-W",
            "60",
        ])
        .args([
            "--cafile",
            &format!("{d}/ca.pem"),
            "--cert",
            &format!("{d}/client.pem"),
            "--key",
            &format!("{d}/client.key"),
        ])
        .args(["-u", "cart", "-P", "s3cret"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", out, daemon.log_text()));
    assert_eq!(status["online"], true, "{status}\n{}", daemon.log_text());
    assert_eq!(status["device_id"], "tls");
    std::thread::sleep(Duration::from_millis(200));
    assert!(daemon.terminate().success());
}
