//! Templating: Jinja2 as Ansible uses it, on minijinja.
//!
//! The executor hands the [`Templar`] a [`Scope`] (the layered variables of one
//! host at one task) and asks it to render task arguments, evaluate `when`
//! expressions, or render template files. Variables are templated lazily, on
//! access, as Ansible does: `a: "{{ b }}"` resolves `b` only when `a` is used.
//!
//! Layout: `scope.rs` (layered variables and the lazy lookup object),
//! `filters.rs`, `tests.rs` (Jinja tests), `lookups.rs`, `native.rs` (keeping a
//! single-expression template's type).

use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::Value;

use crate::diag::{Diagnostic, Span};

mod filters;
mod lookups;
mod native;
mod scope;
mod tests;

pub use scope::Scope;

/// A map of variables at one precedence level.
pub type VarMap = IndexMap<String, Value>;

/// A template or expression failed. Carries where the template came from
/// (task file:line) and which host, when known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{diag}")]
pub struct TemplateError {
    pub diag: Diagnostic,
    /// The undefined variable, when that is the cause.
    pub undefined: Option<String>,
}

/// Where a template is evaluated, for error messages and relative lookups.
#[derive(Debug, Clone, Default)]
pub struct TemplateOrigin {
    /// The task or file position the template text came from.
    pub span: Option<Span>,
    /// A human label such as "task 'install base software'".
    pub label: Option<String>,
    pub host: Option<String>,
    /// Directories searched by `lookup('file')`, `template` etc., in order
    /// (role `files/`/`templates/`, role dir, playbook dir).
    pub search_paths: Vec<PathBuf>,
}

/// Marks a string as `!unsafe`: it is never templated, however many times it is
/// passed around.
pub fn unsafe_string(s: &str) -> Value {
    scope::unsafe_string(s)
}

/// True when `s` contains Jinja syntax and needs rendering.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// The templating engine, built once per run and shared by every host.
pub struct Templar {
    _private: (),
}

impl Templar {
    pub fn new() -> Arc<Templar> {
        todo!()
    }

    /// Renders a string. A template that is exactly one `{{ expr }}` keeps the
    /// expression's type (native types); anything else renders to a string.
    pub fn render_str(&self, _src: &str, _scope: &Scope, _origin: &TemplateOrigin) -> Result<Value, TemplateError> {
        todo!()
    }

    /// Renders a string to a string (for template files: no native types).
    pub fn render_text(&self, _src: &str, _scope: &Scope, _origin: &TemplateOrigin) -> Result<String, TemplateError> {
        todo!()
    }

    /// Recursively renders every string inside a value (task args, loop lists).
    /// `!unsafe` strings are left alone; `omit` removes map entries.
    pub fn render_value(&self, _v: &Value, _scope: &Scope, _origin: &TemplateOrigin) -> Result<Value, TemplateError> {
        todo!()
    }

    /// Evaluates a bare Jinja expression (`when`, `changed_when`...).
    pub fn eval(&self, _expr: &str, _scope: &Scope, _origin: &TemplateOrigin) -> Result<Value, TemplateError> {
        todo!()
    }

    /// Evaluates a list of bare conditions, all of which must hold. A bool
    /// literal is accepted as-is. Truthiness follows Ansible.
    pub fn eval_conditions(&self, _conds: &[String], _scope: &Scope, _origin: &TemplateOrigin) -> Result<bool, TemplateError> {
        todo!()
    }
}

/// The sentinel value `omit` evaluates to.
pub fn omit_token() -> &'static str {
    "__omit_place_holder__keel__"
}
