//! `ceusd check --config …`: what an installer runs before starting the service. Each check
//! prints one pass/fail line with what it found: the configuration, the model file and its
//! hash, the capture source and its format, the state directory, the broker (connection,
//! credentials, and whether this device may publish and subscribe under its topics), the PACS
//! and the modality worklist (C-ECHO).

use std::path::Path;
use std::time::Duration;

use crate::capture::source::SourceEvent;
use crate::config::{Config, Overrides};
use crate::publish::messages::Topics;

#[derive(Debug, Clone)]
pub struct CheckLine {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

impl std::fmt::Display for CheckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:<8} {}",
            if self.passed { "PASS" } else { "FAIL" },
            self.name,
            self.detail
        )
    }
}

/// The checks after the configuration's, in the order they run.
pub const CHECKS: [&str; 6] = ["model", "source", "state", "broker", "pacs", "worklist"];

/// Runs the configuration check, then those of `only` (all of [`CHECKS`] when empty); later
/// checks need a valid configuration.
pub fn run_checks(
    path: &Path,
    overrides: &Overrides,
    timeout: Duration,
    only: &[String],
) -> Vec<CheckLine> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut lines = Vec::new();
    let config = match Config::load(path, overrides) {
        Ok(c) => {
            lines.push(CheckLine {
                name: "config",
                passed: true,
                detail: format!("{} (device {})", path.display(), c.device.id),
            });
            c
        }
        Err(e) => {
            lines.push(CheckLine {
                name: "config",
                passed: false,
                detail: e.to_string(),
            });
            return lines;
        }
    };
    if wanted("model") {
        lines.push(check_model(&config));
    }
    if wanted("source") {
        lines.push(check_source(&config, timeout));
    }
    if wanted("state") {
        lines.push(check_state_dir(&config));
    }
    if wanted("broker") {
        lines.push(check_broker(&config, timeout));
    }
    if wanted("pacs") {
        lines.push(check_pacs(&config, timeout));
    }
    if wanted("worklist") {
        lines.push(check_worklist(&config, timeout));
    }
    lines
}

/// C-ECHO to the configured PACS, as the service's AE title.
fn check_pacs(config: &Config, timeout: Duration) -> CheckLine {
    match &config.pacs {
        Some(pacs) => echo_line("pacs", &pacs.peer, timeout),
        None => CheckLine {
            name: "pacs",
            passed: true,
            detail: "no [pacs] section: results are not sent to a PACS".into(),
        },
    }
}

/// C-ECHO to the configured modality worklist SCP.
fn check_worklist(config: &Config, timeout: Duration) -> CheckLine {
    match config.pacs.as_ref().and_then(|p| p.worklist.as_ref()) {
        Some(peer) => echo_line("worklist", peer, timeout),
        None => CheckLine {
            name: "worklist",
            passed: true,
            detail: "no [pacs.worklist] section: exams take their context from start_exam alone"
                .into(),
        },
    }
}

fn echo_line(
    name: &'static str,
    peer: &crate::pacs::network::PacsPeer,
    timeout: Duration,
) -> CheckLine {
    let line = |passed: bool, detail: String| CheckLine {
        name,
        passed,
        detail,
    };
    let mut peer = peer.clone();
    peer.timeout = peer.timeout.min(timeout);
    match crate::pacs::network::echo(&peer) {
        Ok(()) => line(
            true,
            format!(
                "C-ECHO to {peer} answered (calling AE title {})",
                peer.calling_ae_title
            ),
        ),
        Err(e) => line(false, format!("C-ECHO to {e}")),
    }
}

fn check_model(config: &Config) -> CheckLine {
    match crate::daemon::load_model(config) {
        Ok(m) => CheckLine {
            name: "model",
            passed: true,
            detail: format!(
                "{} {} ({}){}",
                m.identity.name,
                m.identity.content_hash,
                m.identity.intended_use,
                if config.model.sha256.is_some() {
                    ", hash as configured"
                } else {
                    ", no hash configured (model.sha256): any file at this path would be used"
                }
            ),
        },
        Err(e) => CheckLine {
            name: "model",
            passed: false,
            detail: e.to_string(),
        },
    }
}

fn check_source(config: &Config, timeout: Duration) -> CheckLine {
    let fail = |detail: String| CheckLine {
        name: "source",
        passed: false,
        detail,
    };
    let mut source = match crate::daemon::open_source(config) {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let described = source.describe();
    // The first event, on a thread: a device that never answers must not hang the check.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(source.next_event().map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(SourceEvent::Frame(f))) => CheckLine {
            name: "source",
            passed: true,
            detail: format!(
                "{described}: first frame {}x{} {}",
                f.width, f.height, f.format
            ),
        },
        // A capture device that cannot be opened is reported by its reconnecting source as
        // no signal: say that it could not be opened, not that it was.
        Ok(Ok(SourceEvent::NoSignal { reason }))
            if reason.starts_with(crate::capture::reconnect::CANNOT_OPEN) =>
        {
            fail(format!("{described}: {reason}"))
        }
        Ok(Ok(SourceEvent::NoSignal { reason })) => {
            fail(format!("{described}: open, but no picture: {reason}"))
        }
        Ok(Ok(SourceEvent::End)) => fail(format!("{described}: no frames at all")),
        Ok(Err(e)) => fail(format!("{described}: {e}")),
        Err(_) => fail(format!(
            "{described}: no frame within {:.0} s",
            timeout.as_secs_f64()
        )),
    }
}

