//! Talking to the PACS: C-ECHO (is it there?) and C-STORE (keep this object), over a DICOM
//! association opened with dicom-ul. dicom-ul negotiates the association and moves PDUs; the
//! DIMSE messages on top (a command set, then the data set) are written here, as PS3.7
//! describes them.
//!
//! Each SOP class gets an association of its own, so that a PACS refusing one class (no
//! presentation context accepted for it) refuses those objects alone.

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::{entries, TransferSyntax};
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu};

use super::association::{accepted_context, open, Link};
pub use super::association::{check_ae_title, NetworkError, PacsPeer, TlsFiles};
use super::dataset::put;
use super::DicomObject;

/// What the PACS said about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Status 0000: kept.
    Stored,
    /// A warning status (0001, Bxxx): kept, with a remark (coerced or discarded elements).
    StoredWithWarning { status: u16, comment: String },
    /// Refused for good (SOP class not accepted, data set not understood): sending it again
    /// would be refused again.
    Refused { reason: String },
    /// A failure the PACS may get over (out of resources, processing failure): try later.
    TryLater { reason: String },
}

const VERIFICATION: &str = uids::VERIFICATION;
const C_STORE_RQ: u16 = 0x0001;
const C_STORE_RSP: u16 = 0x8001;
const C_ECHO_RQ: u16 = 0x0030;
const C_ECHO_RSP: u16 = 0x8030;
/// Command Data Set Type: a data set follows / none follows.
const DATA_SET_PRESENT: u16 = 0x0000;
const NO_DATA_SET: u16 = 0x0101;

/// C-ECHO: opens an association for the Verification SOP class and asks for an echo.
pub fn echo(peer: &PacsPeer) -> Result<(), NetworkError> {
    let mut link = open(peer, VERIFICATION)?.ok_or_else(|| NetworkError::Association {
        peer: peer.to_string(),
        reason: "the PACS accepts no Verification (C-ECHO) presentation context".into(),
    })?;
    let (context_id, _) =
        accepted_context(link.as_ref(), VERIFICATION).ok_or_else(|| NetworkError::Association {
            peer: peer.to_string(),
            reason: "no accepted presentation context for Verification".into(),
        })?;
    let command = command_set(C_ECHO_RQ, 1, VERIFICATION, None, false);
    let exchange = send_command(link.as_mut(), context_id, &command)
        .and_then(|()| read_response(link.as_mut(), C_ECHO_RSP));
    let response = finish(link, exchange, peer, "C-ECHO")?;
    match response.status {
        0x0000 => Ok(()),
        other => Err(NetworkError::Exchange {
            peer: peer.to_string(),
            what: "C-ECHO",
            reason: format!("status {other:04X}{}", comment_text(&response.comment)),
        }),
    }
}

/// C-STORE of objects that share one SOP class, over one association. Returns one outcome
/// per object, in order (when the association breaks, the object in hand and those after it
/// are to be tried later); an error when no association could be opened.
pub fn store(
    peer: &PacsPeer,
    sop_class_uid: &str,
    objects: &[&DicomObject],
) -> Result<Vec<StoreOutcome>, NetworkError> {
    let Some(mut link) = open(peer, sop_class_uid)? else {
        let reason =
            format!("the PACS accepts no presentation context for SOP class {sop_class_uid}");
        return Ok(objects
            .iter()
            .map(|_| StoreOutcome::Refused {
                reason: reason.clone(),
            })
            .collect());
    };
    let Some((context_id, transfer_syntax)) = accepted_context(link.as_ref(), sop_class_uid) else {
        link.abort();
        return Err(NetworkError::Association {
            peer: peer.to_string(),
            reason: format!("no accepted presentation context for {sop_class_uid}"),
        });
    };
    let mut outcomes = Vec::with_capacity(objects.len());
    let mut exchange = Ok(());
    for (index, object) in objects.iter().enumerate() {
        if exchange.is_err() {
            break;
        }
        let data_set = match data_set_bytes(&object.bytes, transfer_syntax) {
            Ok(bytes) => bytes,
            Err(reason) => {
                outcomes.push(StoreOutcome::Refused {
                    reason: format!("the stored object cannot be encoded: {reason}"),
                });
                continue;
            }
        };
        let message_id = (index + 1) as u16;
        let command = command_set(
            C_STORE_RQ,
            message_id,
            sop_class_uid,
            Some(&object.sop_instance_uid),
            true,
        );
        let answered = send_command(link.as_mut(), context_id, &command)
            .and_then(|()| send_data_set(link.as_mut(), context_id, &data_set))
            .and_then(|()| read_response(link.as_mut(), C_STORE_RSP));
        match answered {
            Ok(response) => outcomes.push(outcome_of(&response)),
            Err(e) => exchange = Err(e),
        }
    }
    if let Err(e) = finish(link, exchange, peer, "C-STORE") {
        let reason = e.to_string();
        while outcomes.len() < objects.len() {
            outcomes.push(StoreOutcome::TryLater {
                reason: reason.clone(),
            });
        }
    }
    Ok(outcomes)
}

