//! Hostile-input limits checked at the edge, before anything is validated, stored or echoed.
//!
//! PostgreSQL cannot store U+0000 in `text` or `jsonb`: a NUL that reached a query used to surface as an internal
//! fault. Deep nesting costs stack in every recursive walker after the parser, and a huge string costs memory in
//! every copy. Each is refused here with the JSONPath of the offending value, so no malformed request gets as far
//! as the database. The messages never quote the value itself (it may be what the database cannot hold).

use serde_json::Value;

use crate::jsonpath;

/// JSON nesting allowed in a request body. ACP bodies nest about six levels deep (intent-trace metadata is the
/// deepest); 32 leaves room for extensions without letting a body exhaust a walker's stack. serde_json stops
/// at 128 on its own before this check runs.
pub const MAX_JSON_DEPTH: usize = 32;

/// The longest string accepted anywhere in a body, in characters. Every field the server reads has a tighter
/// `maxLength` in its schema; this bounds unknown fields, which are ignored but still parsed.
pub const MAX_STRING_CHARS: usize = 16_384;

/// What is wrong with a value and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub param: String,
    pub message: String,
}

/// Checks every string (keys included) and the nesting depth of `value`.
pub fn check_json(value: &Value) -> Result<(), Refusal> {
    walk(value, "$".to_owned(), 1)
}

fn walk(value: &Value, at: String, depth: usize) -> Result<(), Refusal> {
    if depth > MAX_JSON_DEPTH {
        return Err(Refusal {
            message: format!("{at}: the body is nested more than {MAX_JSON_DEPTH} levels deep"),
            param: at,
        });
    }
    match value {
        Value::String(s) => check_text(s, &at),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| walk(item, format!("{at}[{i}]"), depth + 1)),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            // A NUL in a key is spelled `\u0000` in the path: the refusal must not carry what it refuses.
            let member = jsonpath::member(&at, &key.replace('\0', "\\u0000"));
            check_text(key, &member)?;
            walk(item, member, depth + 1)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// A string PostgreSQL can store and a person can have meant: no NUL, not absurdly long.
pub fn check_text(s: &str, at: &str) -> Result<(), Refusal> {
    if s.contains('\0') {
        return Err(Refusal {
            param: at.to_owned(),
            message: format!("{at}: contains a NUL character (U+0000), which is not allowed in any string"),
        });
    }
    if s.len() > MAX_STRING_CHARS && s.chars().count() > MAX_STRING_CHARS {
        return Err(Refusal {
            param: at.to_owned(),
            message: format!("{at}: longer than {MAX_STRING_CHARS} characters"),
        });
    }
    Ok(())
}

/// Whether `id` can name something this server created: 1 to 128 ASCII letters, digits, `_`, `-`, `.` or `:`.
/// Anything else cannot exist, so it is 404 without asking the database.
pub fn plausible_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Whether a raw (still percent-encoded) URI component decodes to a control character or to bytes that are not
/// UTF-8. Such a path names nothing; such a query value must not reach a query.
pub fn uri_component_is_hostile(raw: &str) -> bool {
    if raw.bytes().any(|b| b.is_ascii_control()) {
        return true;
    }
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    match String::from_utf8(decoded) {
        Ok(text) => text.chars().any(char::is_control),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_nul_anywhere_is_refused_where_it_is() {
        let cases = [
            (json!({"a": "x\u{0}y"}), "$.a"),
            (json!({"a": [{"b": "\u{0}"}]}), "$.a[0].b"),
            (json!({"k\u{0}ey": 1}), r"$['k\\u0000ey']"),
            (
                json!({"selected": [{"item_ids": ["ok", "n\u{0}"]}]}),
                "$.selected[0].item_ids[1]",
            ),
        ];
        for (value, param) in cases {
            let refusal = check_json(&value).unwrap_err();
            assert_eq!(refusal.param, param, "{value}");
            assert!(refusal.message.contains("NUL"), "{}", refusal.message);
        }
        assert!(check_json(&json!({"a": "fine \u{1F600} ü"})).is_ok());
    }

    #[test]
    fn depth_and_length_are_bounded() {
        let mut deep = json!("leaf");
        for _ in 0..MAX_JSON_DEPTH {
            deep = json!([deep]);
        }
        let refusal = check_json(&deep).unwrap_err();
        assert!(refusal.message.contains("nested"), "{}", refusal.message);
        let mut ok = json!("leaf");
        for _ in 0..MAX_JSON_DEPTH - 1 {
            ok = json!([ok]);
        }
        assert!(check_json(&ok).is_ok());
        let long = "é".repeat(MAX_STRING_CHARS + 1);
        assert_eq!(check_json(&json!({"x": long})).unwrap_err().param, "$.x");
        assert!(check_json(&json!({"x": "é".repeat(MAX_STRING_CHARS)})).is_ok());
    }

    #[test]
    fn ids_of_the_wrong_shape_cannot_exist() {
        for good in ["cs_01a2479774ca768bb4bd8c256b05692f", "ord_1", "agent-2", "a.b:c"] {
            assert!(plausible_id(good), "{good}");
        }
        for bad in ["", "a\u{0}", "a b", "a/b", "ü", &"x".repeat(129)] {
            assert!(!plausible_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn hostile_uri_components_are_spotted_encoded_or_not() {
        for hostile in ["%00", "a%0Ab", "%1f", "%7F", "%FF", "%C3", "a\tb"] {
            assert!(uri_component_is_hostile(hostile), "{hostile}");
        }
        for fine in ["cs_1", "a%20b", "%C3%BC", "100%", "%zz", "status=completed&limit=5"] {
            assert!(!uri_component_is_hostile(fine), "{fine}");
        }
    }
}
