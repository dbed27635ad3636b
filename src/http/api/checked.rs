//! `Checked<T>`: a request body that names the field at fault. poem-openapi's own parse errors
//! say what was wrong but not where ("expected a string, found 5"); when parsing fails, the
//! JSON is walked against `T`'s schema to find the first missing, unknown or mistyped field.
//! The schema in the OpenAPI document is `T`'s own.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, Type};
use serde_json::Value;

#[derive(Debug)]
pub struct Checked<T>(pub T);

impl<T> std::ops::Deref for Checked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Type> Type for Checked<T> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;
    type RawValueType = T::RawValueType;
    type RawElementValueType = T::RawElementValueType;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry)
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        self.0.as_raw_value()
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        self.0.raw_element_iter()
    }
}

impl<T: ParseFromJSON> ParseFromJSON for Checked<T> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        // poem-openapi reads `null` as an absent optional member; the schema says nothing of
        // null, so a null member is refused rather than silently ignored.
        if let Some(path) = value.as_ref().and_then(|v| null_member(v, "")) {
            return Err(ParseError::custom(format!("field `{path}` must not be null")));
        }
        let copy = value.clone();
        T::parse_from_json(value).map(Checked).map_err(|e| {
            let mut registry = Registry::new();
            T::register(&mut registry);
            let found = copy.as_ref().and_then(|v| diagnose(&registry, &T::schema_ref(), v, ""));
            match found {
                Some((field, why)) => ParseError::custom(format!("field `{field}` {why}")),
                None => ParseError::custom(e.message()),
            }
        })
    }
}

/// The path of the first null member anywhere in `value` (no schema here admits null).
fn null_member(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Object(members) => members.iter().find_map(|(name, v)| {
            let here = join(path, name);
            if v.is_null() {
                Some(here)
            } else {
                null_member(v, &here)
            }
        }),
        Value::Array(items) => items.iter().find_map(|v| null_member(v, path)),
        _ => None,
    }
}

fn resolve<'a>(registry: &'a Registry, schema: &'a MetaSchemaRef) -> Option<&'a MetaSchema> {
    match schema {
        MetaSchemaRef::Inline(s) => Some(s),
        MetaSchemaRef::Reference(name) => registry.schemas.get(name.trim_start_matches("#/components/schemas/")),
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The first field of `value` that does not fit `schema`, and why.
fn diagnose(registry: &Registry, schema: &MetaSchemaRef, value: &Value, path: &str) -> Option<(String, String)> {
    let schema = resolve(registry, schema)?;
    let here = || if path.is_empty() { "body".to_string() } else { path.to_string() };
    match schema.ty {
        "object" if !schema.properties.is_empty() => {
            let Some(object) = value.as_object() else {
                return Some((here(), "must be a JSON object".into()));
            };
            for required in &schema.required {
                if object.get(*required).is_none_or(Value::is_null) {
                    return Some((join(path, required), "is required".into()));
                }
            }
            for key in object.keys() {
                if !schema.properties.iter().any(|(name, _)| name == key) {
                    return Some((join(path, key), "is not a known field".into()));
                }
            }
            for (name, sub) in &schema.properties {
                match object.get(*name) {
                    None | Some(Value::Null) => {}
                    Some(v) => {
                        if let Some(found) = diagnose(registry, sub, v, &join(path, name)) {
                            return Some(found);
                        }
                    }
                }
            }
            None
        }
        "string" => {
            let Some(s) = value.as_str() else {
                return Some((here(), format!("must be a string, not {}", kind(value))));
            };
            if !schema.enum_items.is_empty() && !schema.enum_items.iter().any(|e| e.as_str() == Some(s)) {
                let allowed: Vec<String> = schema.enum_items.iter().map(|e| e.to_string()).collect();
                return Some((here(), format!("must be one of {}", allowed.join(", "))));
            }
            None
        }
        "integer" if !(value.is_i64() || value.is_u64()) => {
            Some((here(), format!("must be an integer, not {}", kind(value))))
        }
        "number" if !value.is_number() => Some((here(), format!("must be a number, not {}", kind(value)))),
        "boolean" if !value.is_boolean() => Some((here(), format!("must be true or false, not {}", kind(value)))),
        "array" => {
            let Some(items) = value.as_array() else {
                return Some((here(), format!("must be an array, not {}", kind(value))));
            };
            let item_schema = schema.items.as_deref()?;
            items.iter().find_map(|item| diagnose(registry, item_schema, item, &here()))
        }
        _ => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The path of the first member that appears twice in one object of a JSON document
/// (`{"username":"a","username":"b"}`), which serde would otherwise resolve silently as "the
/// last one wins". `None` for a document without duplicates, or one that is not JSON (the
/// parser then reports that).
pub fn duplicate_member(body: &[u8]) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    /// Walks a value. The path is a stack of segments shared by every level and formatted
    /// only when a duplicate is found, so the walk costs linear time in the body's size.
    struct Walk<'s>(&'s RefCell<Vec<String>>);

    fn joined(stack: &[String]) -> String {
        let mut out = String::new();
        for seg in stack {
            if !out.is_empty() && !seg.starts_with('[') {
                out.push('.');
            }
            out.push_str(seg);
        }
        out
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0usize;
            loop {
                self.0.borrow_mut().push(format!("[{i}]"));
                let more = seq.next_element_seed(Walk(self.0))?.is_some();
                self.0.borrow_mut().pop();
                if !more {
                    return Ok(());
                }
                i += 1;
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if seen.contains(&key) {
                    let mut stack = self.0.borrow().clone();
                    stack.push(key);
                    return Err(serde::de::Error::custom(format!("\u{0}duplicate:{}", joined(&stack))));
                }
                self.0.borrow_mut().push(key.clone());
                seen.insert(key);
                let walked = map.next_value_seed(Walk(self.0));
                self.0.borrow_mut().pop();
                walked?;
            }
            Ok(())
        }
    }

    let stack = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    match Walk(&stack).deserialize(&mut de) {
        Ok(()) => None,
        Err(e) => {
            let text = e.to_string();
            text.split("\u{0}duplicate:").nth(1).map(|rest| rest.split(" at line ").next().unwrap_or(rest).to_string())
        }
    }
}

#[cfg(test)]
mod duplicate_tests {
    use super::duplicate_member;

    #[test]
    fn a_member_given_twice_is_found_with_its_path() {
        assert_eq!(duplicate_member(br#"{"username":"a","username":"b"}"#).as_deref(), Some("username"));
        assert_eq!(duplicate_member(br#"{"a":{"b":1,"b":2}}"#).as_deref(), Some("a.b"));
        assert_eq!(duplicate_member(br#"{"a":[{"x":1},{"x":1,"x":2}]}"#).as_deref(), Some("a[1].x"));
        assert_eq!(duplicate_member(br#"{"a":1,"b":{"a":2}}"#), None, "the same name in another object");
        assert_eq!(duplicate_member(b"not json"), None, "syntax errors are the parser's to report");
        // Linear in the body: a long key over many elements formats no path per element.
        let body = format!("{{\"{}\":[{}0]}}", "k".repeat(32 * 1024), "0,".repeat(16 * 1024));
        let started = std::time::Instant::now();
        assert_eq!(duplicate_member(body.as_bytes()), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
    }
}