/// The state directory and its outbox, checked without creating or changing anything: a
/// check run as root must not leave root-owned files where the service's user writes.
fn check_state_dir(config: &Config) -> CheckLine {
    use std::os::unix::fs::MetadataExt;
    let dir = &config.state.dir;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let line = |passed: bool, detail: String| CheckLine {
        name: "state",
        passed,
        detail,
    };
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => line(
            false,
            format!("{} exists but is not a directory", dir.display()),
        ),
        Ok(meta) if meta.uid() != euid => line(
            false,
            format!(
                "{} belongs to uid {}, this check runs as uid {euid}: run it as the service's user (sudo -u ceusd ceusd check ...)",
                dir.display(),
                meta.uid()
            ),
        ),
        Ok(_) if !writable(dir) => line(
            false,
            format!("{} is not writable by uid {euid}", dir.display()),
        ),
        Ok(_) => {
            let outbox = dir.join("outbox.sqlite");
            if !outbox.exists() {
                return line(
                    true,
                    format!(
                        "{} writable; no outbox yet (the service creates it when it starts)",
                        dir.display()
                    ),
                );
            }
            match crate::publish::outbox::Outbox::count_read_only(&outbox) {
                Ok((n, archive)) => {
                    let mut detail =
                        format!("{} writable; outbox holds {n} message(s)", dir.display());
                    if archive != Default::default() {
                        detail.push_str(&format!(
                            "; for the PACS: {} waiting, {} refused, {} not kept",
                            archive.waiting, archive.refused, archive.not_kept
                        ));
                        if let Some(reason) = &archive.last_refusal {
                            detail.push_str(&format!(" (last refusal: {reason})"));
                        }
                    }
                    // Refused or dropped objects never reached the patient's record: a
                    // hospital engineer must look at them.
                    line(archive.refused == 0 && archive.not_kept == 0, detail)
                }
                Err(e) => line(false, e.to_string()),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match dir.ancestors().skip(1).find(|a| a.exists()) {
                Some(parent) if writable(parent) => line(
                    true,
                    format!(
                        "{} does not exist yet: the service creates it when it starts (under systemd, StateDirectory=ceusd does; {} is writable here)",
                        dir.display(),
                        parent.display()
                    ),
                ),
                Some(parent) => line(
                    false,
                    format!(
                        "{} does not exist, and uid {euid} cannot create it ({} is not writable): create it for the service's user, or run the service under systemd (StateDirectory=ceusd)",
                        dir.display(),
                        parent.display()
                    ),
                ),
                None => line(false, format!("{}: no such directory", dir.display())),
            }
        }
        Err(e) => line(false, format!("{}: {e}", dir.display())),
    }
}

/// Whether this process may create files in `dir` (access(2), nothing written).
fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Connects as the daemon would (TLS, credentials), subscribes to a check topic under the
/// device's topics, publishes to it and waits for the message to come back: that proves the
/// connection, the credentials, and both permissions.
fn check_broker(config: &Config, timeout: Duration) -> CheckLine {
    let fail = |detail: String| CheckLine {
        name: "broker",
        passed: false,
        detail: format!("{}: {detail}", config.mqtt.broker),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let topics = Topics::new(&config.mqtt.topic_root, &config.device.id);
    // Not the daemon's client id (a running daemon must not be thrown off the broker), and no
    // will (it must not be marked offline).
    let client_id = format!("{}-check-{}", config.mqtt.client_id, std::process::id());
    let options = match crate::publish::mqtt::connection_options(config, &client_id) {
        Ok(o) => o,
        Err(e) => return fail(e.to_string()),
    };
    let check_topic = format!("{}/check", topics.base);
    let outcome = runtime.block_on(async {
        use rumqttc::{Event, Packet, QoS, SubscribeReasonCode};
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
        let token = format!("check-{}", crate::publish::messages::unix_ms());
        let work = async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .subscribe(check_topic.clone(), QoS::AtLeastOnce)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, SubscribeReasonCode::Failure))
                        {
                            return Err(format!(
                                "connected, but may not subscribe to {check_topic} (ACL)"
                            ));
                        }
                        client
                            .publish(check_topic.clone(), QoS::AtLeastOnce, false, token.clone())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == check_topic && p.payload == token.as_bytes() {
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        let r = tokio::time::timeout(timeout, work).await;
        let _ = client.try_disconnect();
        match r {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no round trip on {check_topic} within {:.0} s (the broker's ACL may deny publishing under {}/)",
                timeout.as_secs_f64(),
                topics.base
            )),
        }
    });
    match outcome {
        Ok(()) => CheckLine {
            name: "broker",
            passed: true,
            detail: format!(
                "{}: connected{}, published and received on {check_topic}",
                config.mqtt.broker,
                config
                    .mqtt
                    .username
                    .as_ref()
                    .map(|u| format!(" as {u}"))
                    .unwrap_or_default()
            ),
        },
        Err(e) => fail(e),
    }
}
