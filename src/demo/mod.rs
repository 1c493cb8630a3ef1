//! `ceusd demo`: the whole product on one machine with nothing to set up. An embedded MQTT
//! broker (rumqttd, loopback) unless `--broker` names one; the service itself (`daemon::serve`,
//! the same code as `ceusd run`) on the synthetic scanner playing PDAC-like and CP-like exams
//! in turn until stopped; the demo model; and a bedside display in the terminal that subscribes
//! to the device's topics and, like a sonographer, draws the ROI on the lesion when each exam
//! starts.
//!
//! Each result stays on screen (and on the page) for [`RESULT_HOLD`] before the next exam
//! begins: the scanner's next exam is held back by an [`ExamGate`] that this display opens,
//! so a slow machine shows every result as long as a fast one does.

pub mod view;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::sync::watch;

use crate::capture::source::Pacing;
use crate::capture::synthetic::{LesionKind, SyntheticScanner};
use crate::capture::synthetic_session::{
    parse_session_spec, ExamGate, SessionSpec, SyntheticSession,
};
use crate::config::{BrokerAddress, Config};
use view::{Bands, Clock, View};

/// How long each result stays on the screen and the page, at least, before the next exam
/// starts (wall clock).
pub const RESULT_HOLD: Duration = Duration::from_secs(15);
/// Added to the hold: another subscriber may receive a result a little after this display.
const DELIVERY_SLACK: Duration = Duration::from_millis(500);

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
    /// How many exams (alternating PDAC-like and CP-like); `None`: until stopped.
    pub exams: Option<u32>,
    /// How long each result stays on screen before the next exam starts.
    pub hold: Duration,
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
            exams: None,
            hold: RESULT_HOLD,
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
    /// Wall time from the window's close to the result, as the result reports it.
    pub latency_ms: Option<u64>,
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
    /// Exams started, in order; those without a result have none.
    pub started: usize,
    pub exams: Vec<DemoExam>,
    /// Frames lost by the source or dropped by the daemon's queue (its last status).
    pub frames_dropped: u64,
    pub frames_received: u64,
    /// Stopped by Ctrl-C or SIGTERM rather than after `--exams`.
    pub interrupted: bool,
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "summary: {} exam(s) started, {} result(s), {} of {} frames dropped (broker {})",
            self.started,
            self.exams.len(),
            self.frames_dropped,
            self.frames_received + self.frames_dropped,
            self.broker
        )?;
        for e in &self.exams {
            writeln!(
                f,
                "  exam {} ({} lesion): {} [{}], heatmap {} bytes",
                e.exam_id,
                e.lesion,
                crate::publish::messages::score_text(
                    e.score,
                    e.label.as_deref(),
                    e.reason.as_deref()
                ),
                e.result_id,
                e.heatmap_bytes
            )?;
        }
        Ok(())
    }
}

