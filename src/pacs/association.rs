//! A DICOM association with the PACS or the worklist, over TCP or DICOM TLS (PS3.15 B.1:
//! TLS with the server's certificate checked against the site's CA, and optionally the
//! cart's own certificate), opened with dicom-ul. Callers see one `Link` whatever the
//! transport.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dicom_dictionary_std::uids;
use dicom_transfer_syntax_registry::{TransferSyntax, TransferSyntaxIndex, TransferSyntaxRegistry};
use dicom_ul::association::client::ClientAssociation;
use dicom_ul::association::CloseSocket;
use dicom_ul::pdu::{Pdu, PresentationContextNegotiated, PresentationContextResultReason};
use dicom_ul::ClientAssociationOptions;

/// DICOM TLS: the CA that signed the peer's certificate, and the cart's certificate and key
/// where the peer asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    /// Both or neither.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

/// Where the PACS is and who is calling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacsPeer {
    pub host: String,
    pub port: u16,
    /// The PACS's AE title.
    pub called_ae_title: String,
    /// This cart's AE title, as the PACS knows it.
    pub calling_ae_title: String,
    /// Longest wait to connect, and for each read or write.
    pub timeout: Duration,
    /// DICOM TLS; plain TCP when `None`.
    pub tls: Option<TlsFiles>,
}

impl std::fmt::Display for PacsPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.called_ae_title, self.host, self.port)
    }
}

/// PS3.5's AE VR: 1 to 16 characters of the default repertoire, no backslash, not only
/// spaces.
pub fn check_ae_title(title: &str) -> Result<(), String> {
    let trimmed = title.trim();
    if trimmed.is_empty() {
        return Err("empty".into());
    }
    if trimmed.len() > 16 {
        return Err(format!("{} characters, at most 16", trimmed.len()));
    }
    if let Some(c) = trimmed
        .chars()
        .find(|c| !c.is_ascii() || c.is_ascii_control() || *c == '\\')
    {
        return Err(format!("{c:?} is not allowed in an AE title"));
    }
    Ok(())
}

/// Why an exchange with a DICOM peer (the PACS, the worklist) did not happen: worth trying
/// again later.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{peer}: association: {reason}")]
    Association { peer: String, reason: String },
    #[error("{peer}: {what}: {reason}")]
    Exchange {
        peer: String,
        what: &'static str,
        reason: String,
    },
}

/// An open association, whatever its transport.
pub trait Link {
    fn contexts(&self) -> &[PresentationContextNegotiated];
    fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), String>;
    fn receive_pdu(&mut self) -> Result<Pdu, String>;
    /// `bytes` as P-DATA on `context_id`, split into PDUs of the size the peer accepts.
    fn send_data(&mut self, context_id: u8, bytes: &[u8]) -> std::io::Result<()>;
    fn release(self: Box<Self>) -> Result<(), String>;
    fn abort(self: Box<Self>);
}

impl<S> Link for ClientAssociation<S>
where
    S: CloseSocket + std::io::Read + std::io::Write,
{
    fn contexts(&self) -> &[PresentationContextNegotiated] {
        self.presentation_contexts()
    }
    fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), String> {
        self.send(pdu).map_err(|e| error_chain(&e))
    }
    fn receive_pdu(&mut self) -> Result<Pdu, String> {
        self.receive().map_err(|e| error_chain(&e))
    }
    fn send_data(&mut self, context_id: u8, bytes: &[u8]) -> std::io::Result<()> {
        let mut writer = self.send_pdata(context_id);
        writer.write_all(bytes)?;
        writer.finish()
    }
    fn release(self: Box<Self>) -> Result<(), String> {
        ClientAssociation::release(*self).map_err(|e| error_chain(&e))
    }
    fn abort(self: Box<Self>) {
        let _ = ClientAssociation::abort(*self);
    }
}

/// Opens an association proposing `abstract_syntax` in the two uncompressed little-endian
/// transfer syntaxes every SCP supports. `None` when the peer accepts no context for it.
pub fn open(peer: &PacsPeer, abstract_syntax: &str) -> Result<Option<Box<dyn Link>>, NetworkError> {
    let fail = |reason: String| NetworkError::Association {
        peer: peer.to_string(),
        reason,
    };
    let options = ClientAssociationOptions::new()
        .calling_ae_title(peer.calling_ae_title.as_str())
        .called_ae_title(peer.called_ae_title.as_str())
        .with_presentation_context(
            abstract_syntax,
            vec![
                uids::EXPLICIT_VR_LITTLE_ENDIAN,
                uids::IMPLICIT_VR_LITTLE_ENDIAN,
            ],
        )
        .connection_timeout(peer.timeout)
        .read_timeout(peer.timeout)
        .write_timeout(peer.timeout);
    let address = (peer.host.as_str(), peer.port);
    let opened = match &peer.tls {
        Some(files) => {
            let config = client_config(files).map_err(|e| fail(format!("TLS: {e}")))?;
            options
                .tls_config(config)
                .server_name(&peer.host)
                .establish_tls(address)
                .map(|a| Box::new(a) as Box<dyn Link>)
        }
        None => options
            .establish(address)
            .map(|a| Box::new(a) as Box<dyn Link>),
    };
    match opened {
        Ok(link) => Ok(Some(link)),
        Err(dicom_ul::association::Error::NoAcceptedPresentationContexts { .. }) => Ok(None),
        Err(e) => Err(fail(error_chain(&e))),
    }
}

/// The accepted presentation context for `abstract_syntax`: its id and transfer syntax.
pub fn accepted_context(
    link: &dyn Link,
    abstract_syntax: &str,
) -> Option<(u8, &'static TransferSyntax)> {
    link.contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .filter(|pc| trim_uid(&pc.abstract_syntax) == abstract_syntax)
        .find_map(|pc| {
            TransferSyntaxRegistry
                .get(trim_uid(&pc.transfer_syntax))
                .map(|ts| (pc.id, ts))
        })
}

fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

/// The rustls client configuration of `files`: the site's CA as the only root.
fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    // The process's provider (ring), as the MQTT client uses; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read_certs = |path: &Path| {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    let cas = read_certs(&files.ca_file)?;
    if cas.is_empty() {
        return Err(format!("{}: no certificate in it", files.ca_file.display()));
    }
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| format!("{}: {e}", files.ca_file.display()))?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match (&files.client_cert_file, &files.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// An error and its causes on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
