//! A conditional as the playbook wrote it (`when`, `changed_when`,
//! `failed_when`, `until`, `break_when`, `assert`'s `that`): the reader makes
//! them, the [`Templar`](super::Templar) evaluates them. A YAML boolean is kept
//! as a boolean, because Ansible reports the failing condition as written
//! (`false_condition: false`, `assertion: false`), not as the text `False`.

use std::fmt;

use minijinja::Value;

/// One condition: a bare Jinja expression, or a boolean literal.
#[derive(Clone, PartialEq, Eq)]
pub struct Condition {
    expr: String,
    literal: Option<bool>,
}

impl Condition {
    /// A condition written as text (a bare Jinja expression).
    pub fn expr(text: impl Into<String>) -> Self {
        Condition {
            expr: text.into(),
            literal: None,
        }
    }

    /// A condition written as a YAML boolean.
    pub fn literal(b: bool) -> Self {
        Condition {
            expr: if b { "True" } else { "False" }.to_string(),
            literal: Some(b),
        }
    }

    /// The expression text (`True`/`False` for a boolean).
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The boolean, when the condition was written as one.
    pub fn as_literal(&self) -> Option<bool> {
        self.literal
    }

    /// The condition as written, for results (`false_condition`, `assertion`).
    pub fn as_value(&self) -> Value {
        match self.literal {
            Some(b) => Value::from(b),
            None => Value::from(self.expr.as_str()),
        }
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.expr, f)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}
