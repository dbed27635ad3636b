//! The signed-in user's profile and picture against the real server: changes that need the
//! password, a 5 MiB picture stored and served back, and uploads that are not pictures refused
//! with nothing stored.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{node::temp_data_dir, TestNode};

const PASSWORD: &str = "plenty long enough passphrase";
const MIB5: usize = 5 * 1024 * 1024;

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A valid PNG of exactly `size` bytes: seeded noise (so the run is repeatable), padded with a
/// private ancillary chunk before IEND.
fn png_of_size(size: usize) -> Vec<u8> {
    // Noise hardly compresses: about 3 bytes a pixel, so this leaves room for the padding.
    let edge = (size as f64 * 0.8 / 3.0).sqrt() as u32;
    let (w, h) = (edge, edge);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let b = state.to_le_bytes();
        image::Rgb([b[0], b[1], b[2]])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    let mut png = out.into_inner();
    let iend = png.len() - 12;
    let pad = size.checked_sub(png.len() + 12).expect("the noise image is smaller than the size asked");
    let mut chunk = Vec::with_capacity(pad + 12);
    chunk.extend_from_slice(&(pad as u32).to_be_bytes());
    let mut body = b"ruSt".to_vec();
    body.resize(4 + pad, 0);
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32(&body).to_be_bytes());
    png.splice(iend..iend, chunk);
    assert_eq!(png.len(), size);
    png
}

struct Session<'a> {
    node: &'a TestNode,
    cookie: String,
}

impl Session<'_> {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req =
            self.node.client().request(method, format!("{}{path}", self.node.url)).header("cookie", &self.cookie);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null))
    }

    async fn upload(&self, bytes: Vec<u8>, content_type: &str) -> (StatusCode, Value) {
        let resp = self
            .node
            .client()
            .put(format!("{}/v1/auth/me/avatar", self.node.url))
            .header("cookie", &self.cookie)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_changes_their_profile_and_a_5_mib_picture_is_stored_while_non_pictures_are_refused() {
    let _heavy = crate::support::heavy();
    let (_tmp, dir) = temp_data_dir();
    let node = TestNode::start(&dir);
    let resp = node
        .client()
        .post(format!("{}/v1/auth/register", node.url))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let me = Session { node: &node, cookie };
    use reqwest::Method;

    // The profile; changes; the address only with the password.
    let (status, profile) = me.send(Method::GET, "/v1/auth/me", None).await;
    assert_eq!(
        (status, &profile["email"], &profile["email_verified"]),
        (StatusCode::OK, &json!("ada@example.com"), &json!(false))
    );
    let (status, profile) =
        me.send(Method::PATCH, "/v1/auth/me", Some(json!({"display_name": "Ada", "locale": "pt-BR"}))).await;
    assert_eq!(
        (status, &profile["display_name"], &profile["locale"]),
        (StatusCode::OK, &json!("Ada"), &json!("pt-BR"))
    );
    let (status, _) = me.send(Method::PATCH, "/v1/auth/me", Some(json!({"locale": "english please"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = me.send(Method::PATCH, "/v1/auth/me", Some(json!({"email": "ada@new.example"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a new address needs the current password");
    let wrong = json!({"email": "ada@new.example", "current_password": "not the right passphrase"});
    assert_eq!(me.send(Method::PATCH, "/v1/auth/me", Some(wrong)).await.0, StatusCode::UNAUTHORIZED);
    let right = json!({"email": "ada@new.example", "current_password": PASSWORD});
    let (status, profile) = me.send(Method::PATCH, "/v1/auth/me", Some(right)).await;
    assert_eq!(
        (status, &profile["email"], &profile["email_verified"]),
        (StatusCode::OK, &json!("ada@new.example"), &json!(false))
    );

    // Not signed in: refused before the upload is read.
    let anonymous = node
        .client()
        .put(format!("{}/v1/auth/me/avatar", node.url))
        .header("content-type", "image/png")
        .body(vec![0u8; 1024])
        .send()
        .await;
    assert_eq!(anonymous.unwrap().status(), StatusCode::UNAUTHORIZED);

    // A 5 MiB PNG is stored (re-encoded) and served back.
    let picture = png_of_size(MIB5);
    let (status, set) = me.upload(picture.clone(), "image/png").await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let url = set["avatar_url"].as_str().unwrap().to_string();
    let served = node.client().get(&url).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.headers()["x-content-type-options"], "nosniff");
    let back = image::load_from_memory(&served.bytes().await.unwrap()).unwrap();
    assert_eq!((back.width(), back.height()), (512, 512), "re-encoded, at most 512 px");
    assert_eq!(me.send(Method::GET, "/v1/auth/me", None).await.1["avatar_url"], json!(url));

    // One byte more is too large; markup, a polyglot and a truncated image are refused; nothing
    // of them is stored.
    let mut too_large = png_of_size(MIB5 + 1);
    assert_eq!(me.upload(std::mem::take(&mut too_large), "image/png").await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let html = b"<!doctype html><html><script>alert(document.cookie)</script></html>".to_vec();
    assert_eq!(me.upload(html, "image/png").await.0, StatusCode::BAD_REQUEST, "an HTML file named .png");
    let mut polyglot = png_of_size(64 * 1024);
    polyglot.extend_from_slice(b"<html><script>alert(1)</script></html>");
    assert_eq!(me.upload(polyglot, "image/png").await.0, StatusCode::BAD_REQUEST, "a polyglot");
    let truncated = picture[..picture.len() / 2].to_vec();
    assert_eq!(me.upload(truncated, "image/png").await.0, StatusCode::BAD_REQUEST, "a truncated image");
    assert_eq!(me.send(Method::GET, "/v1/auth/me", None).await.1["avatar_url"], json!(url), "the picture is as it was");

    // Removed, its URL serves nothing.
    assert_eq!(me.send(Method::DELETE, "/v1/auth/me/avatar", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(node.client().get(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
}
