//! `ceusd demo`: the whole product on one machine with nothing to set up. An embedded MQTT
//! broker (rumqttd, loopback) unless `--broker` names one; the service itself (`daemon::serve`,
//! the same code as `ceusd run`) on the synthetic scanner playing a PDAC-like and a CP-like
//! exam; the demo model; and a bedside display in the terminal that subscribes to the device's
//! topics and, like a sonographer, draws the ROI on the lesion when each exam starts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::watch;

use crate::capture::source::Pacing;
use crate::capture::synthetic::{LesionKind, SyntheticScanner};
use crate::capture::synthetic_session::parse_session_spec;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {0}")]
    Setup(String),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Recorded time runs this many times faster.
    pub speed: f64,
    /// An external broker (`mqtt://host:port`) instead of the embedded one.
    pub broker: Option<String>,
    /// Port of the embedded broker (1883, or a free one when 1883 is taken).
    pub port: Option<u16>,
    /// How many exams (alternating PDAC-like and CP-like).
    pub exams: u32,
    pub state_dir: Option<PathBuf>,
    /// Draw the live view (false: log lines only).
    pub view: bool,
    pub seed: u64,
    /// Frame size and rate of the synthetic scanner.
    pub size: (u32, u32),
    pub fps: f64,
    /// Serve the bedside display's page (embedded broker only): the port of the page, and
    /// the port of the broker's WebSockets listener (8080 and 9001, or free ones when taken).
    /// `None`: no page.
    pub web: Option<(Option<u16>, Option<u16>)>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            speed: 4.0,
            broker: None,
            port: None,
            exams: 2,
            state_dir: None,
            view: true,
            seed: 11,
            size: (1280, 720),
            fps: 15.0,
            web: Some((None, None)),
        }
    }
}

/// One exam as the display saw it.
#[derive(Debug, Clone)]
pub struct DemoExam {
    pub exam_id: String,
    pub lesion: LesionKind,
    pub result_id: String,
    pub score: Option<f32>,
    pub label: Option<String>,
    pub reason: Option<String>,
    pub heatmap_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct DemoSummary {
    pub broker: String,
    pub exams: Vec<DemoExam>,
}

/// The synthetic source of the demo.
fn source_uri(o: &DemoOptions) -> String {
    let kinds: Vec<&str> = (0..o.exams.max(1))
        .map(|i| if i % 2 == 0 { "pdac" } else { "cp" })
        .collect();
    format!(
        "synthetic:{}?seed={}&duration=60&injection=5&size={}x{}&fps={}",
        kinds.join(","),
        o.seed,
        o.size.0,
        o.size.1,
        o.fps
    )
}

fn free_port(preferred: u16) -> Result<u16, DemoError> {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return Ok(preferred);
    }
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| DemoError::Setup(format!("no free loopback port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| DemoError::Setup(e.to_string()))
}

/// Starts rumqttd on 127.0.0.1:`port` in a thread of its own, with MQTT over WebSockets on
/// 127.0.0.1:`ws_port` too when given.
pub fn start_embedded_broker(port: u16, ws_port: Option<u16>) -> Result<(), DemoError> {
    // One listener section of rumqttd's configuration: `kind` is v4 (MQTT 3.1.1 over TCP) or
    // ws (over WebSockets); both take the same connection settings.
    let listener = |kind: &str, name: &str, port: u16| {
        format!(
            r#"
[{kind}.1]
name = "{name}"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[{kind}.1.connections]
connection_timeout_ms = 60000
max_payload_size = 20971520
max_inflight_count = 100
dynamic_filters = true
"#
        )
    };
    let mut text = r#"
id = 0
[router]
max_connections = 64
max_outgoing_packet_count = 200
max_segment_size = 16777216
max_segment_count = 4
"#
    .to_string();
    text += &listener("v4", "ceusd-demo", port);
    if let Some(ws_port) = ws_port {
        text += &listener("ws", "ceusd-demo-ws", ws_port);
    }
    let config: rumqttd::Config =
        toml::from_str(&text).map_err(|e| DemoError::Setup(format!("broker config: {e}")))?;
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                log::error!("embedded broker: {e}");
            }
        })
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    for port in std::iter::once(port).chain(ws_port) {
        let open = (0..100).any(|_| {
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            if !up {
                std::thread::sleep(Duration::from_millis(50));
            }
            up
        });
        if !open {
            return Err(DemoError::Setup(format!(
                "the embedded broker did not open 127.0.0.1:{port}"
            )));
        }
    }
    Ok(())
}

/// Serves the display page and returns its URL, pointed at the broker's WebSockets listener.
fn serve_display_page(page_port: u16, ws_port: u16) -> Result<String, DemoError> {
    let addr = crate::web_display::serve(std::net::SocketAddr::from(([127, 0, 0, 1], page_port)))
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    Ok(format!(
        "http://{addr}/?broker=ws://127.0.0.1:{ws_port}&device=demo"
    ))
}

