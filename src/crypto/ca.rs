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
