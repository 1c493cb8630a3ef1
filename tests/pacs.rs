//! Results into the hospital's archive: the daemon sends each result's Structured Report and
//! key image to a real PACS (Orthanc, from Debian) through the durable outbox, and to dcmtk's
//! `storescp` where a PACS that refuses the objects' SOP classes is needed. The PACS is down
//! before the result and comes up after it; the daemon is SIGKILLed between storing a result
//! and sending it; the PACS refuses; the PACS stays away until the outbox is full.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::certificates::make_certificates;
use support::dicom_tools::{sr_number, tool};
use support::*;

const LONG: Duration = Duration::from_secs(180);
/// Each synthetic exam here: 60 s of recording at 8 frames a second, replayed 4x.
const SOURCE: &str = "synthetic:pdac?fps=8&duration=60";

/// Orthanc on loopback ports of its own, its database in a scratch directory.
struct Orthanc {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    dicom_port: u16,
    http_port: u16,
}

impl Orthanc {
    /// Writes the configuration; `start` runs it (the PACS can be "down" at first).
    fn configure(dir: &Path) -> Self {
        Self::configure_with(dir, serde_json::json!({}))
    }

    /// The configuration with `extra` settings added.
    fn configure_with(dir: &Path, extra: serde_json::Value) -> Self {
        let storage = dir.join("orthanc-db");
        std::fs::create_dir_all(&storage).unwrap();
        let (dicom_port, http_port) = (free_port(), free_port());
        let config = dir.join("orthanc.json");
        let json = serde_json::json!({
            "Name": "ceusd-test-pacs",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "DicomAet": "ORTHANC",
            "DicomPort": dicom_port,
            "DicomCheckCalledAet": true,
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "Plugins": [],
        });
        let mut json = json;
        for (key, value) in extra.as_object().expect("an object") {
            json[key] = value.clone();
        }
        std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
        Self {
            child: None,
            config,
            log: dir.join("orthanc.log"),
            dicom_port,
            http_port,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("Orthanc")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("Orthanc is installed (apt install orthanc)");
        self.child = Some(child);
        wait_for_port(self.http_port);
        wait_for_port(self.dicom_port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// Its address in a `[pacs]` section.
    fn pacs_fields(&self) -> String {
        format!("port = {}\ncalled_ae_title = \"ORTHANC\"", self.dicom_port)
    }

    /// A GET on Orthanc's REST API.
    fn get(&self, path: &str) -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}{path}", self.http_port)])
            .output()
            .expect("curl is installed");
        assert!(out.status.success(), "GET {path} failed");
        out.stdout
    }

    fn json(&self, path: &str) -> serde_json::Value {
        serde_json::from_slice(&self.get(path)).unwrap()
    }

    /// The instances once there are `count` (the status may say nothing waits a moment
    /// before the last answer is recorded); more would fail the caller's checks.
    fn wait_for_instances(&self, count: usize) -> Vec<(String, serde_json::Value)> {
        let deadline = Instant::now() + LONG;
        loop {
            let instances = self.instances();
            if instances.len() >= count || Instant::now() > deadline {
                return instances;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every instance the PACS holds: its Orthanc id and simplified tags.
    fn instances(&self) -> Vec<(String, serde_json::Value)> {
        let ids = self.json("/instances");
        ids.as_array()
            .unwrap()
            .iter()
            .map(|id| {
                let id = id.as_str().unwrap().to_string();
                let tags = self.json(&format!("/instances/{id}/simplified-tags"));
                (id, tags)
            })
            .collect()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The daemon's configuration `name`: the synthetic exam, starting itself when `auto_start`
/// (else the daemon only sends what waits, or exams start by command), and a `[pacs]` section
/// on loopback with short timeouts and retries, followed by `pacs` (its port, AE title,
/// TLS files, a `[pacs.worklist]` table).
fn pacs_config(
    dir: &Path,
    name: &str,
    device: &str,
    broker: &Mosquitto,
    auto_start: bool,
    pacs: &str,
) -> PathBuf {
    let config = dir.join(name);
    write_config(
        &config,
        device,
        SOURCE,
        &broker.url(),
        &dir.join("state"),
        &format!(
            "[exam]\nauto_start = {auto_start}\n[pacs]\nhost = \"127.0.0.1\"\ntimeout_s = 5\n\
             retry_min_s = 0.2\nretry_max_s = 1.0\n{pacs}\n"
        ),
    );
    config
}

/// Starts the daemon, draws the lesion's ROI once the exam runs, and returns the result.
fn exam_result(daemon: &Daemon, broker: &Mosquitto, device: &str) -> serde_json::Value {
    let start = Instant::now();
    daemon.wait_for_log(": started", start + LONG, "no exam");
    command(
        broker.port,
        device,
        serde_json::json!({"id": "roi", "command": "set_roi", "roi": lesion_roi(SOURCE, 0)}),
    );
    wait_retained(broker.port, &format!("ceus/{device}/exam/+/result"), LONG).json()
}

/// Waits for a status whose `pacs` part satisfies `pred`; checks the status against the
/// AsyncAPI document and returns its `pacs` part.
fn wait_pacs_status(
    status: &Subscriber,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    // Only statuses from now on: earlier ones may satisfy `pred` too.
    let since = Instant::now();
    let message = status
        .wait_for(what, LONG, |m| {
            m.at >= since
                && serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .is_ok_and(|v| v["online"] == true && pred(&v["pacs"]))
        })
        .json();
    assert_valid(&schema("Status"), what, &message);
    message["pacs"].clone()
}

fn ceusd_check(config: &Path, only: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ceusd"))
        .args(["check", "--timeout", "3", "--only", only, "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// The SOP Instance UIDs ceusd gives result `result_id`'s objects (deterministic).
fn expected_uids(device: &str, result_id: &str) -> (String, String) {
    let root = ceusd::pacs::UidRoot::default();
    (
        root.uid_for(&["report", device, result_id]),
        root.uid_for(&["key-image", device, result_id]),
    )
}

/// Checks that the PACS holds exactly the report and key image of `result`, once each, in
/// one study, and that the report says what the result said.
fn assert_pacs_holds_once(orthanc: &Orthanc, device: &str, result: &serde_json::Value, dir: &Path) {
    let instances = orthanc.wait_for_instances(2);
    assert_eq!(
        instances.len(),
        2,
        "one report and one key image: {instances:?}; Orthanc's log: {}",
        std::fs::read_to_string(&orthanc.log).unwrap_or_default()
    );
    let result_id = result["result_id"].as_str().unwrap();
    let (report_uid, image_uid) = expected_uids(device, result_id);
    let by_uid = |uid: &str| {
        instances
            .iter()
            .find(|(_, t)| t["SOPInstanceUID"] == uid)
            .unwrap_or_else(|| panic!("{uid} not in the PACS: {instances:?}"))
    };
    let (report_id, report) = by_uid(&report_uid);
    let (_, image) = by_uid(&image_uid);
    assert_eq!(report["Modality"], "SR");
    assert_eq!(image["Modality"], "US");
    assert_eq!(report["StudyInstanceUID"], image["StudyInstanceUID"]);
    assert_eq!(orthanc.json("/studies").as_array().unwrap().len(), 1);

    // The report as the PACS keeps it, read back by dcmtk.
    let file = dir.join("from-pacs-report.dcm");
    std::fs::write(&file, orthanc.get(&format!("/instances/{report_id}/file"))).unwrap();
    let sr = tool("dsrdump", &file);
    let score = result["score"].as_f64().unwrap();
    let reported = sr_number(&sr, "Probability of cancer");
    assert!(
        (reported - score).abs() < 1e-4,
        "{reported} vs {score}: {sr}"
    );
    let hash = result["model"]["hash"].as_str().unwrap();
    assert!(sr.contains(&hash[..20]), "the model's hash: {sr}");
    assert!(sr.contains("ceusd made a new study"), "{sr}");
}

/// The PACS is down when the result is made: it waits in the outbox (the status says how
/// many objects wait and why), `ceusd check` fails its C-ECHO; when the PACS comes up the
/// objects arrive, once, and a restart of the daemon sends nothing again.
#[test]
fn results_wait_for_a_pacs_that_is_down_and_arrive_once_when_it_returns() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let mut orthanc = Orthanc::configure(dir.path());
    let pacs = orthanc.pacs_fields();
    let config = pacs_config(dir.path(), "ceusd.toml", "pd", &broker, true, &pacs);
    let status = Subscriber::start(broker.port, "ceus/pd/status", None);
    let everything = Subscriber::start(broker.port, "ceus/#", None);
    let daemon = Daemon::start(&config, &dir.path().join("daemon.log"), &[]);
    let result = exam_result(&daemon, &broker, "pd");
    assert!(result["score"].is_number(), "{result}");

    let waiting = wait_pacs_status(&status, "two objects waiting for the PACS", |p| {
        p["waiting"] == 2 && p["last_error"].is_string()
    });
    assert_eq!(waiting["refused"], 0);
    assert_eq!(waiting["not_kept"], 0);
    let (passed, text) = ceusd_check(&config, "pacs");
    assert!(!passed, "C-ECHO to a PACS that is down: {text}");
    assert!(text.contains("FAIL pacs"), "{text}");

    orthanc.start();
    let sent = wait_pacs_status(&status, "nothing waiting for the PACS", |p| {
        p["waiting"] == 0
    });
    assert_eq!(sent["refused"], 0, "{}", daemon.log_text());
    assert_pacs_holds_once(&orthanc, "pd", &result, dir.path());
    let (passed, text) = ceusd_check(&config, "pacs");
    assert!(passed, "{text}");
    assert!(text.contains("C-ECHO to ORTHANC@127.0.0.1"), "{text}");
    let log = daemon.log_text();
    assert!(
        log.contains("stored in the PACS ORTHANC@127.0.0.1"),
        "{log}"
    );

    // What went on MQTT named neither the objects nor the study.
    let study = orthanc.instances()[0].1["StudyInstanceUID"]
        .as_str()
        .unwrap()
        .to_string();
    let (report_uid, _) = expected_uids("pd", result["result_id"].as_str().unwrap());
    for m in everything.snapshot() {
        let text = String::from_utf8_lossy(&m.payload);
        assert!(
            !text.contains(&study) && !text.contains(&report_uid),
            "{}: {text}",
            m.topic
        );
    }

    // A restart sends nothing again; the PACS, restarted too, still holds one copy.
    assert!(daemon.terminate().success());
    orthanc.stop();
    orthanc.start();
    let idle = pacs_config(dir.path(), "idle.toml", "pd", &broker, false, &pacs);
    let daemon = Daemon::start(&idle, &dir.path().join("daemon2.log"), &[]);
    daemon.wait_for_log("ready:", Instant::now() + LONG, "no restart");
    std::thread::sleep(Duration::from_secs(2));
    assert!(daemon.terminate().success());
    assert_pacs_holds_once(&orthanc, "pd", &result, dir.path());
}

/// SIGKILL after the result is stored and before the PACS could take it: after the restart
/// the objects arrive, once.
#[test]
fn objects_stored_before_a_crash_reach_the_pacs_after_the_restart() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let mut orthanc = Orthanc::configure(dir.path());
    let pacs = orthanc.pacs_fields();
    let config = pacs_config(dir.path(), "ceusd.toml", "pk", &broker, true, &pacs);
    let status = Subscriber::start(broker.port, "ceus/pk/status", None);
    let daemon = Daemon::start(&config, &dir.path().join("daemon.log"), &[]);
    let result = exam_result(&daemon, &broker, "pk");
    wait_pacs_status(&status, "two objects waiting for the PACS", |p| {
        p["waiting"] == 2
    });
    daemon.kill();

    orthanc.start();
    let idle = pacs_config(dir.path(), "idle.toml", "pk", &broker, false, &pacs);
    let daemon = Daemon::start(&idle, &dir.path().join("daemon2.log"), &[]);
    wait_pacs_status(&status, "nothing waiting after the restart", |p| {
        p["waiting"] == 0
    });
    let log = daemon.log_text();
    assert!(
        log.contains("2 object(s) for the PACS from before the restart will be sent"),
        "{log}"
    );
    assert!(daemon.terminate().success());
    assert_pacs_holds_once(&orthanc, "pk", &result, dir.path());
}

/// dcmtk's storescp accepting CT images only: the report and the key image are refused,
/// reported in the status, the log and `ceusd check`, and not sent again.
#[test]
fn objects_the_pacs_refuses_are_reported_and_not_retried() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let profile = dir.path().join("ct-only.cfg");
    std::fs::write(
        &profile,
        "[[TransferSyntaxes]]\n[Uncompressed]\nTransferSyntax1 = LocalEndianExplicit\n\
         TransferSyntax2 = LittleEndianImplicit\n\n[[PresentationContexts]]\n[CT]\n\
         PresentationContext1 = CTImageStorage\\Uncompressed\n\n[[Profiles]]\n[CTOnly]\n\
         PresentationContexts = CT\n",
    )
    .unwrap();
    let port = free_port();
    let received = dir.path().join("received");
    std::fs::create_dir_all(&received).unwrap();
    let scp_log = dir.path().join("storescp.log");
    let mut scp = Command::new("storescp")
        .args(["-v", "-xf"])
        .arg(&profile)
        .args(["CTOnly", "-od"])
        .arg(&received)
        .arg(port.to_string())
        .stdout(std::fs::File::create(&scp_log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("storescp is installed (apt install dcmtk)");
    wait_for_port(port);
    let config = pacs_config(
        dir.path(),
        "ceusd.toml",
        "pr",
        &broker,
        true,
        &format!("port = {port}\ncalled_ae_title = \"STORESCP\""),
    );
    let status = Subscriber::start(broker.port, "ceus/pr/status", None);
    let daemon = Daemon::start(&config, &dir.path().join("daemon.log"), &[]);
    exam_result(&daemon, &broker, "pr");
    let refused = wait_pacs_status(&status, "two objects refused", |p| p["refused"] == 2);
    assert_eq!(refused["waiting"], 0);
    let associations = || {
        std::fs::read_to_string(&scp_log)
            .unwrap()
            .matches("Association Received")
            .count()
    };
    let seen = associations();
    // Retries would come every 0.2 to 1 s.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(associations(), seen, "a refused object was sent again");
    assert!(seen <= 2, "one association per SOP class: {seen}");
    let log = daemon.log_text();
    assert!(
        log.contains("REFUSED by the PACS STORESCP@127.0.0.1")
            && log.contains(
                "accepts no presentation context for SOP class 1.2.840.10008.5.1.4.1.1.88.33"
            ),
        "{log}"
    );
    assert!(daemon.terminate().success());
    let (passed, text) = ceusd_check(&config, "state");
    assert!(!passed, "{text}");
    assert!(text.contains("0 waiting, 2 refused, 0 not kept"), "{text}");
    assert_eq!(std::fs::read_dir(&received).unwrap().count(), 0);
    let _ = scp.kill();
    let _ = scp.wait();
}

/// A PACS away for long: what waits for it is bounded (`pacs.capacity`); a result past the
/// bound is still stored and shown at the bedside, and its objects are counted as not kept.
#[test]
fn a_full_pacs_outbox_still_stores_and_publishes_results() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let pacs = format!(
        "port = {}\ncalled_ae_title = \"AWAY\"\ncapacity = 2",
        free_port()
    );
    let config = pacs_config(dir.path(), "ceusd.toml", "pf", &broker, true, &pacs);
    let status = Subscriber::start(broker.port, "ceus/pf/status", None);
    let results = Subscriber::start(broker.port, "ceus/pf/exam/+/result", None);
    let daemon = Daemon::start(&config, &dir.path().join("daemon.log"), &[]);
    let first = exam_result(&daemon, &broker, "pf");
    wait_pacs_status(&status, "the first result's objects waiting", |p| {
        p["waiting"] == 2
    });
    command(
        broker.port,
        "pf",
        serde_json::json!({"id": "again", "command": "rescore"}),
    );
    let second = results.wait_for("the rescored result", LONG, |m| {
        serde_json::from_slice::<serde_json::Value>(&m.payload).is_ok_and(|v| v["revision"] == 2)
    });
    assert_eq!(second.json()["exam_id"], first["exam_id"]);
    let full = wait_pacs_status(&status, "the second result's objects not kept", |p| {
        p["not_kept"] == 2
    });
    assert_eq!(full["waiting"], 2);
    assert_eq!(full["capacity"], 2);
    let detail = status.snapshot().last().unwrap().json()["detail"].clone();
    assert!(
        detail
            .as_str()
            .is_some_and(|d| d.contains("2 DICOM object(s) not kept for the PACS")),
        "{detail}"
    );
    let log = daemon.log_text();
    assert!(
        log.contains("its 2 DICOM object(s) are NOT kept for the PACS"),
        "{log}"
    );
    assert!(daemon.terminate().success());
}

/// dcmtk's worklist SCP (`wlmscpfs`) serving one entry scheduled for this cart today: the
/// patient, the study and the requested procedure of a CEUS exam of the pancreas.
struct Worklist {
    child: Child,
    port: u16,
}

const ACCESSION: &str = "ACC-7731";
const PATIENT_ID: &str = "PAT-4711";
const PATIENT_NAME: &str = "Doe^Jane";
const BIRTH_DATE: &str = "19610203";
const WORKLIST_STUDY: &str = "1.2.826.0.1.3680043.10.999.7731";

impl Worklist {
    fn start(dir: &Path) -> Self {
        let db = dir.join("wlistdb");
        let ae_dir = db.join("WORKLIST");
        std::fs::create_dir_all(&ae_dir).unwrap();
        std::fs::write(ae_dir.join("lockfile"), b"").unwrap();
        let today = ceusd::pacs::DicomMoment::of(std::time::SystemTime::now()).date;
        // wlmscpfs ignores an entry without every attribute a worklist entry must have, so
        // the empty ones are there too.
        let dump = format!(
            "(0008,0005) CS [ISO_IR 100]\n(0008,0050) SH [{ACCESSION}]\n\
             (0010,0010) PN [{PATIENT_NAME}]\n(0010,0020) LO [{PATIENT_ID}]\n\
             (0010,0030) DA [{BIRTH_DATE}]\n(0010,0040) CS [F]\n(0010,2000) LO\n\
             (0010,2110) LO\n(0020,000d) UI [{WORKLIST_STUDY}]\n(0032,1032) PN\n\
             (0032,1060) LO [CEUS pancreas]\n\
             (0040,0100) SQ (Sequence with undefined length)\n(fffe,e000) na (Item)\n\
             (0008,0060) CS [US]\n(0032,1070) LO\n(0040,0001) AE [CEUSD]\n\
             (0040,0002) DA [{today}]\n(0040,0003) TM [090000]\n(0040,0006) PN\n\
             (0040,0007) LO [CEUS of the pancreas]\n(0040,0009) SH [SPS-1]\n\
             (0040,0010) SH\n(0040,0011) SH\n(0040,0012) LO\n(0040,0400) LT\n\
             (fffe,e00d) na (ItemDelimitationItem)\n(fffe,e0dd) na (SequenceDelimitationItem)\n\
             (0040,1001) SH [RP-1]\n(0040,1003) SH\n"
        );
        let dump_file = dir.join("entry.dump");
        std::fs::write(&dump_file, dump).unwrap();
        let made = Command::new("dump2dcm")
            .arg(&dump_file)
            .arg(ae_dir.join("entry.wl"))
            .output()
            .expect("dump2dcm is installed (apt install dcmtk)");
        assert!(
            made.status.success(),
            "dump2dcm: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let port = free_port();
        let child = Command::new("wlmscpfs")
            .args(["-dfp"])
            .arg(&db)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wlmscpfs is installed (apt install dcmtk)");
        wait_for_port(port);
        Self { child, port }
    }
}

impl Drop for Worklist {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An exam started with an accession number: its result reaches the PACS in the worklist's
/// study with the worklist's patient, and nothing on MQTT names the patient.
fn exam_for_accession(
    dir: &Path,
    device: &str,
    worklist_port: u16,
    orthanc: &Orthanc,
    broker: &Mosquitto,
    everything: &Subscriber,
) -> serde_json::Value {
    let config = pacs_config(
        dir,
        "ceusd.toml",
        device,
        broker,
        false,
        &format!(
            "{}\n[pacs.worklist]\nhost = \"127.0.0.1\"\nport = {worklist_port}\n\
             called_ae_title = \"WORKLIST\"",
            orthanc.pacs_fields()
        ),
    );
    let daemon = Daemon::start(&config, &dir.join("daemon.log"), &[]);
    daemon.wait_for_log("ready:", Instant::now() + LONG, "no start");
    // This site does not let commands name the patient.
    command(
        broker.port,
        device,
        serde_json::json!({"id": "who", "command": "start_exam", "patient_id": PATIENT_ID}),
    );
    let refused = everything
        .wait_for("the refusal of a patient id", LONG, |m| {
            m.topic.ends_with("/cmd/reply")
                && serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .is_ok_and(|v| v["id"] == "who")
        })
        .json();
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("patient_id is not accepted")),
        "{refused}"
    );
    command(
        broker.port,
        device,
        serde_json::json!({"id": "go", "command": "start_exam", "accession_number": ACCESSION}),
    );
    everything.wait_for("the exam's start", LONG, |m| {
        m.topic.ends_with("/cmd/reply")
            && serde_json::from_slice::<serde_json::Value>(&m.payload)
                .is_ok_and(|v| v["id"] == "go" && v["ok"] == true)
    });
    command(
        broker.port,
        device,
        serde_json::json!({"id": "roi", "command": "set_roi", "roi": lesion_roi(SOURCE, 0)}),
    );
    let result = wait_retained(broker.port, &format!("ceus/{device}/exam/+/result"), LONG).json();
    let status = Subscriber::start(broker.port, &format!("ceus/{device}/status"), None);
    wait_pacs_status(&status, "the objects in the PACS", |p| p["waiting"] == 0);
    assert!(daemon.terminate().success());
    result
}

/// Every payload on `ceus/#` but the test's own commands: none names the patient or the
/// order.
fn assert_no_patient_data_on_mqtt(everything: &Subscriber, device: &str) {
    let messages = everything.snapshot();
    assert!(messages.iter().any(|m| m.topic.ends_with("/result")));
    for m in messages
        .iter()
        .filter(|m| m.topic != format!("ceus/{device}/cmd"))
    {
        let text = String::from_utf8_lossy(&m.payload);
        for secret in [ACCESSION, PATIENT_ID, "Doe", BIRTH_DATE, WORKLIST_STUDY] {
            assert!(!text.contains(secret), "{secret} on {}: {text}", m.topic);
        }
    }
}

#[test]
fn the_worklist_entry_of_the_accession_number_names_the_study_and_never_reaches_mqtt() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let mut orthanc = Orthanc::configure(dir.path());
    orthanc.start();
    let worklist = Worklist::start(dir.path());
    let everything = Subscriber::start(broker.port, "ceus/#", None);
    let result = exam_for_accession(
        dir.path(),
        "pw",
        worklist.port,
        &orthanc,
        &broker,
        &everything,
    );
    assert!(
        result["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| !w.as_str().unwrap().contains("worklist")),
        "{}",
        result["warnings"]
    );
    let instances = orthanc.wait_for_instances(2);
    assert_eq!(instances.len(), 2, "{instances:?}");
    for (_, tags) in &instances {
        assert_eq!(tags["StudyInstanceUID"], WORKLIST_STUDY);
        assert_eq!(tags["PatientID"], PATIENT_ID);
        assert_eq!(tags["PatientName"], PATIENT_NAME);
        assert_eq!(tags["PatientBirthDate"], BIRTH_DATE);
        assert_eq!(tags["PatientSex"], "F");
        assert_eq!(tags["AccessionNumber"], ACCESSION);
    }
    assert_no_patient_data_on_mqtt(&everything, "pw");

    let config = dir.path().join("ceusd.toml");
    let (passed, text) = ceusd_check(&config, "worklist");
    assert!(passed, "{text}");
    assert!(text.contains("C-ECHO to WORKLIST@127.0.0.1"), "{text}");
}

/// A worklist that is down: the exam goes on, the result says why it has no context, and the
/// objects reach the PACS in a study ceusd made.
#[test]
fn without_the_worklist_the_exam_goes_on_and_the_result_says_so() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let mut orthanc = Orthanc::configure(dir.path());
    orthanc.start();
    let everything = Subscriber::start(broker.port, "ceus/#", None);
    let result = exam_for_accession(
        dir.path(),
        "pn",
        free_port(),
        &orthanc,
        &broker,
        &everything,
    );
    assert!(result["score"].is_number(), "{result}");
    let warnings = result["warnings"].to_string();
    assert!(
        warnings.contains("worklist WORKLIST@127.0.0.1")
            && warnings.contains("unreachable: the exam went on without its context"),
        "{warnings}"
    );
    let instances = orthanc.wait_for_instances(2);
    assert_eq!(instances.len(), 2, "{instances:?}");
    for (_, tags) in &instances {
        assert_ne!(tags["StudyInstanceUID"], WORKLIST_STUDY);
        // What the operator gave is kept: the accession number, for the PACS to reconcile.
        assert_eq!(tags["AccessionNumber"], ACCESSION);
        assert_eq!(tags["PatientID"], "");
    }
    assert_no_patient_data_on_mqtt(&everything, "pn");
}

/// DICOM TLS: Orthanc accepts associations over TLS only, from certificates the test CA
/// signed. With the CA and the cart's certificate the objects arrive; without the cart's
/// certificate `ceusd check` says the PACS cannot be reached.
#[test]
fn objects_reach_a_pacs_over_dicom_tls() {
    let _heavy = heavy();
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let broker = Mosquitto::start(&dir.path().join("broker"), false);
    let mut orthanc = Orthanc::configure_with(
        dir.path(),
        serde_json::json!({
            "DicomTlsEnabled": true,
            "DicomTlsCertificate": file("server.pem"),
            "DicomTlsPrivateKey": file("server.key"),
            "DicomTlsTrustedCertificates": file("ca.pem"),
            "DicomTlsRemoteCertificateRequired": true,
        }),
    );
    orthanc.start();
    let tls = format!(
        "{}\ntls_ca_file = \"{}\"",
        orthanc.pacs_fields(),
        file("ca.pem")
    );
    let without_certificate = pacs_config(dir.path(), "no-cert.toml", "pt", &broker, true, &tls);
    let (passed, text) = ceusd_check(&without_certificate, "pacs");
    assert!(!passed, "{text}");
    let config = pacs_config(
        dir.path(),
        "ceusd.toml",
        "pt",
        &broker,
        true,
        &format!(
            "{tls}\ntls_client_cert_file = \"{}\"\ntls_client_key_file = \"{}\"",
            file("client.pem"),
            file("client.key")
        ),
    );
    let (passed, text) = ceusd_check(&config, "pacs");
    assert!(passed, "{text}");

    let status = Subscriber::start(broker.port, "ceus/pt/status", None);
    let daemon = Daemon::start(&config, &dir.path().join("daemon.log"), &[]);
    let result = exam_result(&daemon, &broker, "pt");
    wait_pacs_status(&status, "the objects in the PACS", |p| {
        p["waiting"] == 0 && p["refused"] == 0
    });
    assert!(daemon.terminate().success());
    assert_pacs_holds_once(&orthanc, "pt", &result, dir.path());
}
