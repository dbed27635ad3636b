//! Finishing touches on the generated OpenAPI document, and what it says about each path.
//!
//! poem-openapi does not emit `additionalProperties: false` for `deny_unknown_fields`, so the
//! request-body schemas get it here: the server refuses unknown members, and the document
//! says so. The issuer-relative operations, routed once (`http::issuer`), are listed again
//! under `/t/{tenant}`, as every other tenant serves them. The same document answers which
//! methods a path allows (the `Allow` of a 405).

use std::sync::LazyLock;

use serde_json::Value;

/// Marks every request-body object schema as closed, and lists each issuer-relative
/// operation under `/t/{tenant}` too.
pub fn finish(spec: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(spec) else { return spec.to_string() };
    add_tenant_forms(&mut doc);
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

/// `/t/{tenant}/…` for every issuer-relative path, with the `tenant` parameter and an
/// operation id of its own (`…Tenant`).
fn add_tenant_forms(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    let issuer_relative = |p: &str| {
        crate::http::issuer::ISSUER_PREFIXES
            .iter()
            .any(|prefix| p.strip_prefix('/').is_some_and(|r| r.starts_with(prefix)))
            && !p.contains("{tenant}")
    };
    let forms: Vec<(String, Value)> = paths
        .iter()
        .filter(|(p, _)| issuer_relative(p))
        .map(|(p, ops)| {
            let mut ops = ops.clone();
            for op in ops.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                let Some(op) = op.as_object_mut() else { continue };
                if let Some(id) = op.get("operationId").and_then(Value::as_str).map(|id| format!("{id}Tenant")) {
                    op.insert("operationId".into(), Value::String(id));
                }
                let tenant = serde_json::json!({
                    "name": "tenant", "in": "path", "required": true,
                    "description": "The tenant whose issuer is `{public_url}/t/{tenant}` (`default` answers 308 to the root).",
                    "schema": {"type": "string", "maxLength": 63}
                });
                let params = op.entry("parameters").or_insert_with(|| Value::Array(Vec::new()));
                if let Some(list) = params.as_array_mut() {
                    list.insert(0, tenant);
                }
            }
            (format!("/t/{{tenant}}{p}"), ops)
        })
        .collect();
    for (path, ops) in forms {
        paths.insert(path, ops);
    }
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
