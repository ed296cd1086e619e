//! YAML 1.1 plain-scalar resolution. (To be implemented.)
use super::NodeKind;

/// What an unquoted scalar means under YAML 1.1.
pub fn resolve_plain(s: &str) -> NodeKind {
    NodeKind::Str { value: s.to_string(), style: super::ScalarStyle::Plain, unsafe_: false }
}
