//! The modality worklist (MWL): what the hospital's RIS scheduled for this cart. ceusd asks
//! the worklist SCP (C-FIND, Modality Worklist Information Model) for the ultrasound
//! procedures scheduled on its AE title around today, with the exam's accession number, and
//! takes the study, patient and requested procedure of the one entry that matches.
//!
//! "Around today" is yesterday to tomorrow in UTC: the cart's clock is UTC and a hospital's
//! day is local, and the accession number, not the date, picks the entry.

use std::time::{Duration, SystemTime};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::association::{self, NetworkError, PacsPeer};
use super::context::{context_in, ExamContext};
use super::dataset::{put, put_sequence, DicomMoment};
use super::network;

/// Modality Worklist Information Model – FIND.
pub const MODALITY_WORKLIST_FIND: &str = "1.2.840.10008.5.1.4.31";
const C_FIND_RQ: u16 = 0x0020;
const C_FIND_RSP: u16 = 0x8020;

#[derive(Debug, thiserror::Error)]
pub enum WorklistError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("worklist {peer}: C-FIND failed with status {status:04X}{comment}")]
    Failed {
        peer: String,
        status: u16,
        comment: String,
    },
    #[error("worklist {peer}: {count} entries share the exam's accession number")]
    Ambiguous { peer: String, count: usize },
    #[error("worklist {peer}: the entry cannot be used: {reason}")]
    BadEntry { peer: String, reason: String },
}

/// The worklist entry scheduled for `station_ae_title` with `accession`, as the exam's
/// context; `None` when there is none.
pub fn find_by_accession(
    peer: &PacsPeer,
    accession: &str,
    station_ae_title: &str,
    now: SystemTime,
) -> Result<Option<ExamContext>, WorklistError> {
    let matches = find(peer, &query(accession, station_ae_title, now))?;
    let entries: Vec<ExamContext> = matches
        .iter()
        .map(|m| context_of(m, peer))
        .collect::<Result<_, _>>()?;
    match entries.len() {
        0 => Ok(None),
        1 => Ok(entries.into_iter().next()),
        count => Err(WorklistError::Ambiguous {
            peer: peer.to_string(),
            count,
        }),
    }
}

/// The C-FIND identifier: the keys to match, and the attributes wanted back (empty).
fn query(accession: &str, station_ae_title: &str, now: SystemTime) -> InMemDicomObject {
    let day = Duration::from_secs(86_400);
    let dates = format!(
        "{}-{}",
        DicomMoment::of(now - day).date,
        DicomMoment::of(now + day).date
    );
    let mut step = InMemDicomObject::new_empty();
    put(&mut step, tags::MODALITY, VR::CS, "US");
    put(
        &mut step,
        tags::SCHEDULED_STATION_AE_TITLE,
        VR::AE,
        station_ae_title,
    );
    put(
        &mut step,
        tags::SCHEDULED_PROCEDURE_STEP_START_DATE,
        VR::DA,
        dates,
    );
    put(
        &mut step,
        tags::SCHEDULED_PROCEDURE_STEP_START_TIME,
        VR::TM,
        "",
    );
    let mut identifier = InMemDicomObject::new_empty();
    put(&mut identifier, tags::ACCESSION_NUMBER, VR::SH, accession);
    for (tag, vr) in [
        // Asked for, so that names in other character sets decode as the RIS wrote them.
        (tags::SPECIFIC_CHARACTER_SET, VR::CS),
        (tags::PATIENT_NAME, VR::PN),
        (tags::PATIENT_ID, VR::LO),
        (tags::PATIENT_BIRTH_DATE, VR::DA),
        (tags::PATIENT_SEX, VR::CS),
        (tags::STUDY_INSTANCE_UID, VR::UI),
        (tags::REQUESTED_PROCEDURE_ID, VR::SH),
        (tags::REQUESTED_PROCEDURE_DESCRIPTION, VR::LO),
    ] {
        put(&mut identifier, tag, vr, "");
    }
    put_sequence(
        &mut identifier,
        tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE,
        vec![step],
    );
    identifier
}

/// Runs the C-FIND; returns every match.
fn find(
    peer: &PacsPeer,
    identifier: &InMemDicomObject,
) -> Result<Vec<InMemDicomObject>, WorklistError> {
    let Some(mut link) = association::open(peer, MODALITY_WORKLIST_FIND)? else {
        return Err(NetworkError::Association {
            peer: peer.to_string(),
            reason: "the worklist SCP accepts no Modality Worklist FIND context".into(),
        }
        .into());
    };
    let Some((context_id, transfer_syntax)) =
        association::accepted_context(link.as_ref(), MODALITY_WORKLIST_FIND)
    else {
        link.abort();
        return Err(NetworkError::Association {
            peer: peer.to_string(),
            reason: "no accepted Modality Worklist FIND context".into(),
        }
        .into());
    };
    let mut query = Vec::new();
    let exchange = identifier
        .write_dataset_with_ts(&mut query, transfer_syntax)
        .map_err(|e| ("encoding the query", e.to_string()))
        .and_then(|()| {
            let command = network::command_set(C_FIND_RQ, 1, MODALITY_WORKLIST_FIND, None, true);
            network::send_command(link.as_mut(), context_id, &command)
        })
        .and_then(|()| network::send_data_set(link.as_mut(), context_id, &query))
        .and_then(|()| {
            let mut matches = Vec::new();
            loop {
                let response = network::read_response(link.as_mut(), C_FIND_RSP)?;
                match response.status {
                    // Pending: one match, more to come.
                    0xFF00 | 0xFF01 => {
                        let Some(bytes) = response.data_set else {
                            return Err(("reading a match", "no data set".into()));
                        };
                        let entry =
                            InMemDicomObject::read_dataset_with_ts(&bytes[..], transfer_syntax)
                                .map_err(|e| ("reading a match", e.to_string()))?;
                        matches.push(entry);
                    }
                    status => return Ok((status, response.comment, matches)),
                }
            }
        });
    let (status, comment, matches) = network::finish(link, exchange, peer, "C-FIND")?;
    if status != 0x0000 {
        return Err(WorklistError::Failed {
            peer: peer.to_string(),
            status,
            comment: comment.map(|c| format!(": {c}")).unwrap_or_default(),
        });
    }
    Ok(matches)
}

/// A worklist entry as the exam's context, checked as the objects will need it.
fn context_of(entry: &InMemDicomObject, peer: &PacsPeer) -> Result<ExamContext, WorklistError> {
    let context = context_in(
        entry,
        format!("the modality worklist ({})", peer.called_ae_title),
    );
    context.validate().map_err(|e| WorklistError::BadEntry {
        peer: peer.to_string(),
        reason: e.to_string(),
    })?;
    Ok(context)
}
