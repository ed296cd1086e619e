//! The plain types every templating file shares: [`TemplateError`], the
//! [`TemplateOrigin`] a render reports against, and [`error_msg`], which
//! words an error with that origin. The lowest file of `template/`: it
//! imports nothing from the folder.

use std::path::PathBuf;

use crate::diag::{Diagnostic, Span};

/// A template or expression failed. Carries where the template came from
/// (task file:line) and which host, when known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{diag}")]
pub struct TemplateError {
    pub diag: Diagnostic,
    /// The undefined variable, when that is the cause.
    pub undefined: Option<String>,
}

impl TemplateError {
    /// The error with a hint line (what to do about it).
    pub fn hint(self, hint: impl Into<String>) -> TemplateError {
        TemplateError {
            diag: self.diag.hint(hint),
            ..self
        }
    }
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

/// Detail prefix the `mandatory` filter raises with, so that error reporting
/// (`render.rs`) can word it like Ansible without knowing the filter.
pub(crate) const MANDATORY: &str = "mandatory variable not defined:";

/// Detail of the error a filter or test raises when given an undefined value;
/// error reporting swaps in why that value was undefined.
pub(crate) const USED_UNDEFINED: &str = "an undefined value was used";

/// Detail prefix of the undefined value `undef(hint)` makes: using it fails
/// with the hint (or ansible-core's default) as the whole message.
pub(crate) const UNDEF_HINT: &str = "undef() used:";

/// Detail of the error printing a list or dict that holds an undefined value
/// raises; error reporting (`render.rs`) swaps in why that value was undefined.
pub(crate) const CONTAINED_UNDEFINED: &str = "a printed value holds an undefined value";

/// Builds a [`TemplateError`] with the origin's place, label and host.
pub(crate) fn error_msg(
    origin: &TemplateOrigin,
    message: String,
    undefined: Option<String>,
) -> TemplateError {
    let mut msg = message;
    if let Some(label) = &origin.label {
        msg.push_str(&format!(" (in {label}"));
        if let Some(host) = &origin.host {
            msg.push_str(&format!(", host {host}"));
        }
        msg.push(')');
    } else if let Some(host) = &origin.host {
        msg.push_str(&format!(" (host {host})"));
    }
    TemplateError {
        diag: Diagnostic::new(msg).at_opt(origin.span.clone()),
        undefined,
    }
}
