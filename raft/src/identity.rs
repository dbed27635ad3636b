//! Which node a certificate belongs to: node certificates name their node in a URI
//! subject alternative name, `urn:gatehouse:node:{id}` (16 hex digits), set by the signer.
//! Both ends of the cluster port check it: a certificate of node 2 cannot speak as node 3.

use crate::types::NodeId;

const PREFIX: &str = "urn:gatehouse:node:";

/// The URI a node certificate names `node_id` by.
pub fn node_uri(node_id: NodeId) -> String {
    format!("{PREFIX}{node_id:016x}")
}

/// The node a certificate (DER) names, when it names exactly one.
pub fn node_of(cert_der: &[u8]) -> Option<NodeId> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) => uri.strip_prefix(PREFIX).filter(|h| h.len() == 16),
        _ => None,
    });
    let id = u64::from_str_radix(ids.next()?, 16).ok()?;
    ids.next().is_none().then_some(id)
}
