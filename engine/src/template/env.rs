//! The environment builder: minijinja configured as Ansible's Jinja, with
//! Keel's filters, tests, lookups and `now()` registered. The top of
//! `template/` below the [`Templar`](super::Templar): it imports the files
//! it registers, and nothing imports it except the `Templar`, which hands
//! [`build`] to the rendering core as its [`BuildEnv`](super::render::BuildEnv).

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

use super::error::UNDEF_HINT;
use super::render::{omit_token, SyntaxOverrides};
use super::{datetime, filters, lookups, native, tests};

/// One environment: strict (`strict`) or chainable undefined values, with
/// syntax `o`.
pub(super) fn build(strict: bool, o: &SyntaxOverrides) -> Result<Environment<'static>, Error> {
    let mut env = Environment::new();
    // A template's "name" is its source text: the loader hands it back and
    // minijinja compiles it once and caches it. `{% include %}`, `{% import %}`
    // and `{% extends %}` inside a template file name other files: the path
    // join resolves those against the file's search directories and marks
    // the result, and the loader reads the file.
    // Like Jinja's default (which Ansible keeps for included files), an
    // included file loses one trailing newline.
    env.set_loader(|name| match lookups::included_path(name) {
        Some(path) => {
            let mut src = std::fs::read_to_string(path).map_err(|e| {
                Error::new(
                    ErrorKind::TemplateNotFound,
                    format!("could not read template {path}: {e}"),
                )
            })?;
            if src.ends_with("\r\n") {
                src.truncate(src.len() - 2);
            } else if src.ends_with(['\n', '\r']) {
                src.pop();
            }
            Ok(Some(src))
        }
        None => Ok(Some(name.to_string())),
    });
    env.set_path_join_callback(|name, _parent| lookups::join_include(name));
    env.set_auto_reload(false);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_debug(true);
    env.set_undefined_behavior(if strict {
        UndefinedBehavior::Strict
    } else {
        UndefinedBehavior::Chainable
    });
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(o.trim_blocks)
        .keep_trailing_newline(true)
        .variable_delimiters(o.variable.0.clone(), o.variable.1.clone())
        .comment_delimiters(o.comment.0.clone(), o.comment.1.clone())
        .build()?;
    env.set_syntax(syntax);
    env.set_unknown_method_callback(python_method);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_formatter(native::format_output);
    env.add_global("omit", Value::from(omit_token()));
    env.add_global("True", Value::from(true));
    env.add_global("False", Value::from(false));
    env.add_global("None", Value::from(()));
    // `undef(hint)`: an undefined value, for a default that must be
    // overridden. minijinja's undefined carries no message, so in the strict
    // environment the call itself fails as undefined, with the hint: using it
    // fails with the hint, as in ansible-core. An expression that tests or
    // defaults it is retried in the chainable environment, where it is a
    // plain undefined (`undef() | default(1)` is 1).
    env.add_function(
        "undef",
        move |hint: Option<Value>, kw: Kwargs| -> Result<Value, Error> {
            let hint = match hint {
                Some(h) => Some(h),
                None => kw.get::<Option<Value>>("hint")?,
            };
            kw.assert_all_used()?;
            let hint = match hint.filter(|h| !h.is_none()) {
                None => "Mandatory variable has not been overridden".to_string(),
                Some(h) => match h.as_str() {
                    Some("") => "Mandatory variable has not been overridden".to_string(),
                    Some(s) => s.to_string(),
                    None => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            "The 'hint' argument must be a str or None",
                        ))
                    }
                },
            };
            if !strict {
                return Ok(Value::UNDEFINED);
            }
            Err(Error::new(
                ErrorKind::UndefinedError,
                format!("{UNDEF_HINT}{hint}"),
            ))
        },
    );
    filters::register(&mut env);
    datetime::register(&mut env);
    tests::register(&mut env);
    lookups::register(&mut env);
    Ok(env)
}

/// Python methods called on values (`items.index(x)`, `'a,b'.split(',')`):
/// `index` on lists and strings here, the rest from minijinja-contrib's
/// Python compatibility layer.
fn python_method(
    state: &mut minijinja::State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, Error> {
    use minijinja::value::ValueKind;
    let not_found = |what: String| Error::new(ErrorKind::InvalidOperation, what);
    match (value.kind(), method, args) {
        (ValueKind::Seq, "index", [what, rest @ ..]) if rest.len() <= 1 => {
            let start = rest.first().and_then(Value::as_i64).unwrap_or(0).max(0) as usize;
            for (i, item) in value.try_iter()?.enumerate().skip(start) {
                if item == *what {
                    return Ok(Value::from(i));
                }
            }
            Err(not_found(format!(
                "{} is not in list",
                native::python_repr(what)
            )))
        }
        (ValueKind::String, "index", [what]) => {
            let hay = value.as_str().unwrap_or_default();
            let needle = what.as_str().unwrap_or_default();
            match hay.find(needle) {
                Some(byte) => Ok(Value::from(hay[..byte].chars().count())),
                None => Err(not_found("substring not found".into())),
            }
        }
        _ => minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args),
    }
}
