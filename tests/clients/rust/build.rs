//! Generates the admin API client from the OpenAPI document (the committed one, or
//! `GATEHOUSE_OPENAPI`): only the `/admin/v1` operations, the surface integrators script.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let default = manifest.join("../../../openapi/gatehouse.json");
    let path = std::env::var_os("GATEHOUSE_OPENAPI").map(PathBuf::from).unwrap_or(default);
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rerun-if-env-changed=GATEHOUSE_OPENAPI");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut doc: serde_json::Value = serde_json::from_str(&text).expect("the document is JSON");
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        paths.retain(|p, _| p.starts_with("/admin/v1/"));
    }
    let spec: openapiv3::OpenAPI = serde_json::from_value(doc).expect("an OpenAPI 3.0 document");
    let mut settings = progenitor::GenerationSettings::default();
    settings.with_interface(progenitor::InterfaceStyle::Builder);
    let mut generator = progenitor::Generator::new(&settings);
    let tokens = generator.generate_tokens(&spec).expect("progenitor generates the client");
    let code = prettyplease::unparse(&syn::parse2(tokens).expect("generated code parses"));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("gatehouse_client.rs");
    std::fs::write(out, code).unwrap();
}
