//! A software passkey, for tests that need one outside a browser (several nodes, one
//! ceremony): an ES256 key pair that answers WebAuthn options as a platform authenticator with
//! user verification does, attestation `none`. Only the happy path: the relying-party checks
//! are webauthn-rs's, and the browser tests mutate answers.

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ciborium::Value as Cbor;
use serde_json::{json, Value};

/// User present and user verified.
const UP_UV: u8 = 0x01 | 0x04;
/// Attested credential data follows.
const AT: u8 = 0x40;

pub struct SoftPasskey {
    key: EcdsaKeyPair,
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    origin: String,
    sign_count: u32,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text.as_str().expect("a base64url string")).expect("base64url")
}

fn cbor(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

impl SoftPasskey {
    /// A new key, used from pages at `origin` (`https://host[:port]`).
    pub fn new(origin: &str) -> SoftPasskey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let mut credential_id = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut credential_id).unwrap();
        SoftPasskey { key, credential_id, user_handle: Vec::new(), origin: origin.to_string(), sign_count: 0 }
    }

    fn client_data(&self, kind: &str, challenge: &Value) -> Vec<u8> {
        let data = json!({"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false});
        serde_json::to_vec(&data).unwrap()
    }

    fn auth_data(&mut self, rp_id: &str, flags: u8) -> Vec<u8> {
        self.sign_count += 1;
        let mut data = digest(&SHA256, rp_id.as_bytes()).as_ref().to_vec();
        data.push(flags);
        data.extend_from_slice(&self.sign_count.to_be_bytes());
        data
    }

    /// The answer to `navigator.credentials.create({publicKey})` for the `options` a
    /// registration begin returned (`{"publicKey": …}`).
    pub fn register(&mut self, options: &Value) -> Value {
        let public_key = &options["publicKey"];
        let rp_id = public_key["rp"]["id"].as_str().expect("an RP id");
        self.user_handle = unb64(&public_key["user"]["id"]);
        let point = self.key.public_key().as_ref();
        let cose_key = Cbor::Map(vec![
            (Cbor::from(1), Cbor::from(2)),  // kty: EC2
            (Cbor::from(3), Cbor::from(-7)), // alg: ES256
            (Cbor::from(-1), Cbor::from(1)), // crv: P-256
            (Cbor::from(-2), Cbor::Bytes(point[1..33].to_vec())),
            (Cbor::from(-3), Cbor::Bytes(point[33..65].to_vec())),
        ]);
        let mut auth_data = self.auth_data(rp_id, UP_UV | AT);
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID: none
        auth_data.extend_from_slice(&u16::try_from(self.credential_id.len()).unwrap().to_be_bytes());
        auth_data.extend_from_slice(&self.credential_id);
        auth_data.extend_from_slice(&cbor(&cose_key));
        let attestation = Cbor::Map(vec![
            (Cbor::from("fmt"), Cbor::from("none")),
            (Cbor::from("attStmt"), Cbor::Map(Vec::new())),
            (Cbor::from("authData"), Cbor::Bytes(auth_data)),
        ]);
        let client_data = self.client_data("webauthn.create", &public_key["challenge"]);
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {"attestationObject": b64(&cbor(&attestation)), "clientDataJSON": b64(&client_data)},
            "extensions": {},
        })
    }

    /// The answer to `navigator.credentials.get({publicKey})` for the `options` a sign-in
    /// begin returned: a discoverable credential, so it names its user.
    pub fn sign_in(&mut self, options: &Value) -> Value {
        let public_key = &options["publicKey"];
        let rp_id = public_key["rpId"].as_str().expect("an RP id");
        let auth_data = self.auth_data(rp_id, UP_UV);
        let client_data = self.client_data("webauthn.get", &public_key["challenge"]);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(digest(&SHA256, &client_data).as_ref());
        let signature = self.key.sign(&SystemRandom::new(), &signed).unwrap();
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(signature.as_ref()),
                "userHandle": b64(&self.user_handle),
            },
            "extensions": {},
        })
    }
}
