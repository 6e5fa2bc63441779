//! The TLS client configuration of the event sinks (`mqtts://` brokers, `https://` webhooks):
//! rustls on Graviola's cryptography, which is pure Rust (the usual providers, `ring` and
//! `aws-lc-rs`, compile C), TLS 1.2 and 1.3, and the certificate authorities of a PEM file or
//! else the system's.

use std::path::Path;
use std::sync::Arc;

use rumqttc::tokio_rustls::rustls::{ClientConfig, RootCertStore};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::SinkError;

pub(super) use rumqttc::tokio_rustls::rustls;

/// The configuration for `sink`, trusting the authorities in `ca_file` (PEM) or, without one,
/// the system's.
pub(super) fn client_config(
    sink: &'static str,
    ca_file: Option<&Path>,
) -> Result<Arc<ClientConfig>, SinkError> {
    let fail = |message: String| SinkError::new(sink, message);
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|e| fail(format!("ca_file {}: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(fail(format!(
                    "ca_file {} holds no usable certificate",
                    path.display()
                )));
            }
        }
        None => {
            let system = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(system.certs);
            if roots.is_empty() {
                return Err(fail(format!(
                    "no system certificate authorities found ({:?}); name them with ca_file",
                    system.errors
                )));
            }
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls_graviola::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Refuses a `ca_file` for a URL that is not encrypted.
pub(super) fn check_ca_file_use(
    sink: &'static str,
    ca_file: Option<&Path>,
    tls: bool,
    plain_scheme: &str,
) -> Result<(), SinkError> {
    match ca_file {
        Some(path) if !tls => Err(SinkError::new(
            sink,
            format!(
                "ca_file {} is for encrypted connections, but the URL is plain {plain_scheme}://",
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}
