//! Joining a cluster from a fresh data dir (`cluster join`, or `cluster.join` in config):
//! ask a member over TLS pinned to the cluster CA named in the token, prove the token, and
//! keep what comes back (node certificate, cluster CA, the KEK sealed to this join). The
//! node then starts as a learner, catches up and is promoted to voter.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::cluster::credentials::NodeCredentials;
use crate::cluster::protocol::{kek_context, JoinAnswer, JoinRequest, JoinToken, JOIN_PATH};
use crate::config::Config;
use crate::crypto::kek_transfer::Recipient;
use crate::crypto::{ca, kek};
use crate::datadir::{self, DataDir};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    #[error("data dir {0} is already initialised: a node joins only from a fresh data dir")]
    Initialised(String),
    #[error("{0}")]
    Token(String),
    #[error("cannot reach the peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
    #[error("the peer refused the join: {0}")]
    Refused(String),
    #[error("the join answer is unusable: {0}")]
    Answer(String),
    #[error("writing the data dir: {0}")]
    Write(String),
}

/// Accepts the peer only if its chain leads to the CA whose fingerprint the token carries
/// (sent as the last certificate of the chain) and names the host dialled.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let root = intermediates.iter().find(|c| ca::fingerprint(c) == self.fingerprint).ok_or_else(|| {
            rustls::Error::General("the peer's certificate does not lead to the cluster CA named in the token".into())
        })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone().into_owned()).map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn pinned_client(fingerprint: &str) -> Result<reqwest::Client, JoinError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = PinnedCa { fingerprint: fingerprint.to_string(), provider: provider.clone() };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| JoinError::Write(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .https_only(true)
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| JoinError::Write(e.to_string()))
}

/// Enrols this data dir in the cluster; afterwards the node starts in join mode.
pub async fn enroll(
    config: &Config,
    names: &[String],
    token: &str,
    peer: &str,
    kek_env: Option<&str>,
) -> Result<(), JoinError> {
    let dir = DataDir::open_or_create(&config.data_dir).map_err(|e| JoinError::Write(e.to_string()))?;
    if dir.is_initialised() || dir.joined_marker().exists() {
        return Err(JoinError::Initialised(dir.root().display().to_string()));
    }
    let token = JoinToken::parse(token).map_err(|e| JoinError::Token(e.to_string()))?;
    if !peer.starts_with("https://") {
        return Err(JoinError::Token(format!("--peer {peer:?} must be an https URL of a member")));
    }
    let node_id = crate::datadir::new_node_id();
    let (key, csr_pem) = ca::node_key_and_csr(node_id, names).map_err(|e| JoinError::Write(e.to_string()))?;
    let recipient = Recipient::new().map_err(|e| JoinError::Write(e.to_string()))?;
    let request = JoinRequest {
        node_id: format!("{node_id:016x}"),
        csr_pem,
        cluster_address: config.cluster.advertised(),
        kek_public_key: recipient.public_key(),
    };
    let url = format!("{}{JOIN_PATH}", peer.trim_end_matches('/'));
    let unreachable = |e: &dyn std::error::Error| {
        let mut reason = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            reason.push_str(&format!(": {s}"));
            source = s.source();
        }
        JoinError::Peer { peer: peer.to_string(), reason }
    };
    let response = pinned_client(&token.ca_fingerprint)?
        .post(&url)
        .bearer_auth(format!("{}.{}", token.id, token.secret))
        .json(&request)
        .send()
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| unreachable(&e))?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned());
        return Err(JoinError::Refused(format!("HTTP {status}: {detail}")));
    }
    let answer: JoinAnswer = serde_json::from_slice(&body).map_err(|e| JoinError::Answer(e.to_string()))?;
    let root = ca::pem_certs(&answer.ca_pem).map_err(|e| JoinError::Answer(e.to_string()))?;
    if root.first().map(|c| ca::fingerprint(c)) != Some(token.ca_fingerprint.clone()) {
        return Err(JoinError::Answer("the cluster CA it sent is not the one the token names".into()));
    }
    let kek_bytes =
        recipient.open(&answer.kek, &kek_context(&token.id, node_id)).map_err(|e| JoinError::Answer(e.to_string()))?;
    let write = |e: &dyn std::fmt::Display| JoinError::Write(e.to_string());
    kek::check_received(&kek_bytes, kek_env).map_err(|e| write(&e))?;
    // The marker first: from here on this dir never founds a cluster of its own.
    datadir::write_private(&dir.joined_marker(), format!("{}\n", answer.cluster_id).as_bytes())
        .map_err(|e| write(&e))?;
    kek::install_received(&dir, &kek_bytes, kek_env).map_err(|e| write(&e))?;
    let kek = crate::crypto::LocalKek::load(&dir, kek_env, false).map_err(|e| write(&e))?;
    dir.ensure_tls_dir().map_err(|e| write(&e))?;
    datadir::write_public(&dir.ca_cert_path(), answer.ca_pem.as_bytes()).map_err(|e| write(&e))?;
    NodeCredentials::save(&dir, &kek, &answer.node_chain_pem, &key).map_err(|e| write(&e))?;
    let cache_bytes = config.storage.cache_mib.saturating_mul(1024 * 1024);
    drop(gatehouse_storage::Store::open_with(&dir.db_path(), true, cache_bytes).map_err(|e| write(&e))?);
    datadir::make_private(&dir.db_path()).map_err(|e| write(&e))?;
    // Last: with the node id written, the dir is initialised.
    dir.write_node_id(node_id).map_err(|e| write(&e))?;
    Ok(())
}
