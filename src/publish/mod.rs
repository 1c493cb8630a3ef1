//! Publishing to the bedside over MQTT: the topics and payloads of the contract
//! (`messages`), commands from the display (`commands`), the MQTT session (`mqtt`) and the
//! durable outbox that stands between a computed result and the broker (`outbox`), and the
//! low-rate preview of the scanner's screen a display draws the ROI on (`preview`).

pub mod commands;
pub mod messages;
pub mod mqtt;
pub mod outbox;
pub mod preview;
