//! Subsonic's XML, written from the same JSON shape the JSON answers use: scalars are
//! attributes, objects child elements, arrays repeated elements named by their key, and
//! a `value` field the element's text (as in `genre`).

use serde_json::{json, Map, Value};

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Subsonic's XML from the JSON shape: scalars are attributes, objects child elements,
/// arrays repeated elements of their key's name, and a `value` field the text.
pub fn element(out: &mut String, name: &str, obj: &Map<String, Value>, xmlns: Option<&str>) {
    out.push('<');
    out.push_str(name);
    if let Some(ns) = xmlns {
        out.push_str(" xmlns=\"");
        out.push_str(ns);
        out.push('"');
    }
    for (k, v) in obj {
        if k == "value" {
            continue;
        }
        if let Some(s) = scalar(v) {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            escape(&s, out);
            out.push('"');
        }
    }
    out.push('>');
    if let Some(text) = obj.get("value").and_then(scalar) {
        escape(&text, out);
    }
    for (k, v) in obj {
        match v {
            Value::Object(child) => element(out, k, child, None),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::Object(child) => element(out, k, child, None),
                        other => {
                            let mut m = Map::new();
                            if let Some(s) = scalar(other) {
                                m.insert("value".into(), json!(s));
                            }
                            element(out, k, &m, None);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_has_scalars_as_attributes_and_arrays_as_repeated_elements() {
        let obj = json!({ "a": 1, "name": "x<y", "item": [{ "id": "1" }, { "id": "2" }], "one": { "b": true },
            "genre": [{ "value": "Rock & Roll", "songCount": 3 }] });
        let mut out = String::new();
        element(&mut out, "r", obj.as_object().unwrap(), None);
        assert_eq!(
            out,
            r#"<r a="1" name="x&lt;y"><genre songCount="3">Rock &amp; Roll</genre><item id="1"></item><item id="2"></item><one b="true"></one></r>"#
        );
    }
}
