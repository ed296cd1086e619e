//! Builds [`Node`] trees from saphyr-parser events. (To be implemented.)
use std::path::Path;

use super::{Node, YamlError};

/// Limits for loading untrusted YAML.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Maximum number of nodes produced by alias expansion in one document.
    pub max_alias_expansion: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { max_alias_expansion: 100_000 }
    }
}

pub fn load_file(_path: &Path, _opts: &LoadOptions) -> Result<Vec<Node>, YamlError> {
    todo!()
}

pub fn load_str(_name: &str, _text: &str, _opts: &LoadOptions) -> Result<Vec<Node>, YamlError> {
    todo!()
}

pub(crate) fn to_value(_node: &Node) -> minijinja::Value {
    todo!()
}