/// A DIMSE command set (group 0000), in Implicit VR Little Endian as PS3.7 requires.
pub(crate) fn command_set(
    command_field: u16,
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: Option<&str>,
    data_set: bool,
) -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    put(
        &mut obj,
        tags::AFFECTED_SOP_CLASS_UID,
        VR::UI,
        sop_class_uid,
    );
    put(&mut obj, tags::COMMAND_FIELD, VR::US, command_field);
    put(&mut obj, tags::MESSAGE_ID, VR::US, message_id);
    if let Some(instance) = sop_instance_uid {
        put(&mut obj, tags::AFFECTED_SOP_INSTANCE_UID, VR::UI, instance);
    }
    // Requests with a data set (C-STORE, C-FIND) carry a priority: medium.
    let data_set_type = if data_set {
        put(&mut obj, tags::PRIORITY, VR::US, 0u16);
        DATA_SET_PRESENT
    } else {
        NO_DATA_SET
    };
    put(&mut obj, tags::COMMAND_DATA_SET_TYPE, VR::US, data_set_type);
    let implicit = entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut body = Vec::new();
    // Writing to memory: an error here would be a bug in the elements above.
    if let Err(e) = obj.write_dataset_with_ts(&mut body, &implicit) {
        log::error!("DIMSE command set: {e}");
    }
    // Command Group Length (0000,0000), UL, first: the length of what follows it.
    let mut command = Vec::with_capacity(body.len() + 12);
    command.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00]);
    command.extend_from_slice(&(body.len() as u32).to_le_bytes());
    command.extend_from_slice(&body);
    command
}

/// The data set of a Part 10 file, re-encoded in the negotiated transfer syntax (both
/// proposed syntaxes are uncompressed, so this never touches pixel codecs).
fn data_set_bytes(file: &[u8], transfer_syntax: &TransferSyntax) -> Result<Vec<u8>, String> {
    let object = OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Auto)
        .from_reader(file)
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(file.len());
    object
        .write_dataset_with_ts(&mut bytes, transfer_syntax)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

pub(crate) type Exchange<T> = Result<T, (&'static str, String)>;

pub(crate) fn send_command(link: &mut dyn Link, context_id: u8, command: &[u8]) -> Exchange<()> {
    link.send_pdu(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: context_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: command.to_vec(),
        }],
    })
    .map_err(|e| ("sending the command", e))
}

/// The data set, split into PDUs of the size the PACS accepts.
pub(crate) fn send_data_set(link: &mut dyn Link, context_id: u8, data_set: &[u8]) -> Exchange<()> {
    link.send_data(context_id, data_set)
        .map_err(|e| ("sending the data set", e.to_string()))
}

/// What a DIMSE response said.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub comment: Option<String>,
    /// The data set that came with it (a C-FIND match), in the context's transfer syntax.
    pub data_set: Option<Vec<u8>>,
}

/// Reads P-DATA until a whole response has arrived (its command set, and its data set when
/// the command says one follows); checks it answers `expected`.
pub(crate) fn read_response(link: &mut dyn Link, expected: u16) -> Exchange<Response> {
    let mut command = Vec::new();
    let mut data_set = Vec::new();
    let (mut command_done, mut data_done) = (false, false);
    loop {
        let pdu = link
            .receive_pdu()
            .map_err(|e| ("reading the response", e))?;
        match pdu {
            Pdu::PData { data } => {
                for value in data {
                    let (bytes, done) = match value.value_type {
                        PDataValueType::Command => (&mut command, &mut command_done),
                        PDataValueType::Data => (&mut data_set, &mut data_done),
                    };
                    bytes.extend_from_slice(&value.data);
                    *done |= value.is_last;
                }
                if command_done && (data_done || !data_set_follows(&command)) {
                    break;
                }
            }
            Pdu::AbortRQ { source } => {
                return Err(("reading the response", format!("aborted by {source:?}")));
            }
            other => {
                return Err((
                    "reading the response",
                    format!("unexpected {}", other.short_description()),
                ));
            }
        }
    }
    let implicit = entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let obj = InMemDicomObject::read_dataset_with_ts(&command[..], &implicit)
        .map_err(|e| ("reading the response", e.to_string()))?;
    let number = |tag| obj.element(tag).ok().and_then(|e| e.to_int::<u16>().ok());
    if number(tags::COMMAND_FIELD) != Some(expected) {
        return Err((
            "reading the response",
            format!(
                "expected command {expected:04X}, got {:?}",
                number(tags::COMMAND_FIELD)
            ),
        ));
    }
    let status = number(tags::STATUS).ok_or(("reading the response", "no status".into()))?;
    let comment = obj
        .element(tags::ERROR_COMMENT)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    Ok(Response {
        status,
        comment,
        data_set: data_done.then_some(data_set),
    })
}

