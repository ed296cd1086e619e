//! What a module works with and hands back: the templated [`Args`] it
//! reads, the [`ModuleResult`] it reports and the [`ModuleError`] that stops
//! it. The lowest file of `modules/`: it imports nothing from the folder, so
//! argument parsing, the kit and every module can build on it.

use indexmap::IndexMap;
use minijinja::Value;

use crate::transport::TransportError;
use crate::vars::VarMap;

/// A unified diff of one file (or a before/after pair of anything).
#[derive(Debug, Clone, Default)]
pub struct FileDiff {
    pub before_header: String,
    pub after_header: String,
    pub before: String,
    pub after: String,
}

/// What a module reports. `data` holds the module's return values (`rc`,
/// `stdout`, `stat`, `path`...), which `register` exposes next to `changed`,
/// `failed`, `msg`.
#[derive(Debug, Clone, Default)]
pub struct ModuleResult {
    pub changed: bool,
    pub failed: bool,
    pub skipped: bool,
    pub msg: Option<String>,
    pub data: IndexMap<String, Value>,
    pub diff: Vec<FileDiff>,
    /// Facts to set on the host (`set_fact`, `setup`, `include_vars`).
    pub facts: Option<VarMap>,
    /// `set_fact` with `cacheable`: no different here, kept for the result.
    pub facts_cacheable: bool,
}

impl ModuleResult {
    pub fn ok() -> Self {
        Self::default()
    }
    pub fn changed(changed: bool) -> Self {
        ModuleResult {
            changed,
            ..Default::default()
        }
    }
    pub fn failed(msg: impl Into<String>) -> Self {
        ModuleResult {
            failed: true,
            msg: Some(msg.into()),
            ..Default::default()
        }
    }
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_string(), value.into());
        self
    }
    pub fn with_msg(mut self, msg: impl Into<String>) -> Self {
        self.msg = Some(msg.into());
        self
    }
}

/// Why a module could not run: bad arguments (a task-level failure), or the
/// host went away (the host becomes unreachable).
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("{0}")]
    Args(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Template(#[from] crate::template::TemplateError),
    #[error("{0}")]
    Failed(String),
}

/// The module arguments after templating: a map of name to value.
pub type Args = IndexMap<String, Value>;
