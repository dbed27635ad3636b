//! Finishing touches on the generated OpenAPI document, and what it says about each path.
//!
//! poem-openapi does not emit `additionalProperties: false` for `deny_unknown_fields`, so the
//! request-body schemas get it here: the server refuses unknown members, and the document
//! says so. The same document answers which methods a path allows (the `Allow` of a 405).

use std::sync::LazyLock;

use serde_json::Value;

/// Marks every request-body object schema as closed.
pub fn finish(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else { return spec.to_string() };
    let mut closed = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for ops in paths.values().filter_map(Value::as_object) {
            for op in ops.values() {
                let Some(content) = op.pointer("/requestBody/content").and_then(Value::as_object) else { continue };
                for (media, body) in content {
                    if !media.starts_with("application/json") {
                        continue;
                    }
                    let reference = body.pointer("/schema/$ref").and_then(Value::as_str);
                    if let Some(name) = reference.and_then(|r| r.rsplit('/').next()) {
                        closed.push(name.to_string());
                    }
                }
            }
        }
    }
    if let Some(schemas) = doc.pointer_mut("/components/schemas").and_then(Value::as_object_mut) {
        for name in closed {
            if let Some(s) = schemas.get_mut(&name).and_then(Value::as_object_mut) {
                if s.get("type").and_then(Value::as_str) == Some("object") {
                    s.insert("additionalProperties".into(), Value::Bool(false));
                }
            }
        }
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_string())
}

/// Path templates of the document with their methods.
struct Routes(Vec<(Vec<String>, Vec<String>)>);

static ROUTES: LazyLock<Routes> = LazyLock::new(|| {
    let doc: Value = serde_json::from_str(&crate::http::openapi_document()).unwrap_or_default();
    let mut routes = Vec::new();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (template, ops) in paths {
            let segments = template.split('/').map(str::to_string).collect();
            let methods = ops.as_object().map(|o| o.keys().map(|m| m.to_uppercase()).collect()).unwrap_or_default();
            routes.push((segments, methods));
        }
    }
    Routes(routes)
});

/// The methods the document declares for `path`, as an `Allow` header value.
pub fn allowed_methods(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let (_, methods) = ROUTES.0.iter().find(|(template, _)| {
        template.len() == segments.len()
            && template.iter().zip(&segments).all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
    })?;
    Some(methods.join(", "))
}
