//! The MQTT session (MQTT 3.1.1, rumqttc): connects with TLS and credentials when configured,
//! leaves a retained last will ("offline"), publishes the retained status, timing and command
//! replies, takes commands from `…/cmd`, and drains the durable outbox.
//!
//! The outbox is the only truth about results. A message leaves it only on the broker's
//! PUBACK for that very packet: rumqttc reports each publish it writes (`Outgoing::Publish`
//! with its packet id) in the order it was asked to publish, so the session keeps that order
//! to tie packet ids to outbox rows. After a broken connection the session starts a new client
//! and hands every row still in the outbox to it again; a result may then reach a subscriber
//! twice, with the same result id.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::{mpsc, watch};

use super::commands::{parse_command, Request};
use super::messages::{CommandReply, StatusMessage, Topics};
use super::outbox::Outbox;
use crate::config::Config;
use crate::health::Heart;

/// Rows of the outbox in flight at once on one connection.
const OUTBOX_WINDOW: usize = 16;
/// Where Debian keeps the system's CA certificates (used for `mqtts://` without `ca_file`).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt: {0}")]
    Setup(String),
}

/// What the rest of the daemon hands to the session.
#[derive(Debug)]
pub enum Outbound {
    /// The newest status; retained. Kept and re-sent on every connection.
    Status(Box<StatusMessage>),
    /// A transient message (timing): QoS 0, dropped while disconnected.
    Transient { topic: String, payload: Vec<u8> },
    /// The answer to a command: QoS 1.
    Reply(CommandReply),
    /// Rows were added to the outbox.
    OutboxChanged,
}

/// A command taken from `…/cmd`, with the channel for its reply.
pub type CommandSender = std::sync::mpsc::SyncSender<Request>;

/// Connection options of the service: the configured broker, with the will set.
pub fn options(config: &Config, topics: &Topics) -> Result<MqttOptions, MqttError> {
    let mut o = connection_options(config, &config.mqtt.client_id)?;
    let will = serde_json::to_vec(&StatusMessage::last_will(&config.device.id))
        .map_err(|e| MqttError::Setup(e.to_string()))?;
    o.set_last_will(LastWill::new(topics.status(), will, QoS::AtLeastOnce, true));
    Ok(o)
}

