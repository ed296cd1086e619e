//! The YAML tree: what the loader (`load.rs`) builds and every later stage
//! (playbook, inventory, vars files) reads. Each node keeps its source and
//! position, so any stage can point at the offending line.

use std::sync::Arc;

use crate::diag::{Diagnostic, Pos, Source, Span};

/// How a string scalar was written. Plain scalars were resolved and stayed
/// strings; quoted and block scalars were always strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarStyle {
    Plain,
    Quoted,
    Block,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str {
        value: String,
        style: ScalarStyle,
        /// `!unsafe`: never templated.
        unsafe_: bool,
    },
    Seq(Vec<Node>),
    /// Keys in document order; merge keys (`<<`) are already applied and
    /// duplicate keys resolved (last wins, as in Ansible, with a warning).
    Map(Vec<(Node, Node)>),
}

/// One YAML node with its position in its source.
#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    /// The node's first character: the anchor or tag of a scalar or flow
    /// collection when it has one; the first key (or `-`) of a block
    /// collection; the first content line of a block scalar (so template line
    /// numbers count from there); the `*alias` that produced a copied node.
    pub pos: Pos,
    pub source: Arc<Source>,
}

/// A YAML-level error: a syntax error, an alias bomb, an unknown tag...
pub type YamlError = Diagnostic;

impl Node {
    pub fn span(&self) -> Span {
        Span::new(self.source.clone(), self.pos)
    }

    /// Map lookup by string key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, NodeKind::Null)
    }

    /// A short name for the node's type, for error messages ("a mapping").
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a float",
            NodeKind::Str { .. } => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// Converts to the engine's runtime value. `!unsafe` strings become
    /// [`crate::vars::unsafe_string`] values, which are never templated.
    pub fn to_value(&self) -> minijinja::Value {
        to_value(self)
    }

    /// A diagnostic pointing at this node.
    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(message).at(self.span())
    }
}

/// Converts a loaded node to the engine's runtime value.
fn to_value(node: &Node) -> minijinja::Value {
    use minijinja::Value;
    match &node.kind {
        NodeKind::Null => Value::from(()),
        NodeKind::Bool(b) => Value::from(*b),
        NodeKind::Int(i) => Value::from(*i),
        NodeKind::Float(f) => Value::from(*f),
        NodeKind::Str {
            value,
            unsafe_: true,
            ..
        } if crate::vault::is_encrypted(value.as_bytes()) => undecrypted(node, value),
        NodeKind::Str {
            value,
            unsafe_: true,
            ..
        } => crate::vars::unsafe_string(value),
        NodeKind::Str { value, .. } => {
            if node.source.encrypted {
                // Out of a whole vaulted file: diffs mask it (`vault::mask`).
                crate::vault::remember_secret(value);
            }
            Value::from(value.as_str())
        }
        NodeKind::Seq(items) => Value::from(items.iter().map(to_value).collect::<Vec<_>>()),
        // Keys keep their YAML type (`1:` stays an integer key, as in Ansible).
        // They are plain values even under `!unsafe`: keys are never templated.
        NodeKind::Map(entries) => {
            Value::from_pairs(entries.iter().map(|(k, v)| (key_value(k), to_value(v))))
        }
    }
}

/// An inline `!vault` the loader could not open (`vault_scalar` in
/// `load.rs`). The secrets may have been installed since; otherwise the value
/// is an invalid one naming where the vault was written.
fn undecrypted(node: &Node, ciphertext: &str) -> minijinja::Value {
    crate::vault::inline_value(ciphertext, &format_args!("vault at {:?}", node.span()))
}

fn key_value(node: &Node) -> minijinja::Value {
    match &node.kind {
        NodeKind::Str { value, .. } => minijinja::Value::from(value.as_str()),
        _ => to_value(node),
    }
}
