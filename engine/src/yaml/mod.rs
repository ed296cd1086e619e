//! YAML loading with YAML 1.1 semantics, on top of `saphyr-parser`'s event stream.
//!
//! Playbooks, roles, inventories and vars files all come through here. The
//! parser's events are turned into a [`Node`] tree by our own resolver so that
//! scalars follow YAML 1.1 (the dialect Ansible reads): `yes`/`no`/`on`/`off`
//! are booleans, `0644` is octal, `<<` merges keys. Every node keeps its
//! position so later stages can point at the offending line.
//!
//! Layout: `node.rs` is the tree itself (the type every later stage reads);
//! `resolve.rs` decides what a plain scalar means; `load.rs` builds the tree
//! (anchors, aliases with an expansion budget, merge keys, tags).

use std::path::Path;

use crate::diag::{Diagnostic, Pos, Source};

mod load;
mod node;
mod resolve;

pub use load::{
    load_file, load_file_with_warnings, load_source, load_str, load_str_with_warnings, LoadOptions,
    Loaded,
};
pub use node::{Node, NodeKind, ScalarStyle, YamlError};
pub use resolve::resolve_plain;

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
