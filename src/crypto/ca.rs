//! The cluster's certificate authority and the node's HTTPS server certificate (rcgen).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("the stored CA key or certificate is unusable: {0}")]
    Stored(String),
}

/// The associated data the cluster CA's sealed key is bound to.
pub const CA_KEY_CONTEXT: &str = "cluster-ca-key";

fn gen_err(e: rcgen::Error) -> CaError {
    CaError::Generate(e.to_string())
}

/// A certificate in PEM with its PKCS#8 private key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pkcs8: Zeroizing<Vec<u8>>,
}

fn validity(params: &mut CertificateParams, now_ms: i64, days: i64) -> Result<(), CaError> {
    let now = time::OffsetDateTime::from_unix_timestamp(now_ms / 1000).map_err(|e| CaError::Generate(e.to_string()))?;
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    Ok(())
}

/// A new CA for the cluster `cluster_id`, valid for ten years.
pub fn generate_ca(cluster_id: &str, now_ms: i64) -> Result<Issued, CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Gatehouse");
    let short: String = cluster_id.chars().take(12).collect();
    dn.push(DnType::CommonName, format!("Gatehouse cluster CA {short}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, now_ms, 3650)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    Ok(Issued { cert_pem: cert.pem(), key_pkcs8: Zeroizing::new(key.serialize_der()) })
}

/// A server certificate for `names` (DNS names or IP addresses), signed by the CA.
pub fn issue_server_cert(
    ca_cert_pem: &str,
    ca_key_pkcs8: &[u8],
    names: &[String],
    now_ms: i64,
) -> Result<Issued, CaError> {
    let ca_key = KeyPair::try_from(ca_key_pkcs8).map_err(|e| CaError::Stored(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(|e| CaError::Stored(e.to_string()))?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names.first().cloned().unwrap_or_else(|| "localhost".into()));
    params.distinguished_name = dn;
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now_ms, 397)?;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok(Issued { cert_pem: cert.pem(), key_pkcs8: Zeroizing::new(key.serialize_der()) })
}

/// The intermediate that signs node certificates, under the cluster CA. It can sign end
/// certificates only (path length 0), so a node certificate can never act as a CA.
pub fn generate_node_ca(
    ca_cert_pem: &str,
    ca_key_pkcs8: &[u8],
    cluster_id: &str,
    now_ms: i64,
) -> Result<Issued, CaError> {
    let ca_key = KeyPair::try_from(ca_key_pkcs8).map_err(|e| CaError::Stored(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(|e| CaError::Stored(e.to_string()))?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Gatehouse");
    let short: String = cluster_id.chars().take(12).collect();
    dn.push(DnType::CommonName, format!("Gatehouse node CA {short}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now_ms, 3650)?;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    Ok(Issued { cert_pem: cert.pem(), key_pkcs8: Zeroizing::new(key.serialize_der()) })
}

/// Names a node certificate may carry at most, and how long each may be.
const MAX_NODE_NAMES: usize = 32;
const MAX_NAME_LEN: usize = 253;

/// The common name of node `node_id`'s certificate.
pub fn node_common_name(node_id: u64) -> String {
    format!("gatehouse node {node_id:016x}")
}

/// A new node key and a certificate signing request for it, naming `names`.
pub fn node_key_and_csr(node_id: u64, names: &[String]) -> Result<(Zeroizing<Vec<u8>>, String), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_common_name(node_id));
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(gen_err)?;
    Ok((Zeroizing::new(key.serialize_der()), csr.pem().map_err(gen_err)?))
}

/// Signs a node's request with the node intermediate. Only the request's key and host names
/// are taken from it (its signature is checked); everything else is ours: not a CA, server and
/// client authentication, this node's name and its id (`urn:gatehouse:node:{id}`), 397 days.
pub fn sign_node_csr(
    node_ca_pem: &str,
    node_ca_key_pkcs8: &[u8],
    csr_pem: &str,
    node_id: u64,
    now_ms: i64,
) -> Result<String, CaError> {
    let bad = |what: &str| CaError::Generate(format!("the certificate request {what}"));
    let mut csr =
        rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| bad(&format!("is invalid: {e}")))?;
    let names = &csr.params.subject_alt_names;
    if names.is_empty() || names.len() > MAX_NODE_NAMES {
        return Err(bad(&format!("must name 1 to {MAX_NODE_NAMES} hosts")));
    }
    let too_long = names.iter().any(|n| match n {
        rcgen::SanType::DnsName(d) => d.as_str().len() > MAX_NAME_LEN,
        rcgen::SanType::IpAddress(_) => false,
        _ => true,
    });
    if too_long {
        return Err(bad("names something other than host names and addresses"));
    }
    let ca_key = KeyPair::try_from(node_ca_key_pkcs8).map_err(|e| CaError::Stored(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(node_ca_pem, ca_key).map_err(|e| CaError::Stored(e.to_string()))?;
    let params = &mut csr.params;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_common_name(node_id));
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    // The node's identity, set here, never taken from the request (which may name only hosts).
    let uri = rcgen::string::Ia5String::try_from(gatehouse_raft::identity::node_uri(node_id)).map_err(gen_err)?;
    params.subject_alt_names.push(rcgen::SanType::URI(uri));
    params.custom_extensions.clear();
    params.name_constraints = None;
    params.crl_distribution_points.clear();
    validity(params, now_ms, 397)?;
    Ok(csr.signed_by(&issuer).map_err(gen_err)?.pem())
}

/// SHA-256 of a certificate's DER, hex: what a join token pins.
pub fn fingerprint(cert_der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(cert_der))
}

/// The DER of each certificate in a PEM text.
pub fn pem_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, CaError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Stored(e.to_string()))
}
