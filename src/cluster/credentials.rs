//! A member's node credentials: its certificate (signed by the cluster's node intermediate),
//! its private key sealed under the KEK, and the TLS configurations built from them. Kept in
//! `tls/` of the data dir, because a joining node needs them before it has any state.

use std::sync::Arc;

use gatehouse_storage::model::Sealed;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::envelope::{open_with, seal_with};
use crate::crypto::KeyProvider;
use crate::datadir::{self, DataDir};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    #[error("the node credentials in {0} are unusable: {1}")]
    Unusable(String, String),
}

/// The node key file: a one-off data key wrapped by the KEK, and the key sealed under it.
#[derive(Serialize, Deserialize)]
struct SealedNodeKey {
    wrapped: Sealed,
    key: Sealed,
}

const KEY_CONTEXT: &str = "node-key";

/// What a cluster member proves itself with.
pub struct NodeCredentials {
    /// The node certificate, then the node intermediate.
    pub chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Zeroizing<Vec<u8>>,
    /// The node intermediate: the only issuer the cluster port accepts.
    pub node_ca: CertificateDer<'static>,
    /// The cluster CA (root), sent after the chain on the public port.
    pub root: CertificateDer<'static>,
}

impl NodeCredentials {
    pub fn exist(dir: &DataDir) -> bool {
        dir.node_cert_path().exists()
    }

    /// Writes the node certificate chain (PEM: node certificate, node intermediate) and its
    /// key, sealed under the KEK. The certificate is written last: its presence says "done".
    pub fn save(
        dir: &DataDir,
        kek: &dyn KeyProvider,
        chain_pem: &str,
        key_pkcs8: &[u8],
    ) -> Result<(), CredentialError> {
        dir.ensure_tls_dir()?;
        let mut data_key = Zeroizing::new([0u8; 32]);
        crate::clock::random_bytes(data_key.as_mut());
        let file = SealedNodeKey {
            wrapped: kek.wrap(&data_key, KEY_CONTEXT),
            key: seal_with(&data_key, "node-key", KEY_CONTEXT, key_pkcs8),
        };
        datadir::write_private(&dir.node_key_path(), &serde_json::to_vec(&file).unwrap_or_default())?;
        datadir::write_public(&dir.node_cert_path(), chain_pem.as_bytes())?;
        Ok(())
    }

    /// Loads them, with the cluster CA from `tls/ca.pem`.
    pub fn load(dir: &DataDir, kek: &dyn KeyProvider) -> Result<NodeCredentials, CredentialError> {
        let path = dir.node_cert_path();
        let unusable = |e: &dyn std::fmt::Display| CredentialError::Unusable(path.display().to_string(), e.to_string());
        let chain_pem = std::fs::read_to_string(&path).map_err(|e| unusable(&e))?;
        let chain = crate::crypto::ca::pem_certs(&chain_pem).map_err(|e| unusable(&e))?;
        let root_pem = std::fs::read_to_string(dir.ca_cert_path()).map_err(|e| unusable(&e))?;
        let root = crate::crypto::ca::pem_certs(&root_pem).map_err(|e| unusable(&e))?.into_iter().next();
        let (Some(node_ca), Some(root)) = (chain.get(1).cloned(), root) else {
            return Err(unusable(&"it needs the node certificate, the node intermediate and the cluster CA"));
        };
        let file: SealedNodeKey =
            serde_json::from_slice(&datadir::read_private(&dir.node_key_path())?).map_err(|e| unusable(&e))?;
        let data_key = kek.unwrap(&file.wrapped, KEY_CONTEXT).map_err(|e| unusable(&e))?;
        let key_pkcs8 = open_with(&data_key, &file.key, KEY_CONTEXT).map_err(|e| unusable(&e))?;
        Ok(NodeCredentials { chain, key_pkcs8, node_ca, root })
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.to_vec()))
    }

    fn node_ca_roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        // A trust anchor made of the intermediate: certificates the cluster CA signs through
        // another intermediate (workload certificates) do not chain to it.
        let _ = roots.add(self.node_ca.clone());
        Arc::new(roots)
    }

    /// The cluster port's server side: a client certificate of the node intermediate is
    /// required at the handshake.
    pub fn cluster_server_config(&self) -> Result<rustls::ServerConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.node_ca_roots(), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// The cluster port's client side: presents the node certificate, accepts only peers with
    /// one of the node intermediate.
    pub fn cluster_client_config(&self) -> Result<rustls::ClientConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(self.node_ca_roots(), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key())?;
        Ok(config)
    }

    /// The public HTTPS port's certificate chain and key: node certificate, node intermediate
    /// and cluster CA (sent so a joining node can match the CA against its token).
    pub fn public_chain(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut chain = self.chain.clone();
        chain.push(self.root.clone());
        (chain, self.key())
    }
}
