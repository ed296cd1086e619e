//! Source positions and diagnostics shared by every stage that reads user files.
//!
//! A [`Diagnostic`] renders as `file:line:col: message`, followed by the offending
//! source line, a caret under the column, and an optional hint. YAML, playbook,
//! inventory and template errors all carry one, so the user always sees where.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file (or other named text) that positions point into.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
    /// The text was decrypted from a vault: diagnostics name the place but
    /// never show the line (as ansible-core: "source not shown").
    pub encrypted: bool,
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Arc<Source> {
        Arc::new(Source {
            path: path.into(),
            text: text.into(),
            encrypted: false,
        })
    }

    /// A source whose text came out of a vault.
    pub fn decrypted(path: impl Into<PathBuf>, text: impl Into<String>) -> Arc<Source> {
        Arc::new(Source {
            path: path.into(),
            text: text.into(),
            encrypted: true,
        })
    }

    /// The text of 1-based line `line`, without its newline.
    pub fn line(&self, line: u32) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)? as usize)
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

/// A position inside a known source.
#[derive(Clone)]
pub struct Span {
    pub source: Arc<Source>,
    pub pos: Pos,
}

impl Span {
    pub fn new(source: Arc<Source>, pos: Pos) -> Span {
        Span { source, pos }
    }
    pub fn path(&self) -> &Path {
        &self.source.path
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.source.path.display(),
            self.pos.line,
            self.pos.col
        )
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.source.path.display(),
            self.pos.line,
            self.pos.col
        )
    }
}

/// A user-facing error or warning with an optional location and hint.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub span: Option<Span>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            span: None,
            hint: None,
        }
    }
    pub fn at(mut self, span: Span) -> Diagnostic {
        self.span = Some(span);
        self
    }
    pub fn at_opt(mut self, span: Option<Span>) -> Diagnostic {
        if self.span.is_none() {
            self.span = span;
        }
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.span {
            Some(span) => {
                writeln!(f, "{}: {}", span, self.message)?;
                if span.source.encrypted {
                    write!(f, "(source not shown: content encrypted)")?;
                } else if let Some(text) = span.source.line(span.pos.line) {
                    let num = span.pos.line.to_string();
                    let pad = " ".repeat(num.len());
                    writeln!(f, "{pad} |")?;
                    writeln!(f, "{num} | {text}")?;
                    // The caret lines up with the column, counting tabs as one char
                    // but echoing them so the terminal expands them the same way.
                    let lead: String = text
                        .chars()
                        .take(span.pos.col.saturating_sub(1) as usize)
                        .map(|c| if c == '\t' { '\t' } else { ' ' })
                        .collect();
                    write!(f, "{pad} | {lead}^")?;
                }
            }
            None => write!(f, "{}", self.message)?,
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// The closest candidate to `word` among `candidates`, if it is close enough to
/// be a plausible typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&str, f64)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(word, c);
        if score > 0.8 && best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}
