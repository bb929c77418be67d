//! RFC 9535 JSONPath strings for ACP `param` fields.

/// `$.a.b[0].c` from a serde_path_to_error path.
pub fn from_serde_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::from("$");
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } => push_member(&mut out, key),
            serde_path_to_error::Segment::Enum { variant } => push_member(&mut out, variant),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// Appends `.name` for plain member names, `['name']` for anything else (RFC 9535 normalized form).
pub fn push_member(out: &mut String, name: &str) {
    let plain = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        out.push('.');
        out.push_str(name);
    } else {
        out.push_str("['");
        out.push_str(&name.replace('\\', "\\\\").replace('\'', "\\'"));
        out.push_str("']");
    }
}

pub fn member(base: &str, name: &str) -> String {
    let mut out = base.to_owned();
    push_member(&mut out, name);
    out
}