/// The configured broker, TLS and credentials, without a will (for `ceusd check`, which must
/// never mark a running service offline).
pub fn connection_options(config: &Config, client_id: &str) -> Result<MqttOptions, MqttError> {
    let broker = &config.mqtt.broker;
    let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    o.set_keep_alive(config.mqtt.keep_alive);
    o.set_clean_session(true);
    // Heatmaps are PNG files of a few hundred kilobytes; commands are small.
    o.set_max_packet_size(256 * 1024, 16 * 1024 * 1024);
    o.set_inflight(OUTBOX_WINDOW as u16 + 16);
    if let Some(user) = &config.mqtt.username {
        let password = match &config.mqtt.password_file {
            None => String::new(),
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| MqttError::Setup(format!("mqtt.password_file {}: {e}", p.display())))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        };
        o.set_credentials(user.clone(), password);
    }
    if broker.tls {
        let read = |field: &str, p: &std::path::Path| {
            std::fs::read(p).map_err(|e| MqttError::Setup(format!("{field} {}: {e}", p.display())))
        };
        let ca = match &config.mqtt.ca_file {
            Some(p) => read("mqtt.ca_file", p)?,
            None => read("system CA bundle", std::path::Path::new(SYSTEM_CA_BUNDLE))?,
        };
        let client_auth = match (&config.mqtt.client_cert_file, &config.mqtt.client_key_file) {
            (Some(c), Some(k)) => Some((
                read("mqtt.client_cert_file", c)?,
                read("mqtt.client_key_file", k)?,
            )),
            _ => None,
        };
        // rumqttc takes the process's rustls provider: ring, installed once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// Everything the session needs.
pub struct Session {
    pub options: MqttOptions,
    pub topics: Topics,
    pub outbox: Arc<Mutex<Outbox>>,
    pub outbound: mpsc::Receiver<Outbound>,
    pub commands: CommandSender,
    /// Becomes true when the daemon stops: flush, say offline, disconnect.
    pub stopping: watch::Receiver<bool>,
    /// Longest wait for the outbox to drain once stopping.
    pub drain_limit: Duration,
    pub reconnect: (Duration, Duration),
    pub heart: Arc<Heart>,
    /// Tells the daemon whether the broker is connected (for the status and `ceusd check`).
    pub connected: watch::Sender<bool>,
    /// False once every sender of `outbound` is gone.
    pub outbound_open: bool,
}

/// Per-connection bookkeeping of publishes.
#[derive(Default)]
struct InFlight {
    /// One entry per publish handed to rumqttc, in order: the outbox row, if any.
    requested: VecDeque<Option<i64>>,
    /// Packet id → outbox row, between the write and its PUBACK.
    by_packet: HashMap<u16, i64>,
    /// Outbox rows handed to this connection.
    rows: HashSet<i64>,
}

fn lock(outbox: &Mutex<Outbox>) -> std::sync::MutexGuard<'_, Outbox> {
    outbox.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    /// Runs until the daemon stops and the outbox is drained (or the drain limit passes).
    pub async fn run(mut self) {
        let mut status: Option<StatusMessage> = None;
        let mut backoff = self.reconnect.0;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            let (client, eventloop) = AsyncClient::new(self.options.clone(), 256);
            let outcome = self
                .connection(&client, eventloop, &mut status, &mut drain_deadline)
                .await;
            let _ = self.connected.send(false);
            match outcome {
                ConnectionEnd::Finished => return,
                ConnectionEnd::Lost { was_up } => {
                    if was_up {
                        backoff = self.reconnect.0;
                    }
                }
            }
            if *self.stopping.borrow() {
                let deadline = *drain_deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + self.drain_limit);
                if tokio::time::Instant::now() >= deadline {
                    let left = lock(&self.outbox).len().unwrap_or(0);
                    log::warn!(
                        "mqtt: stopping without a broker; {left} message(s) stay in the outbox for the next start"
                    );
                    return;
                }
            }
            log::info!("mqtt: reconnecting in {:.1} s", backoff.as_secs_f64());
            self.heart.beat();
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => self.heart.beat(),
                    m = self.outbound.recv(), if self.outbound_open => match m {
                        Some(Outbound::Status(s)) => status = Some(*s),
                        Some(Outbound::Reply(r)) => log::warn!(
                            "mqtt: not connected; reply to command {:?} dropped",
                            r.id
                        ),
                        Some(_) => {}
                        None => self.outbound_open = false,
                    },
                }
            }
            backoff = (backoff * 2).min(self.reconnect.1);
        }
    }

    async fn connection(
        &mut self,
        client: &AsyncClient,
        mut eventloop: EventLoop,
        status: &mut Option<StatusMessage>,
        drain_deadline: &mut Option<tokio::time::Instant>,
    ) -> ConnectionEnd {
        // `EventLoop::poll` must not be cancelled: dropped halfway through connecting, it
        // drops the socket after CONNECT and the broker publishes the will. So it runs in a
        // task of its own and hands its events over.
        let (event_tx, mut events) = mpsc::channel(64);
        let poller = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await.map_err(|e| e.to_string());
                let failed = event.is_err();
                if event_tx.send(event).await.is_err() || failed {
                    break;
                }
            }
        });
        let end = self
            .connected_session(client, &mut events, status, drain_deadline)
            .await;
        poller.abort();
        end
    }

    async fn connected_session(
        &mut self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, String>>,
        status: &mut Option<StatusMessage>,
        drain_deadline: &mut Option<tokio::time::Instant>,
    ) -> ConnectionEnd {
        let mut flight = InFlight::default();
        let mut up = false;
        let mut goodbye_sent = false;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                event = events.recv() => match event.unwrap_or_else(|| Err("the event loop ended".into())) {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        log::info!("mqtt: connected to {}:{} ({:?})", self.options.broker_address().0, self.options.broker_address().1, ack.code);
                        up = true;
                        let _ = self.connected.send(true);
                        if let Err(e) = client.try_subscribe(self.topics.cmd(), QoS::AtLeastOnce) {
                            log::error!("mqtt: subscribing to {}: {e}", self.topics.cmd());
                        }
                        if let Some(s) = status.as_ref() {
                            self.publish_status(client, &mut flight, s);
                        }
                        self.fill_window(client, &mut flight);
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                            log::error!("mqtt: the broker refused the subscription to {} (check its ACL): commands will not arrive", self.topics.cmd());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.topic == self.topics.cmd() {
                            self.command(client, &mut flight, &p.payload);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(row) = flight.by_packet.remove(&ack.pkid) {
                            flight.rows.remove(&row);
                            match lock(&self.outbox).acknowledge(row) {
                                Ok(_) => log::debug!("mqtt: outbox row {row} acknowledged"),
                                Err(e) => log::error!("mqtt: outbox: {e}"),
                            }
                            self.fill_window(client, &mut flight);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(Some(row)) = flight.requested.pop_front() {
                            flight.by_packet.insert(pkid, row);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                        // rumqttc reports the request before the socket closes; poll once more.
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if goodbye_sent {
                            return ConnectionEnd::Finished;
                        }
                        log::warn!("mqtt: connection to the broker: {e}");
                        return ConnectionEnd::Lost { was_up: up };
                    }
                },
                m = self.outbound.recv(), if self.outbound_open => match m {
                    Some(Outbound::Status(s)) => {
                        if up {
                            self.publish_status(client, &mut flight, &s);
                        }
                        *status = Some(*s);
                    }
                    Some(Outbound::Transient { topic, payload }) => {
                        if up && client.try_publish(topic, QoS::AtMostOnce, false, payload).is_ok() {
                            flight.requested.push_back(None);
                        }
                    }
                    Some(Outbound::Reply(r)) => {
                        if up {
                            self.publish_reply(client, &mut flight, &r);
                        } else {
                            log::warn!("mqtt: not connected; reply to command {:?} dropped", r.id);
                        }
                    }
                    Some(Outbound::OutboxChanged) => {
                        if up {
                            self.fill_window(client, &mut flight);
                        }
                    }
                    None => self.outbound_open = false,
                },
                _ = tick.tick() => {
                    self.heart.beat();
                    if *self.stopping.borrow() && up && !goodbye_sent {
                        let deadline = *drain_deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.drain_limit);
                        let left = lock(&self.outbox).len().unwrap_or(usize::MAX);
                        if left == 0 || tokio::time::Instant::now() >= deadline {
                            if left > 0 {
                                log::warn!("mqtt: {left} message(s) not acknowledged in time; they stay in the outbox for the next start");
                            }
                            if let Some(s) = status.as_mut() {
                                s.online = false;
                                s.state = "offline".into();
                                s.detail = Some("stopped".into());
                                s.time_ms = super::messages::unix_ms();
                                let s = s.clone();
                                self.publish_status(client, &mut flight, &s);
                            }
                            let _ = client.try_disconnect();
                            goodbye_sent = true;
                        }
                    }
                    if *self.stopping.borrow() && !up {
                        return ConnectionEnd::Lost { was_up: false };
                    }
                }
            }
        }
    }

    fn publish_status(&self, client: &AsyncClient, flight: &mut InFlight, s: &StatusMessage) {
        match serde_json::to_vec(s) {
            Ok(bytes) => {
                if client
                    .try_publish(self.topics.status(), QoS::AtLeastOnce, true, bytes)
                    .is_ok()
                {
                    flight.requested.push_back(None);
                }
            }
            Err(e) => log::error!("mqtt: status: {e}"),
        }
    }

    fn publish_reply(&self, client: &AsyncClient, flight: &mut InFlight, r: &CommandReply) {
        match serde_json::to_vec(r) {
            Ok(bytes) => {
                match client.try_publish(self.topics.reply(), QoS::AtLeastOnce, false, bytes) {
                    Ok(()) => flight.requested.push_back(None),
                    Err(e) => log::warn!("mqtt: reply to {:?} dropped: {e}", r.id),
                }
            }
            Err(e) => log::error!("mqtt: reply: {e}"),
        }
    }

    /// A payload on `…/cmd`: refused here when malformed, else handed to the frame pipeline.
    fn command(&self, client: &AsyncClient, flight: &mut InFlight, payload: &[u8]) {
        match parse_command(payload) {
            Err(refusal) => {
                log::warn!("command refused: {}", refusal.reason);
                let reply = CommandReply::error(refusal.id, refusal.command, refusal.reason);
                self.publish_reply(client, flight, &reply);
            }
            Ok(request) => {
                let (id, name) = (request.id.clone(), request.command.name());
                if let Err(e) = self.commands.try_send(request) {
                    let reason = match e {
                        std::sync::mpsc::TrySendError::Full(_) => {
                            "the daemon is busy with earlier commands; send it again".to_string()
                        }
                        std::sync::mpsc::TrySendError::Disconnected(_) => {
                            "the daemon is stopping".to_string()
                        }
                    };
                    let reply = CommandReply::error(Some(id), Some(name.into()), reason);
                    self.publish_reply(client, flight, &reply);
                }
            }
        }
    }

    /// Hands outbox rows to the client, oldest first, up to the window.
    fn fill_window(&self, client: &AsyncClient, flight: &mut InFlight) {
        if flight.rows.len() >= OUTBOX_WINDOW {
            return;
        }
        let pending = match lock(&self.outbox).pending_limited(flight.rows.len() + OUTBOX_WINDOW) {
            Ok(p) => p,
            Err(e) => {
                log::error!("mqtt: outbox: {e}");
                return;
            }
        };
        for m in pending {
            if flight.rows.len() >= OUTBOX_WINDOW {
                break;
            }
            if flight.rows.contains(&m.id) {
                continue;
            }
            // An empty retained payload clears a topic: QoS 1 as well, it matters as much.
            match client.try_publish(
                m.message.topic.clone(),
                QoS::AtLeastOnce,
                m.message.retain,
                m.message.payload.clone(),
            ) {
                Ok(()) => {
                    flight.requested.push_back(Some(m.id));
                    flight.rows.insert(m.id);
                    if let Err(e) = lock(&self.outbox).mark_attempt(m.id) {
                        log::error!("mqtt: outbox: {e}");
                    }
                    if m.attempts > 0 {
                        log::info!(
                            "mqtt: re-sending {} ({}), attempt {}",
                            m.message.topic,
                            m.result_id,
                            m.attempts + 1
                        );
                    }
                }
                Err(e) => {
                    log::warn!("mqtt: client queue full ({e}); outbox row {} waits", m.id);
                    break;
                }
            }
        }
    }
}

enum ConnectionEnd {
    /// Stopped: outbox drained (or given up) and disconnected.
    Finished,
    Lost {
        was_up: bool,
    },
}