/// Runs the demo to the end of its exams.
pub fn run(options: DemoOptions, out: &mut dyn std::io::Write) -> Result<DemoSummary, DemoError> {
    let mut page_url = None;
    let broker = match &options.broker {
        Some(b) => b.clone(),
        None => {
            let port = match options.port {
                Some(p) => p,
                None => free_port(1883)?,
            };
            let web = match options.web {
                Some((page, ws)) => Some((
                    page.map_or_else(|| free_port(8080), Ok)?,
                    ws.map_or_else(|| free_port(9001), Ok)?,
                )),
                None => None,
            };
            start_embedded_broker(port, web.map(|(_, ws)| ws))?;
            if let Some((page, ws)) = web {
                page_url = Some(serve_display_page(page, ws)?);
            }
            format!("mqtt://127.0.0.1:{port}")
        }
    };
    let state_dir = options
        .state_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ceusd-demo-{}", std::process::id())));
    let uri = source_uri(&options);
    let text = format!(
        r#"
[device]
id = "demo"
[source]
uri = "{uri}"
speed = {speed}
[model]
path = "demo"
[mqtt]
broker = "{broker}"
[exam]
auto_start = true
[state]
dir = "{state}"
[preview]
enabled = true
"#,
        speed = options.speed,
        state = state_dir.display().to_string().replace('\\', "\\\\"),
    );
    let config = Config::parse(&text, std::path::Path::new("<demo>"))
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    config
        .validate(std::path::Path::new("<demo>"))
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let spec =
        parse_session_spec(uri.trim_start_matches("synthetic:")).map_err(DemoError::Setup)?;
    let model = Arc::new(crate::daemon::load_model(&config)?);
    let broker_addr = config.broker().map_err(DemoError::Setup)?;
    let _ = writeln!(
        out,
        "ceusd demo: synthetic scanner ({} exams), demo model {} — NOT FOR CLINICAL USE\n\
         broker {broker}; watch the topics from another terminal with:\n  \
         mosquitto_sub -h {} -p {} -t 'ceus/demo/#' -v\n",
        options.exams, model.identity.content_hash, broker_addr.host, broker_addr.port
    );
    match &page_url {
        Some(url) => {
            let _ = writeln!(out, "the bedside display, in a browser:\n  {url}\n");
        }
        None if options.broker.is_some() && options.web.is_some() => {
            let _ = writeln!(
                out,
                "the bedside display needs a WebSockets listener: see the README's \"bedside display\"\n"
            );
        }
        None => {}
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        let daemon = tokio::spawn(crate::daemon::serve(config, model, stop_rx));
        let display = display(&broker_addr.host, broker_addr.port, &options, &spec, out).await;
        let _ = stop_tx.send(true);
        match daemon.await {
            Ok(r) => r?,
            Err(e) => return Err(DemoError::Setup(format!("daemon task: {e}"))),
        }
        let exams = display?;
        Ok(DemoSummary { broker, exams })
    })
}

