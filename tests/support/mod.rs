//! Real peers for the daemon's tests: a Mosquitto broker on a loopback port, `mosquitto_sub`
//! as an independent subscriber, `mosquitto_pub` for commands, and `ceusd run` as a process
//! that can be stopped with SIGTERM or killed with SIGKILL.
#![allow(dead_code)]

pub mod certificates;
pub mod dicom_tools;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tests that run the daemon take both cores: one at a time.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mosquitto started as root drops to the user "mosquitto", which cannot read a test's
/// private temporary folder: stay the user who runs the tests.
pub fn keep_user() -> &'static str {
    if unsafe { libc::geteuid() } == 0 {
        "user root\n"
    } else {
        ""
    }
}

/// A Mosquitto broker; retained messages persist across restarts when `persistent`.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start(dir: &Path, persistent: bool) -> Self {
        Self::start_with(dir, persistent, "")
    }

    /// A broker that also listens for MQTT over WebSockets on a second port and serves the
    /// files of `http_dir` there, as a cart's Mosquitto serves the bedside display.
    pub fn start_with_websockets(dir: &Path, http_dir: &Path) -> (Self, u16) {
        let ws_port = free_port();
        let extra = format!(
            "listener {ws_port} 127.0.0.1\nprotocol websockets\nhttp_dir {}\n",
            http_dir.display()
        );
        let broker = Self::start_with(dir, false, &extra);
        wait_for_port(ws_port);
        (broker, ws_port)
    }

    /// The process id, for a test that kills the broker from another process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A broker whose configuration ends with `extra` (a conf.d snippet, for example).
    pub fn start_with(dir: &Path, persistent: bool, extra: &str) -> Self {
        let port = free_port();
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n{}",
            keep_user()
        );
        if persistent {
            text += &format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                dir.display()
            );
        } else {
            text += "persistence false\n";
        }
        text += extra;
        std::fs::write(&conf, text).unwrap();
        let mut m = Self {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        m.restart();
        m
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (apt-get install mosquitto mosquitto-clients)");
        self.child = Some(child);
        wait_for_port(self.port);
    }

    /// SIGKILL: the broker vanishes without a goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One message as `mosquitto_sub` printed it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub retained: bool,
    pub payload: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {:?}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// `mosquitto_sub` on a topic filter, printing topic, retain flag and hex payload per line.
pub struct Subscriber {
    child: Child,
    pub messages: Arc<Mutex<Vec<Received>>>,
}

impl Subscriber {
    /// `session`: a persistent session id (QoS 1, clean session off), so that messages sent
    /// while the subscriber is cut off are kept for it by the broker.
    pub fn start(port: u16, filter: &str, session: Option<&str>) -> Self {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            filter,
            "-q",
            "1",
        ])
        .args(["-F", "%t %r %x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(id) = session {
            cmd.args(["-c", "-i", id]);
        }
        let mut child = cmd.spawn().expect("mosquitto_sub is installed");
        let stdout = child.stdout.take().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.splitn(3, ' ');
                let topic = parts.next().unwrap_or_default().to_string();
                let retained = parts.next() == Some("1");
                let payload = hex::decode(parts.next().unwrap_or_default()).unwrap_or_default();
                sink.lock().unwrap().push(Received {
                    topic,
                    retained,
                    payload,
                    at: Instant::now(),
                });
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        Self { child, messages }
    }

    pub fn snapshot(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits for a message that satisfies `pred`; returns it.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Received {
        let start = Instant::now();
        loop {
            if let Some(m) = self.messages.lock().unwrap().iter().find(|m| pred(m)) {
                return m.clone();
            }
            assert!(
                start.elapsed() < timeout,
                "no {what} within {timeout:?}; got topics: {:?}",
                self.messages
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|m| m.topic.clone())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retained messages on `filter` now: a fresh subscriber that reads what the broker holds.
pub fn retained(port: u16, filter: &str) -> Vec<Received> {
    let s = Subscriber::start(port, filter, None);
    std::thread::sleep(Duration::from_millis(700));
    s.snapshot().into_iter().filter(|m| m.retained).collect()
}

/// The first message with a payload on the retained topics of `filter`: the one the broker
/// holds, or one published while waiting (a result is stored in the outbox, and logged,
/// before it is published, so a test that saw the log line may be early).
pub fn wait_retained(port: u16, filter: &str, timeout: Duration) -> Received {
    let s = Subscriber::start(port, filter, None);
    s.wait_for(&format!("a message on {filter}"), timeout, |m| {
        !m.payload.is_empty()
    })
}

pub fn publish(port: u16, topic: &str, payload: &[u8]) {
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-q",
            "1",
            "-s",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub is installed");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(payload).unwrap();
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "mosquitto_pub to {topic} failed");
}

/// `ceusd run` as a child process, its log in a file.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, log: &Path, extra_env: &[(&str, String)]) -> Self {
        let file = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ceusd"));
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().unwrap(),
            log: log.to_path_buf(),
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the daemon did not exit after SIGTERM; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; fails naming `what` after `deadline`.
    pub fn wait_for_log(&self, needle: &str, deadline: Instant, what: &str) {
        while !self.log_text().contains(needle) {
            assert!(Instant::now() < deadline, "{what}: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes the command `body` to device `device`'s command topic.
pub fn command(port: u16, device: &str, body: serde_json::Value) {
    publish(
        port,
        &format!("ceus/{device}/cmd"),
        body.to_string().as_bytes(),
    );
}

/// A configuration file for the tests.
pub fn write_config(
    path: &Path,
    device: &str,
    source: &str,
    broker: &str,
    state: &Path,
    extra: &str,
) {
    let text = format!(
        r#"[device]
id = "{device}"
[source]
uri = "{source}"
speed = 4.0
[model]
path = "demo"
[mqtt]
broker = "{broker}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
[state]
dir = "{state}"
{extra}
"#,
        state = state.display()
    );
    std::fs::write(path, text).unwrap();
}

/// The lesion box of exam `index` of a synthetic session (what an operator would draw).
pub fn lesion_roi(source: &str, index: u64) -> ceusd::roi::Roi {
    use ceusd::capture::source::Pacing;
    use ceusd::capture::synthetic::SyntheticScanner;
    use ceusd::capture::synthetic_session::parse_session_spec;
    let spec = parse_session_spec(source.trim_start_matches("synthetic:")).unwrap();
    let exam = spec.exam(index).unwrap();
    SyntheticScanner::new(exam, Pacing::AsFastAsPossible)
        .unwrap()
        .truth()
        .lesion_ceus
}

/// The AsyncAPI document's schema `name`, as a validator (internal `$ref`s resolve).
pub fn schema(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/asyncapi.yaml"))
        .expect("docs/asyncapi.yaml");
    let doc: serde_json::Value = serde_yaml::from_str(&text).expect("asyncapi.yaml is YAML");
    let schemas = doc["components"]["schemas"].clone();
    assert!(
        schemas.get(name).is_some(),
        "no schema {name} in asyncapi.yaml"
    );
    let root = serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "components": { "schemas": schemas },
        "$ref": format!("#/components/schemas/{name}"),
    });
    jsonschema::draft7::new(&root).unwrap_or_else(|e| panic!("schema {name}: {e}"))
}

pub fn assert_valid(validator: &jsonschema::Validator, what: &str, value: &serde_json::Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match the contract: {errors:#?}\n{value:#}"
    );
}
