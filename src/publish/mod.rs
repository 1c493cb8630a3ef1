//! Publishing results to the bedside: the durable outbox that stands between a computed result
//! and the MQTT broker. (The MQTT client, topics and message types build on it.)

pub mod outbox;