/// The terminal display: follows status, timing and results; sets the ROI on each new exam.
async fn display(
    host: &str,
    port: u16,
    options: &DemoOptions,
    spec: &crate::capture::synthetic_session::SessionSpec,
    out: &mut dyn std::io::Write,
) -> Result<Vec<DemoExam>, DemoError> {
    let mut mqtt = MqttOptions::new(
        format!("ceusd-demo-display-{}", std::process::id()),
        host,
        port,
    );
    mqtt.set_keep_alive(Duration::from_secs(10));
    mqtt.set_max_packet_size(16 * 1024 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(mqtt, 64);
    let bar = if options.view {
        let b = indicatif::ProgressBar::new(60);
        b.set_style(
            indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:40.cyan/blue}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut exam_ids: Vec<String> = Vec::new();
    let mut results: HashMap<String, DemoExam> = HashMap::new();
    let mut heatmaps: HashMap<String, usize> = HashMap::new();
    let wanted = options.exams.max(1) as usize;
    let say = |out: &mut dyn std::io::Write, line: String| {
        if options.view {
            bar.suspend(|| {
                let _ = writeln!(out, "{line}");
            });
        } else {
            log::info!("{line}");
        }
    };
    let limit = Duration::from_secs_f64(120.0 * wanted as f64 / options.speed + 120.0);
    let work = async {
        loop {
            let event = eventloop
                .poll()
                .await
                .map_err(|e| DemoError::Setup(format!("display connection: {e}")));
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    // The broker may still be starting; try again shortly.
                    log::debug!("{e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            match event {
                Event::Incoming(Packet::ConnAck(_)) => {
                    client
                        .subscribe("ceus/demo/#", QoS::AtLeastOnce)
                        .await
                        .map_err(|e| DemoError::Setup(e.to_string()))?;
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let topic = p.topic.clone();
                    if topic.ends_with("/heatmap") {
                        let exam = topic.split('/').nth(3).unwrap_or_default().to_string();
                        if !p.payload.is_empty() {
                            heatmaps.insert(exam.clone(), p.payload.len());
                            if let Some(r) = results.get_mut(&exam) {
                                r.heatmap_bytes = p.payload.len();
                            }
                            say(
                                out,
                                format!(
                                    "  heatmap for exam {exam}: PNG, {} bytes",
                                    p.payload.len()
                                ),
                            );
                        }
                        continue;
                    }
                    let Ok(v) = serde_json::from_slice::<Value>(&p.payload) else {
                        continue;
                    };
                    if topic.ends_with("/status") {
                        let running = v["exam_running"].as_bool().unwrap_or(false);
                        if let (true, Some(id)) = (running, v["exam_id"].as_str()) {
                            if !exam_ids.iter().any(|e| e == id) {
                                let index = exam_ids.len() as u64;
                                exam_ids.push(id.to_string());
                                let Some(exam) = spec.exam(index) else {
                                    continue;
                                };
                                let truth = SyntheticScanner::new(exam, Pacing::AsFastAsPossible)
                                    .map_err(DemoError::Setup)?
                                    .truth()
                                    .clone();
                                let roi = truth.lesion_ceus;
                                say(out, format!(
                                    "exam {id} started ({}-like lesion); the operator draws the ROI {},{} {}x{}",
                                    kind_name(truth.kind), roi.x, roi.y, roi.width, roi.height
                                ));
                                let command = serde_json::json!({
                                    "id": format!("roi-{index}"),
                                    "command": "set_roi",
                                    "roi": roi,
                                });
                                client
                                    .publish(
                                        "ceus/demo/cmd",
                                        QoS::AtLeastOnce,
                                        false,
                                        command.to_string(),
                                    )
                                    .await
                                    .map_err(|e| DemoError::Setup(e.to_string()))?;
                            }
                        }
                    } else if topic.ends_with("/cmd/reply") {
                        if v["ok"].as_bool() != Some(true) {
                            say(
                                out,
                                format!("  command {} refused: {}", v["id"], v["error"]),
                            );
                        }
                    } else if topic.ends_with("/timing") {
                        let phase = v["phase"].as_str().unwrap_or("?");
                        let elapsed = v["elapsed_s"].as_f64();
                        bar.set_prefix(phase.to_string());
                        bar.set_position(elapsed.unwrap_or(0.0).clamp(0.0, 60.0) as u64);
                        let countdown = v["window"]["countdown_s"].as_f64();
                        let msg = match (elapsed, countdown) {
                            (None, _) => "waiting for the injection".to_string(),
                            (Some(e), Some(c)) if c > 0.0 => format!(
                                "{e:5.1} s since injection ({}) · hold the probe still in {c:4.1} s",
                                v["clock_source"].as_str().unwrap_or("?")
                            ),
                            (Some(e), _) if v["window"]["open"].as_bool() == Some(true) => format!(
                                "{e:5.1} s since injection · KEY-FRAME WINDOW: hold still ({} frames kept)",
                                v["window"]["frames_kept"]
                            ),
                            (Some(e), _) => format!("{e:5.1} s since injection"),
                        };
                        bar.set_message(msg);
                    } else if topic.ends_with("/result") {
                        let exam = v["exam_id"].as_str().unwrap_or_default().to_string();
                        let index = exam_ids.iter().position(|e| *e == exam);
                        let lesion = index
                            .and_then(|i| spec.exam(i as u64))
                            .map(|c| c.kind)
                            .unwrap_or(LesionKind::Pdac);
                        let r = DemoExam {
                            exam_id: exam.clone(),
                            lesion,
                            result_id: v["result_id"].as_str().unwrap_or_default().to_string(),
                            score: v["score"].as_f64().map(|s| s as f32),
                            label: v["label"].as_str().map(str::to_string),
                            reason: v["reason"].as_str().map(str::to_string),
                            heatmap_bytes: heatmaps.get(&exam).copied().unwrap_or(0),
                        };
                        let spread = &v["spread"];
                        say(out, format!(
                            "RESULT exam {exam} ({}-like): {} — {} frames scored, {:.3}–{:.3}{}",
                            kind_name(lesion),
                            crate::publish::messages::score_text(r.score, r.label.as_deref(), r.reason.as_deref()),
                            spread["frames_scored"],
                            spread["min"].as_f64().unwrap_or(f64::NAN),
                            spread["max"].as_f64().unwrap_or(f64::NAN),
                            v["warnings"]
                                .as_array()
                                .filter(|w| !w.is_empty())
                                .map(|w| format!("; warnings: {}", w.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; ")))
                                .unwrap_or_default()
                        ));
                        results.insert(exam, r);
                    }
                    let complete = results.len() >= wanted
                        && results
                            .values()
                            .all(|r| r.score.is_none() || r.heatmap_bytes > 0);
                    if complete {
                        return Ok::<(), DemoError>(());
                    }
                }
                _ => {}
            }
        }
    };
    let outcome = tokio::time::timeout(limit, work).await;
    bar.finish_and_clear();
    let _ = client.try_disconnect();
    match outcome {
        Ok(r) => r?,
        Err(_) => {
            return Err(DemoError::Setup(format!(
                "the demo did not finish within {:.0} s",
                limit.as_secs_f64()
            )))
        }
    }
    let mut exams: Vec<DemoExam> = exam_ids
        .iter()
        .filter_map(|id| results.get(id).cloned())
        .collect();
    exams.truncate(wanted);
    Ok(exams)
}

fn kind_name(k: LesionKind) -> String {
    k.as_str().to_uppercase()
}
