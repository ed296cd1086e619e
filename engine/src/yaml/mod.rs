//! YAML loading with YAML 1.1 semantics, on top of `saphyr-parser`'s event stream.
//!
//! Playbooks, roles, inventories and vars files all come through here. The
//! parser's events are turned into a [`Node`] tree by our own resolver so that
//! scalars follow YAML 1.1 (the dialect Ansible reads): `yes`/`no`/`on`/`off`
//! are booleans, `0644` is octal, `<<` merges keys. Every node keeps its
//! position so later stages can point at the offending line.
//!
//! Layout: `resolve.rs` decides what a plain scalar means; `load.rs` builds the
//! tree (anchors, aliases with an expansion budget, merge keys, tags).

use std::path::Path;
use std::sync::Arc;

use crate::diag::{Diagnostic, Pos, Source, Span};

mod load;
mod resolve;

pub use load::{
    load_file, load_file_with_warnings, load_source, load_str, load_str_with_warnings, LoadOptions,
    Loaded,
};
pub use resolve::resolve_plain;

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
    /// [`crate::template::unsafe_string`] values, which are never templated.
    pub fn to_value(&self) -> minijinja::Value {
        load::to_value(self)
    }

    /// A diagnostic pointing at this node.
    pub fn error(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(message).at(self.span())
    }
}

/// Loads a file that must hold exactly one document (empty files give `Null`).
pub fn load_one(path: &Path) -> Result<Node, YamlError> {
    load_one_with_warnings(path).map(|(node, _)| node)
}

/// [`load_one`], also returning the loader's warnings (duplicate keys).
pub fn load_one_with_warnings(path: &Path) -> Result<(Node, Vec<Diagnostic>), YamlError> {
    let Loaded { mut docs, warnings } = load_file_with_warnings(path, &LoadOptions::default())?;
    match docs.len() {
        0 => Ok((
            Node {
                kind: NodeKind::Null,
                pos: Pos { line: 1, col: 1 },
                source: Source::new(path, String::new()),
            },
            warnings,
        )),
        1 => Ok((docs.remove(0), warnings)),
        _ => Err(docs[1].error("expected a single YAML document, found several")),
    }
}
