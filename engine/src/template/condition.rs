//! A conditional as the playbook wrote it (`when`, `changed_when`,
//! `failed_when`, `until`, `break_when`, `assert`'s `that`): the reader makes
//! them, the [`Templar`](super::Templar) evaluates them. A YAML boolean is kept
//! as a boolean, because Ansible reports the failing condition as written
//! (`false_condition: false`, `assertion: false`), not as the text `False`.

use std::fmt;

use minijinja::Value;

use crate::diag::Span;

/// One condition: a bare Jinja expression, or a boolean literal.
#[derive(Clone)]
pub struct Condition {
    expr: String,
    literal: Option<bool>,
    /// Written as a YAML number (`when: 1`), which ansible-core refuses
    /// when it evaluates the condition.
    number: bool,
    /// Written as an `!unsafe` string (or taken from untrusted data), which
    /// ansible-core refuses to evaluate.
    untrusted: bool,
    /// Where the condition is written, when it came from a file.
    at: Option<Span>,
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
            && self.literal == other.literal
            && self.number == other.number
            && self.untrusted == other.untrusted
    }
}

impl Eq for Condition {}

impl Condition {
    /// A condition written as text (a bare Jinja expression).
    pub fn expr(text: impl Into<String>) -> Self {
        Condition {
            expr: text.into(),
            literal: None,
            number: false,
            untrusted: false,
            at: None,
        }
    }

    /// A condition written as a YAML boolean.
    pub fn literal(b: bool) -> Self {
        Condition {
            expr: if b { "True" } else { "False" }.to_string(),
            literal: Some(b),
            number: false,
            untrusted: false,
            at: None,
        }
    }

    /// A condition written as a YAML number: kept as its text for results,
    /// an error once evaluated ("Conditional expressions must be strings.").
    pub fn number(text: impl Into<String>) -> Self {
        Condition {
            number: true,
            ..Condition::expr(text)
        }
    }

    /// A condition whose text is untrusted (`!unsafe`, or a module's
    /// result): evaluating it is refused.
    pub fn untrusted(text: impl Into<String>) -> Self {
        Condition {
            untrusted: true,
            ..Condition::expr(text)
        }
    }

    /// Whether its text is untrusted.
    pub fn is_untrusted(&self) -> bool {
        self.untrusted
    }

    /// The condition, written at `span`.
    pub fn at(mut self, span: Span) -> Self {
        self.at = Some(span);
        self
    }

    /// Where the condition is written.
    pub fn span(&self) -> Option<&Span> {
        self.at.as_ref()
    }

    /// Whether it was written as a number.
    pub fn is_number(&self) -> bool {
        self.number
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
