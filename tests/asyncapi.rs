//! The AsyncAPI document (`docs/asyncapi.yaml`) against what the code builds, for the cases a
//! live exam rarely shows: an unscored result, refusals of every command, the last will, and
//! every command the parser accepts. (`tests/daemon_mqtt.rs` checks the payloads of a real
//! exam as a subscriber receives them.)

mod support;

use ceusd::exam::{ExamResult, ResultTiming};
use ceusd::publish::commands::parse_command;
use ceusd::publish::messages::{CommandReply, ResultMessage, StatusMessage};
use serde_json::json;
use support::{assert_valid, schema};

#[test]
fn the_document_is_asyncapi_3_with_every_channel() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/asyncapi.yaml"))
        .unwrap();
    let doc: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let addresses: Vec<String> = doc["channels"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["address"].as_str().unwrap().to_string())
        .collect();
    let topics = ceusd::publish::messages::Topics::new("ceus", "{deviceId}");
    for t in [
        topics.status(),
        topics.cmd(),
        topics.reply(),
        topics.timing("{examId}"),
        topics.result("{examId}"),
        topics.heatmap("{examId}"),
        topics.preview(),
    ] {
        assert!(addresses.contains(&t), "{t} missing from {addresses:?}");
    }
}

#[test]
fn the_last_will_and_refusals_match() {
    let status = schema("Status");
    assert_valid(
        &status,
        "last will",
        &serde_json::to_value(StatusMessage::last_will("cart-1")).unwrap(),
    );
    let reply = schema("CommandReply");
    for payload in [
        &b"{"[..],
        br#"{"id": "a", "command": "fly"}"#,
        br#"{"id": "a", "command": "set_roi"}"#,
        br#"{"command": "status"}"#,
    ] {
        let refusal = parse_command(payload).unwrap_err();
        let r = CommandReply::error(refusal.id, refusal.command, refusal.reason);
        assert_valid(&reply, "refusal", &serde_json::to_value(r).unwrap());
    }
}

#[test]
fn an_unscored_result_matches() {
    let model = ceusd::model::demo::demo_model(&candle_core::Device::Cpu).unwrap();
    let result = ExamResult::unscored(
        "no ROI was set".into(),
        None,
        ResultTiming::default(),
        &model,
    );
    let m = ResultMessage::new("e1-r1", "e1", 1, result, None);
    assert_valid(
        &schema("Result"),
        "unscored result",
        &serde_json::to_value(m).unwrap(),
    );
}

/// A model imported with `--backbone-only` says "head untrained" in every result.
#[test]
fn a_result_from_a_head_untrained_model_says_so() {
    use ceusd::model::file::content_hash_of;
    use ceusd::model::init::{seeded_metadata, seeded_tensors};
    use ceusd::model::{ConvEngine, DlrModel, ModelIdentity, StoredType};
    let mut meta = seeded_metadata(7, 3);
    meta.head_untrained = true;
    let tensors = seeded_tensors(&meta, 7).unwrap();
    let hash = content_hash_of(&meta, &tensors, StoredType::F32).unwrap();
    let identity = ModelIdentity::of(&meta, hash, None);
    let device = candle_core::Device::Cpu;
    let model =
        DlrModel::from_tensors(meta, identity, tensors, &device, ConvEngine::Im2col).unwrap();
    let result = ExamResult::unscored(
        "no ROI was set".into(),
        None,
        ResultTiming::default(),
        &model,
    );
    let m = serde_json::to_value(ResultMessage::new("e1-r1", "e1", 1, result, None)).unwrap();
    assert_valid(&schema("Result"), "head-untrained result", &m);
    assert_eq!(m["model"]["training"], "head untrained");
    assert_eq!(m["model"]["trained"], false);
    assert_eq!(m["model"]["not_for_clinical_use"], true);
}