/// Whether a (complete) command set says a data set follows it.
fn data_set_follows(command: &[u8]) -> bool {
    let implicit = entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    InMemDicomObject::read_dataset_with_ts(command, &implicit)
        .ok()
        .and_then(|obj| {
            obj.element(tags::COMMAND_DATA_SET_TYPE)
                .ok()
                .and_then(|e| e.to_int::<u16>().ok())
        })
        .is_some_and(|kind| kind != NO_DATA_SET)
}

/// Releases the association after a good exchange, aborts it after a broken one.
pub(crate) fn finish<T>(
    link: Box<dyn Link>,
    exchange: Exchange<T>,
    peer: &PacsPeer,
    what: &'static str,
) -> Result<T, NetworkError> {
    match exchange {
        Ok(value) => {
            if let Err(e) = link.release() {
                log::warn!("{peer}: {what}: releasing the association: {e}");
            }
            Ok(value)
        }
        Err((step, reason)) => {
            link.abort();
            Err(NetworkError::Exchange {
                peer: peer.to_string(),
                what,
                reason: format!("{step}: {reason}"),
            })
        }
    }
}

/// PS3.7 Annex C and PS3.4 B.2.3: which statuses keep the object, which refuse it for
/// good, and which are worth another try.
fn outcome_of(response: &Response) -> StoreOutcome {
    let status = response.status;
    let comment = response.comment.clone().unwrap_or_default();
    let reason = || format!("status {status:04X}{}", comment_text(&response.comment));
    match status {
        0x0000 => StoreOutcome::Stored,
        // Duplicate SOP instance: the PACS holds this object already (sent before a crash
        // that came before its answer was recorded). Same UIDs, same object: kept.
        0x0111 => StoreOutcome::StoredWithWarning {
            status,
            comment: format!(
                "the PACS holds this object already{}",
                comment_text(&response.comment)
            ),
        },
        0x0001 | 0xB000..=0xBFFF => StoreOutcome::StoredWithWarning { status, comment },
        // Out of resources, processing failure, resource limitation, duplicate invocation.
        0xA700..=0xA7FF | 0x0110 | 0x0213 | 0x0210 => StoreOutcome::TryLater { reason: reason() },
        _ => StoreOutcome::Refused { reason: reason() },
    }
}

fn comment_text(comment: &Option<String>) -> String {
    comment
        .as_deref()
        .map(|c| format!(": {c}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_set_starts_with_its_group_length() {
        let command = command_set(
            C_STORE_RQ,
            7,
            "1.2.840.10008.5.1.4.1.1.88.33",
            Some("2.25.1"),
            true,
        );
        let implicit = entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
        let obj = InMemDicomObject::read_dataset_with_ts(&command[..], &implicit).unwrap();
        let length = obj
            .element(tags::COMMAND_GROUP_LENGTH)
            .unwrap()
            .to_int::<u32>()
            .unwrap();
        assert_eq!(length as usize, command.len() - 12);
        let field = |tag| obj.element(tag).unwrap().to_int::<u16>().unwrap();
        assert_eq!(field(tags::COMMAND_FIELD), C_STORE_RQ);
        assert_eq!(field(tags::MESSAGE_ID), 7);
        assert_eq!(field(tags::COMMAND_DATA_SET_TYPE), DATA_SET_PRESENT);
        assert_eq!(
            obj.element(tags::AFFECTED_SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0'),
            "2.25.1"
        );
    }

    #[test]
    fn statuses_sort_into_kept_refused_and_try_later() {
        let of = |status, comment: Option<&str>| {
            outcome_of(&Response {
                status,
                comment: comment.map(str::to_string),
                data_set: None,
            })
        };
        assert_eq!(of(0x0000, None), StoreOutcome::Stored);
        assert!(matches!(
            of(0x0111, None),
            StoreOutcome::StoredWithWarning { status: 0x0111, .. }
        ));
        assert!(matches!(
            of(0xB000, Some("coerced")),
            StoreOutcome::StoredWithWarning { status: 0xB000, .. }
        ));
        assert!(matches!(of(0xA700, None), StoreOutcome::TryLater { .. }));
        assert!(matches!(of(0x0110, None), StoreOutcome::TryLater { .. }));
        match of(0x0122, Some("SOP class not supported")) {
            StoreOutcome::Refused { reason } => {
                assert_eq!(reason, "status 0122: SOP class not supported")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(of(0xA900, None), StoreOutcome::Refused { .. }));
        assert!(matches!(of(0xC000, None), StoreOutcome::Refused { .. }));
    }
}
