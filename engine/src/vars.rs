//! Variable values shared by every layer: the variable map and the `!unsafe`
//! string marker.
//!
//! The YAML loader makes unsafe strings, inventories and playbooks carry
//! `VarMap`s, transport specs read connection variables from them and the
//! templating engine renders them. This module sits below all of those and
//! imports none of them, so that none of them has to import another just for
//! a value type.

use indexmap::IndexMap;
use minijinja::value::ValueKind;
use minijinja::Value;

/// A map of variables at one precedence level.
pub type VarMap = IndexMap<String, Value>;

/// Marks a string as `!unsafe`: it is never templated, however many times it is
/// passed around.
///
/// The mark is minijinja's "safe string" flag: Keel renders with autoescape
/// off, so the flag means nothing else and travels with the value through
/// copies, lists and maps.
pub fn unsafe_string(s: &str) -> Value {
    Value::from_safe_string(s.to_string())
}

/// True for a string made by [`unsafe_string`].
pub fn is_unsafe(v: &Value) -> bool {
    v.kind() == ValueKind::String && v.is_safe()
}

/// A registered result as the variables see it: every string in it marked
/// `!unsafe`, so text a module or an error message returned (which may quote
/// a `{{ template }}`) is never templated when it is read back, as
/// ansible-core treats task results as untrusted data.
pub fn untrusted(v: &Value) -> Value {
    match v.kind() {
        ValueKind::String if !v.is_safe() => unsafe_string(v.as_str().unwrap_or_default()),
        ValueKind::Seq => match v.try_iter() {
            Ok(items) => Value::from(items.map(|i| untrusted(&i)).collect::<Vec<_>>()),
            Err(_) => v.clone(),
        },
        ValueKind::Map => match v.try_iter() {
            Ok(keys) => Value::from_object(
                keys.map(|k| {
                    let item = v.get_item(&k).unwrap_or_default();
                    (k, untrusted(&item))
                })
                .collect::<IndexMap<Value, Value>>(),
            ),
            Err(_) => v.clone(),
        },
        _ => v.clone(),
    }
}
