//! The command parser under random input (proptest): it never panics, refuses what is
//! malformed with a reason, and reads back every well-formed command exactly.

use ceusd::publish::commands::{parse_command, Command, MAX_BACKDATE_S};
use ceusd::roi::Roi;
use proptest::prelude::*;
use serde_json::json;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(refusal) = parse_command(&bytes) {
            prop_assert!(!refusal.reason.is_empty());
        }
    }

    #[test]
    fn arbitrary_json_objects_are_answered(
        id in proptest::option::of("[a-z0-9-]{0,140}"),
        name in proptest::option::of(prop_oneof![
            Just("start_exam".to_string()), Just("mark_injection".to_string()),
            Just("set_roi".to_string()), Just("rescore".to_string()),
            Just("stop_exam".to_string()), Just("status".to_string()), "[a-z_]{0,12}"
        ]),
        seconds in proptest::option::of(any::<f64>()),
        roi in proptest::option::of((any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>())),
        exam in proptest::option::of("[ -~]{0,70}"),
    ) {
        let mut v = serde_json::Map::new();
        if let Some(id) = &id { v.insert("id".into(), json!(id)); }
        if let Some(n) = &name { v.insert("command".into(), json!(n)); }
        if let Some(s) = seconds { v.insert("seconds_ago".into(), json!(s)); }
        if let Some((x, y, w, h)) = roi { v.insert("roi".into(), json!({"x": x, "y": y, "width": w, "height": h})); }
        if let Some(e) = &exam { v.insert("exam_id".into(), json!(e)); }
        let bytes = serde_json::to_vec(&serde_json::Value::Object(v)).unwrap();
        match parse_command(&bytes) {
            Ok(request) => {
                // Accepted only with a proper id and with the fields its command takes.
                let id = id.unwrap();
                prop_assert!(!id.is_empty() && id.len() <= 128);
                prop_assert_eq!(&request.id, &id);
                match &request.command {
                    Command::MarkInjection { seconds_ago } => {
                        prop_assert!((0.0..=MAX_BACKDATE_S).contains(seconds_ago));
                        prop_assert!(roi.is_none());
                    }
                    Command::SetRoi { roi: r } => prop_assert!(r.width >= 8 && r.height >= 8),
                    Command::StartExam { exam_id, .. } => {
                        prop_assert!(seconds.is_none() && roi.is_none());
                        if let Some(e) = exam_id { prop_assert!(ceusd::config::is_topic_word(e)); }
                    }
                    _ => {}
                }
                // An exam named by a command on the running exam is a well-formed id, and
                // start_exam and status carry none there.
                match (&request.command, &request.exam_id) {
                    (Command::StartExam { .. } | Command::Status, Some(_)) => {
                        prop_assert!(false, "{:?} with exam {:?}", request.command, request.exam_id)
                    }
                    (_, Some(e)) => {
                        prop_assert!(ceusd::config::is_topic_word(e));
                        prop_assert_eq!(Some(e), exam.as_ref());
                    }
                    _ => {}
                }
            }
            Err(refusal) => {
                prop_assert!(!refusal.reason.is_empty());
                // The correlation id comes back whenever it was a usable string.
                if let Some(id) = id.filter(|i| !i.is_empty() && i.len() <= 128) {
                    prop_assert_eq!(refusal.id, Some(id));
                }
            }
        }
    }

    #[test]
    fn well_formed_commands_read_back_exactly(
        seconds in 0.0..=MAX_BACKDATE_S,
        x in 0u32..4000, y in 0u32..2000, w in 8u32..2000, h in 8u32..2000,
    ) {
        let r = parse_command(json!({"id": "a", "command": "mark_injection", "seconds_ago": seconds}).to_string().as_bytes()).unwrap();
        prop_assert_eq!(r.command, Command::MarkInjection { seconds_ago: seconds });
        let r = parse_command(json!({"id": "b", "command": "set_roi", "roi": {"x": x, "y": y, "width": w, "height": h}}).to_string().as_bytes()).unwrap();
        prop_assert_eq!(r.command, Command::SetRoi { roi: Roi::new(x, y, w, h) });
    }
}

#[test]
fn refusals_say_why() {
    let cases: [(&[u8], &str); 8] = [
        (b"", "not JSON"),
        (b"[1,2]", "expected"),
        (br#"{"id": 5, "command": "status"}"#, "\"id\" must be a string"),
        (br#"{"id": "x", "command": "mark_injection", "seconds_ago": 601}"#, "expected 0 to 600"),
        (br#"{"id": "x", "command": "set_roi"}"#, "set_roi needs \"roi\""),
        (br#"{"id": "x", "command": "set_roi", "roi": {"x": -1, "y": 0, "width": 10, "height": 10}}"#, "whole pixels"),
        (br#"{"id": "x", "command": "stop_exam", "exam_id": "a b"}"#, "exam_id \"a b\""),
        (br#"{"id": "x", "command": "status", "exam_id": "e1"}"#, "does not belong to status"),
    ];
    for (payload, why) in cases {
        let e = parse_command(payload).unwrap_err();
        assert!(
            e.reason.contains(why),
            "{:?}: '{}' lacks '{why}'",
            String::from_utf8_lossy(payload),
            e.reason
        );
    }
    let big = vec![b' '; 20_000];
    assert!(parse_command(&big).unwrap_err().reason.contains("at most"));
}

/// start_exam's order (accession number, patient id) is read as given, refused on other
/// commands, and a refusal never repeats the value: replies go on MQTT.
#[test]
fn start_exam_carries_the_order_and_never_echoes_it() {
    let r = parse_command(
        json!({"id": "a", "command": "start_exam", "accession_number": " ACC-1 ", "patient_id": "P-9"})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let Command::StartExam { exam_id, order } = r.command else {
        panic!("{:?}", r.command)
    };
    assert_eq!(exam_id, None);
    assert_eq!(order.accession_number.as_deref(), Some("ACC-1"));
    assert_eq!(order.patient_id.as_deref(), Some("P-9"));

    let secret = "ACCESSION-OF-17CH";
    for payload in [
        json!({"id": "b", "command": "start_exam", "accession_number": secret}),
        json!({"id": "b", "command": "start_exam", "patient_id": "A\\B-secret"}),
        json!({"id": "b", "command": "start_exam", "accession_number": 42}),
    ] {
        let e = parse_command(payload.to_string().as_bytes()).unwrap_err();
        assert!(e.reason.contains("value not repeated"), "{}", e.reason);
        assert!(
            !e.reason.contains(secret) && !e.reason.contains("secret") && !e.reason.contains("42")
        );
    }
    let e = parse_command(
        json!({"id": "c", "command": "stop_exam", "accession_number": "ACC-1"})
            .to_string()
            .as_bytes(),
    )
    .unwrap_err();
    assert!(
        e.reason.contains("does not belong to stop_exam"),
        "{}",
        e.reason
    );
}