#[test]
fn every_accepted_command_matches_the_command_schema() {
    let command = schema("Command");
    for body in [
        json!({"id": "1", "command": "start_exam"}),
        json!({"id": "2", "command": "start_exam", "exam_id": "exam-7"}),
        json!({"id": "3", "command": "mark_injection"}),
        json!({"id": "4", "command": "mark_injection", "seconds_ago": 12.5}),
        json!({"id": "5", "command": "set_roi", "roi": {"x": 10, "y": 20, "width": 30, "height": 40}}),
        json!({"id": "6", "command": "rescore"}),
        json!({"id": "7", "command": "rescore", "roi": {"x": 10, "y": 20, "width": 30, "height": 40}}),
        json!({"id": "8", "command": "stop_exam"}),
        json!({"id": "9", "command": "status"}),
    ] {
        parse_command(body.to_string().as_bytes()).unwrap();
        assert_valid(&command, &body.to_string(), &body);
    }
    // And the schema refuses what the parser refuses.
    for body in [
        json!({"id": "x", "command": "launch"}),
        json!({"id": "x", "command": "mark_injection", "seconds_ago": 601}),
        json!({"command": "status"}),
    ] {
        assert!(parse_command(body.to_string().as_bytes()).is_err());
        assert!(!command.is_valid(&body), "the schema accepts {body}");
    }
}

#[test]
fn a_preview_matches_and_its_jpeg_is_the_frame_scaled() {
    use base64::Engine as _;
    use ceusd::capture::frame::{Frame, PixelFormat};
    use ceusd::publish::preview::{Panes, PreviewMessage, PreviewSettings};
    use ceusd::roi::Roi;

    // A 320x180 gray frame: dark left half, bright right half.
    let (w, h) = (320u32, 180u32);
    let data: Vec<u8> = (0..h)
        .flat_map(|_| (0..w).map(|x| if x < w / 2 { 30 } else { 220 }))
        .collect();
    let frame = Frame {
        sequence: 7,
        timestamp: std::time::Duration::from_millis(12_500),
        width: w,
        height: h,
        format: PixelFormat::Grey,
        stride: w as usize,
        data,
    };
    let panes = Panes {
        b_mode: Roi {
            x: 0,
            y: 0,
            width: 160,
            height: 180,
        },
        ceus: Roi {
            x: 160,
            y: 0,
            width: 160,
            height: 180,
        },
    };
    let roi = Some(Roi {
        x: 200,
        y: 40,
        width: 60,
        height: 50,
    });
    let settings = PreviewSettings {
        width: 160,
        quality: 80,
    };
    let message = PreviewMessage::new(&frame, settings, Some("exam-1"), Some(panes), roi).unwrap();
    let value = serde_json::to_value(&message).unwrap();
    assert_valid(&schema("Preview"), "preview", &value);
    assert_eq!(value["frame"], json!({"width": 320, "height": 180}));
    assert_eq!(value["image"], json!({"width": 160, "height": 90}));
    assert_eq!(value["at_s"], json!(12.5));
    assert_eq!(
        value["roi"],
        json!({"x": 200, "y": 40, "width": 60, "height": 50})
    );

    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(message.jpeg.as_bytes())
        .unwrap();
    let image = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .unwrap()
        .to_luma8();
    assert_eq!((image.width(), image.height()), (160, 90));
    let (left, right) = (image.get_pixel(20, 45)[0], image.get_pixel(140, 45)[0]);
    assert!(
        left.abs_diff(30) <= 6 && right.abs_diff(220) <= 6,
        "{left} {right}"
    );

    // Between exams there are no panes and no ROI; a frame narrower than the preview keeps
    // its size.
    let wide = PreviewSettings {
        width: 640,
        quality: 80,
    };
    let idle =
        serde_json::to_value(PreviewMessage::new(&frame, wide, None, None, None).unwrap()).unwrap();
    assert_valid(&schema("Preview"), "idle preview", &idle);
    assert_eq!(idle["image"], json!({"width": 320, "height": 180}));
    assert_eq!(idle["exam_id"], json!(null));
}