/// The synthetic source of the demo: PDAC-like and CP-like in turn, `exams` of them or
/// endless.
fn source_uri(o: &DemoOptions) -> String {
    let kinds: Vec<&str> = match o.exams {
        Some(n) => (0..n.max(1))
            .map(|i| if i % 2 == 0 { "pdac" } else { "cp" })
            .collect(),
        None => vec!["pdac", "cp"],
    };
    format!(
        "synthetic:{}?seed={}&duration=60&injection=5&size={}x{}&fps={}{}",
        kinds.join(","),
        o.seed,
        o.size.0,
        o.size.1,
        o.fps,
        if o.exams.is_none() { "&rounds=0" } else { "" }
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

/// Runs the demo until its exams are done (`exams`) or it is stopped with Ctrl-C or SIGTERM.
pub fn run(options: DemoOptions, out: &mut dyn std::io::Write) -> Result<DemoSummary, DemoError> {
    let (broker, page_url) = connect_broker(&options)?;
    let state_dir = options
        .state_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ceusd-demo-{}", std::process::id())));
    let uri = source_uri(&options);
    let model_path = int8_demo_model(&state_dir)?;
    let config = demo_config(&options, &uri, &broker, &model_path, &state_dir)?;
    let spec =
        parse_session_spec(uri.trim_start_matches("synthetic:")).map_err(DemoError::Setup)?;
    // The scanner's next exam waits for this display: see `RESULT_HOLD`.
    let gate = ExamGate::new();
    let pacing = Pacing::real_time(options.speed).map_err(DemoError::Setup)?;
    let source =
        SyntheticSession::gated(spec.clone(), pacing, gate.clone()).map_err(DemoError::Setup)?;
    let model = Arc::new(crate::daemon::load_model(&config)?);
    let broker_addr = config.mqtt.broker.clone();
    let (header, watch) = announce(
        out,
        &options,
        &model.identity.content_hash,
        &broker,
        &broker_addr,
        page_url.as_deref(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let show = Show {
        config,
        model,
        source,
        spec,
        gate,
        broker_addr,
        header,
        watch,
    };
    let seen = runtime.block_on(show.serve_and_follow(&options, out))?;
    Ok(seen.summary(broker, options.exams))
}

/// The broker the demo uses: the one `--broker` names, or the embedded one started here
/// (with the display page, and the URL of that page, unless `--no-web`).
fn connect_broker(options: &DemoOptions) -> Result<(String, Option<String>), DemoError> {
    if let Some(b) = &options.broker {
        return Ok((b.clone(), None));
    }
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
    let page_url = match web {
        Some((page, ws)) => Some(serve_display_page(page, ws)?),
        None => None,
    };
    Ok((format!("mqtt://127.0.0.1:{port}"), page_url))
}

/// The service's configuration for the demo, checked as `ceusd run` checks a file.
fn demo_config(
    options: &DemoOptions,
    uri: &str,
    broker: &str,
    model_path: &std::path::Path,
    state_dir: &std::path::Path,
) -> Result<Config, DemoError> {
    let text = format!(
        r#"
[device]
id = "demo"
[source]
uri = "{uri}"
speed = {speed}
[model]
path = "{model}"
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
        model = model_path.display().to_string().replace('\\', "\\\\"),
    );
    Config::parse(&text, std::path::Path::new("<demo>"))
        .map_err(|e| DemoError::Setup(e.to_string()))
}

/// Says what runs and where to watch it; returns the view's header and its "watch" line.
fn announce(
    out: &mut dyn std::io::Write,
    options: &DemoOptions,
    model_hash: &str,
    broker: &str,
    broker_addr: &BrokerAddress,
    page_url: Option<&str>,
) -> (String, String) {
    let exams = match options.exams {
        Some(n) => format!("{n} exam(s)"),
        None => "exams until Ctrl-C".to_string(),
    };
    // The hash's first 12 digits name the model here; the service's log has it whole.
    let hash = model_hash;
    let header = format!(
        "ceusd demo — NOT FOR CLINICAL USE — device demo, demo model (int8) {}…, synthetic scanner ({exams})",
        &hash[..hash.len().min("sha256:".len() + 12)]
    );
    let topics = format!(
        "mosquitto_sub -h {} -p {} -t 'ceus/demo/#' -v",
        broker_addr.host, broker_addr.port
    );
    let _ = writeln!(
        out,
        "{header}\nbroker {broker}; watch the topics from another terminal with:\n  {topics}\n"
    );
    let watch = match page_url {
        Some(url) => {
            let _ = writeln!(out, "the bedside display, in a browser:\n  {url}\n");
            format!("bedside display: {url}")
        }
        None if options.broker.is_some() && options.web.is_some() => {
            let _ = writeln!(
                out,
                "the bedside display needs a WebSockets listener: see the README's \"bedside display\"\n"
            );
            format!("topics: {topics}")
        }
        None => format!("topics: {topics}"),
    };
    (header, watch)
}

/// What the demo has set up before it starts: the service with its model and gated synthetic
/// scanner, and what the display shows and where it connects.
struct Show {
    config: Config,
    model: Arc<crate::model::DlrModel>,
    source: SyntheticSession,
    spec: SessionSpec,
    gate: Arc<ExamGate>,
    broker_addr: BrokerAddress,
    header: String,
    watch: String,
}

impl Show {
    /// Runs the service and the display side by side until the display is done or a signal
    /// stops it, then stops the service in order (the result in flight is finished first).
    async fn serve_and_follow(
        self,
        options: &DemoOptions,
        out: &mut dyn std::io::Write,
    ) -> Result<Followed, DemoError> {
        use std::io::IsTerminal;
        use tokio::signal::unix::{signal, SignalKind};
        // Before anything runs: a signal from now on stops the demo in order.
        let signal_error = |e: std::io::Error| DemoError::Setup(format!("signal handler: {e}"));
        let signals = Signals {
            interrupt: signal(SignalKind::interrupt()).map_err(signal_error)?,
            terminate: signal(SignalKind::terminate()).map_err(signal_error)?,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let daemon = tokio::spawn(crate::daemon::serve_source(
            self.config,
            self.model,
            Some(Box::new(self.source)),
            stop_rx,
        ));
        let mut view = View::new(options.view && std::io::stdout().is_terminal());
        view.header(&self.header, &self.watch);
        let followed = follow(
            &self.broker_addr.host,
            self.broker_addr.port,
            options,
            &self.spec,
            &self.gate,
            signals,
            &mut view,
        )
        .await;
        view.close();
        if followed.as_ref().is_ok_and(|f| f.interrupted) {
            let _ = writeln!(
                out,
                "stopping: finishing the result in flight, then the device goes offline"
            );
            let _ = out.flush();
        }
        let _ = stop_tx.send(true);
        match daemon.await {
            Ok(r) => r?,
            Err(e) => return Err(DemoError::Setup(format!("daemon task: {e}"))),
        }
        followed
    }
}

/// The embedded demo model as a cart runs a model: quantized to int8 (what `ceusd model
/// export-demo` then `ceusd model quantize --to q8` write), in the demo's state directory.
/// Scoring a window takes about a third of the f32 model's time (docs/performance.md), which
/// keeps the result within seconds of the window's close while the synthetic scanner renders
/// its frames on the same two cores.
fn int8_demo_model(state_dir: &std::path::Path) -> Result<PathBuf, DemoError> {
    use crate::model::convert::{quantize_model, Target};
    std::fs::create_dir_all(state_dir)
        .map_err(|e| DemoError::Setup(format!("{}: {e}", state_dir.display())))?;
    let (f32_path, int8_path) = (
        state_dir.join("demo-f32.gguf"),
        state_dir.join("demo-int8.gguf"),
    );
    crate::model::demo::write_demo_model(&f32_path)?;
    // A fixed creation time: the same demo model gives the same file, run after run.
    quantize_model(&f32_path, Target::Q8, &int8_path, None)?;
    let _ = std::fs::remove_file(&f32_path);
    Ok(int8_path)
}

/// Ctrl-C and SIGTERM, caught from the start so that either ends the demo in order.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

/// What the display saw.
#[derive(Default)]
struct Followed {
    exam_ids: Vec<String>,
    results: HashMap<String, DemoExam>,
    heatmaps: HashMap<String, usize>,
    frames_received: u64,
    frames_dropped: u64,
    interrupted: bool,
}

impl Followed {
    /// The summary of the exams started, in order (at most `exams` of them).
    fn summary(self, broker: String, exams: Option<u32>) -> DemoSummary {
        let mut results: Vec<DemoExam> = self
            .exam_ids
            .iter()
            .filter_map(|id| self.results.get(id).cloned())
            .collect();
        if let Some(n) = exams {
            results.truncate(n as usize);
        }
        DemoSummary {
            broker,
            started: self.exam_ids.len(),
            exams: results,
            frames_dropped: self.frames_dropped,
            frames_received: self.frames_received,
            interrupted: self.interrupted,
        }
    }

    /// Exam `index` has its result, and its heatmap when it was scored.
    fn complete(&self, index: usize) -> bool {
        self.exam_ids
            .get(index)
            .and_then(|id| self.results.get(id))
            .is_some_and(|r| r.score.is_none() || r.heatmap_bytes > 0)
    }
}

/// The bedside display in the terminal: follows status, timing and results; sets the ROI on
/// each new exam; opens the gate for the next exam once a result has been shown long enough.
async fn follow(
    host: &str,
    port: u16,
    options: &DemoOptions,
    spec: &SessionSpec,
    gate: &ExamGate,
    mut signals: Signals,
    view: &mut View,
) -> Result<Followed, DemoError> {
    let mut mqtt = MqttOptions::new(
        format!("ceusd-demo-display-{}", std::process::id()),
        host,
        port,
    );
    mqtt.set_keep_alive(Duration::from_secs(10));
    mqtt.set_max_packet_size(16 * 1024 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(mqtt, 64);
    let mut display = Bedside {
        client,
        options,
        spec,
        gate,
        view,
        seen: Followed::default(),
        awaiting: 0,
        shown_since: None,
        last_phase: None,
        // A guard for `--exams N` only: an endless demo runs until it is stopped.
        deadline: options.exams.map(|n| {
            Instant::now()
                + Duration::from_secs_f64(120.0 * n as f64 / options.speed + 120.0)
                + (options.hold + DELIVERY_SLACK) * n
        }),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let event = tokio::select! {
            _ = signals.interrupt.recv() => {
                display.seen.interrupted = true;
                break;
            }
            _ = signals.terminate.recv() => {
                display.seen.interrupted = true;
                break;
            }
            _ = tick.tick() => {
                if display.tick()? == Ticked::AllShown {
                    break;
                }
                continue;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(event) => display.event(event).await?,
            Err(e) => {
                // The broker may still be starting; try again shortly.
                log::debug!("display connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let _ = display.client.try_disconnect();
    Ok(display.seen)
}

/// The bedside display while it follows the device: what it has seen, and which exam's
/// result it waits for or shows.
struct Bedside<'a> {
    client: AsyncClient,
    options: &'a DemoOptions,
    spec: &'a SessionSpec,
    gate: &'a ExamGate,
    view: &'a mut View,
    seen: Followed,
    /// The exam whose result is awaited, and since when its result has been on screen.
    awaiting: usize,
    shown_since: Option<Instant>,
    last_phase: Option<crate::timing::Phase>,
    deadline: Option<Instant>,
}

/// What the display's clock found.
#[derive(PartialEq)]
enum Ticked {
    Waiting,
    /// The last exam's result has been shown long enough.
    AllShown,
}

impl Bedside<'_> {
    /// Once a result has been on screen for the hold, lets the next exam begin (or ends the
    /// demo after its last exam); fails once the demo runs past its deadline.
    fn tick(&mut self) -> Result<Ticked, DemoError> {
        let hold = self.options.hold + DELIVERY_SLACK;
        if self.shown_since.is_some_and(|t| t.elapsed() >= hold) {
            if self
                .options
                .exams
                .is_some_and(|n| self.awaiting + 1 >= n as usize)
            {
                return Ok(Ticked::AllShown);
            }
            self.gate.open(self.awaiting as u64 + 1);
            self.awaiting += 1;
            self.shown_since = None;
        }
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            let _ = self.client.try_disconnect();
            return Err(DemoError::Setup(format!(
                "the demo did not finish its {} exam(s) in time",
                self.options.exams.unwrap_or_default()
            )));
        }
        Ok(Ticked::Waiting)
    }

    /// Subscribes to the device's topics once connected; takes in what is published there.
    async fn event(&mut self, event: Event) -> Result<(), DemoError> {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => self
                .client
                .subscribe("ceus/demo/#", QoS::AtLeastOnce)
                .await
                .map_err(|e| DemoError::Setup(e.to_string())),
            Event::Incoming(Packet::Publish(publish)) => {
                self.message(&publish.topic, &publish.payload).await?;
                if self.shown_since.is_none() && self.seen.complete(self.awaiting) {
                    self.shown_since = Some(Instant::now());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// One message on the device's topics: a heatmap, or status, a command reply, timing or
    /// a result in JSON (anything else is passed over).
    async fn message(&mut self, topic: &str, payload: &[u8]) -> Result<(), DemoError> {
        if topic.ends_with("/heatmap") {
            let exam = topic.split('/').nth(3).unwrap_or_default().to_string();
            if !payload.is_empty() {
                self.seen.heatmaps.insert(exam.clone(), payload.len());
                if let Some(r) = self.seen.results.get_mut(&exam) {
                    r.heatmap_bytes = payload.len();
                }
            }
            return Ok(());
        }
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            return Ok(());
        };
        if topic.ends_with("/status") {
            self.status(&v).await?;
        } else if topic.ends_with("/cmd/reply") {
            if v["ok"].as_bool() != Some(true) {
                self.view
                    .note(&format!("command {} refused: {}", v["id"], v["error"]));
            }
        } else if topic.ends_with("/timing") {
            self.timing(&v);
        } else if topic.ends_with("/result") {
            let r = demo_exam(&v, &self.seen, self.spec);
            self.view.result(&result_line(&r, &v));
            self.seen.results.insert(r.exam_id.clone(), r);
        }
        Ok(())
    }

    /// The frame counters, and a new exam when the status names one not seen before.
    async fn status(&mut self, v: &Value) -> Result<(), DemoError> {
        self.seen.frames_received = v["frames"]["received"].as_u64().unwrap_or(0);
        self.seen.frames_dropped = v["frames"]["dropped_by_source"].as_u64().unwrap_or(0)
            + v["frames"]["dropped_in_queue"].as_u64().unwrap_or(0);
        if let (true, Some(id)) = (
            v["exam_running"].as_bool() == Some(true),
            v["exam_id"].as_str(),
        ) {
            if !self.seen.exam_ids.iter().any(|e| e == id) {
                self.seen.exam_ids.push(id.to_string());
                self.last_phase = None;
                let index = self.seen.exam_ids.len() - 1;
                exam_started(&self.client, self.spec, index, id, self.view).await?;
            }
        }
        Ok(())
    }

    /// The exam's clock on the view, and a line when its phase changes.
    fn timing(&mut self, v: &Value) {
        if let Some(clock) = clock_of(v) {
            let exam = v["exam_id"].as_str().unwrap_or_default();
            if self.last_phase != Some(clock.phase) {
                self.last_phase = Some(clock.phase);
                self.view
                    .event(&format!("exam {exam}: {}", view::clock_words(&clock)));
            }
            self.view
                .clock(&clock, self.seen.results.contains_key(exam));
        }
    }
}

/// A new exam: says so and, like the sonographer, draws the ROI on the lesion.
async fn exam_started(
    client: &AsyncClient,
    spec: &SessionSpec,
    index: usize,
    id: &str,
    view: &mut View,
) -> Result<(), DemoError> {
    let Some(exam) = spec.exam(index as u64) else {
        return Ok(());
    };
    let truth = SyntheticScanner::new(exam, Pacing::AsFastAsPossible)
        .map_err(DemoError::Setup)?
        .truth()
        .clone();
    let roi = truth.lesion_ceus;
    view.exam(&format!(
        "exam {id} ({} lesion); the operator drew the ROI: {}×{} at {},{}",
        truth.kind, roi.width, roi.height, roi.x, roi.y
    ));
    let command = serde_json::json!({
        "id": format!("roi-{index}"),
        "command": "set_roi",
        "exam_id": id,
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
        .map_err(|e| DemoError::Setup(e.to_string()))
}

/// A timing message as the view needs it.
fn clock_of(v: &Value) -> Option<Clock> {
    let f = |v: &Value| v.as_f64();
    Some(Clock {
        phase: serde_json::from_value(v["phase"].clone()).ok()?,
        elapsed_s: f(&v["elapsed_s"]),
        source: serde_json::from_value(v["clock_source"].clone()).ok(),
        estimated: v["estimated"].as_bool().unwrap_or(false),
        countdown_s: f(&v["window"]["countdown_s"]),
        window_open: v["window"]["open"].as_bool().unwrap_or(false),
        frames_kept: v["window"]["frames_kept"].as_u64().unwrap_or(0),
        bands: Bands {
            vascular_end_s: f(&v["phases"]["vascular_end_s"])?,
            pancreatic_end_s: f(&v["phases"]["pancreatic_end_s"])?,
            delayed_end_s: f(&v["phases"]["delayed_end_s"])?,
            window_start_s: f(&v["window"]["start_s"])?,
            window_end_s: f(&v["window"]["end_s"])?,
        },
    })
}

fn demo_exam(v: &Value, seen: &Followed, spec: &SessionSpec) -> DemoExam {
    let exam = v["exam_id"].as_str().unwrap_or_default().to_string();
    let lesion = seen
        .exam_ids
        .iter()
        .position(|e| *e == exam)
        .and_then(|i| spec.exam(i as u64))
        .map(|c| c.kind)
        .unwrap_or(LesionKind::Pdac);
    DemoExam {
        latency_ms: v["window_to_result_ms"].as_u64(),
        heatmap_bytes: seen.heatmaps.get(&exam).copied().unwrap_or(0),
        exam_id: exam,
        lesion,
        result_id: v["result_id"].as_str().unwrap_or_default().to_string(),
        score: v["score"].as_f64().map(|s| s as f32),
        label: v["label"].as_str().map(str::to_string),
        reason: v["reason"].as_str().map(str::to_string),
    }
}

/// "exam … (PDAC-like lesion): P(PDAC) 0.912 → PDAC; 8 frames 0.903–0.925; 1.4 s after the
/// window; warnings: …"
fn result_line(r: &DemoExam, v: &Value) -> String {
    let spread = &v["spread"];
    let mut line = format!(
        "exam {} ({} lesion): {}",
        r.exam_id,
        r.lesion,
        crate::publish::messages::score_text(r.score, r.label.as_deref(), r.reason.as_deref())
    );
    if let (Some(n), Some(lo), Some(hi)) = (
        spread["frames_scored"].as_u64(),
        spread["min"].as_f64(),
        spread["max"].as_f64(),
    ) {
        line += &format!("; {n} frames {lo:.3}–{hi:.3}");
    }
    if let Some(ms) = r.latency_ms {
        line += &format!("; {:.1} s after the window closed", ms as f64 / 1000.0);
    }
    let warnings: Vec<&str> = v["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !warnings.is_empty() {
        line += &format!("; warnings: {}", warnings.join("; "));
    }
    line
}
