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
    // Close every object schema reachable from a request body (nested ones too).
    let mut seen = std::collections::HashSet::new();
    while let Some(name) = closed.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(schema) = doc.pointer_mut(&format!("/components/schemas/{name}")).and_then(Value::as_object_mut)
        else {
            continue;
        };
        if schema.get("type").and_then(Value::as_str) == Some("object") {
            schema.insert("additionalProperties".into(), Value::Bool(false));
        }
        let mut refs = Vec::new();
        collect_refs(&Value::Object(schema.clone()), &mut refs);
        closed.extend(refs);
    }
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec.to_string())
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(name) = map.get("$ref").and_then(Value::as_str).and_then(|r| r.rsplit('/').next()) {
                out.push(name.to_string());
            }
            map.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
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
