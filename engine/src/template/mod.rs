//! Templating: Jinja2 as Ansible uses it, on minijinja.
//!
//! The executor hands the [`Templar`] a [`Scope`] (the layered variables of one
//! host at one task) and asks it to render task arguments, evaluate `when`
//! expressions, or render template files. Variables are templated lazily, on
//! access, as Ansible does: `a: "{{ b }}"` resolves `b` only when `a` is used.
//!
//! Layout: `scope.rs` (layered variables and the lazy lookup object),
//! `filters.rs`, `tests.rs` (Jinja tests), `lookups.rs`, `native.rs` (keeping a
//! single-expression template's type, Python-style printing and escapes, value
//! helpers), `pyre.rs` (Python `re` semantics), `datetime.rs` (`now()`,
//! `strftime`, `to_datetime`).
//!
//! Undefined variables follow Ansible: printing, iterating or testing the truth
//! of an undefined value fails and names it, while `x.y is defined` and
//! `x.y | default(..)` work even when `x` itself is undefined. minijinja has no
//! single mode for that, so templates run in its strict mode and, only when
//! that fails on an undefined value in a template that guards with
//! `defined`/`default`, once more in its chainable mode (which still refuses to
//! print an undefined value).
//!
//! Compiled templates are cached by source text inside the two minijinja
//! environments, so the same task arguments rendered for hundreds of hosts are
//! parsed once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

use crate::diag::{Diagnostic, Span};
use crate::vars::VarMap;

mod datetime;
mod filters;
mod lookups;
mod native;
mod pyre;
mod scope;
mod tests;

pub use native::{
    is_truthy, python_repr, to_bool, to_nice_json, to_nice_yaml, to_yaml, value_from_json,
    value_to_json,
};
pub use scope::Scope;

use scope::RenderCtx;

/// A map with arbitrary keys, the shape of a Jinja dict.
pub(crate) type ValueMap = IndexMap<Value, Value>;

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

/// True when `s` contains Jinja syntax and needs rendering.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// The sentinel value `omit` evaluates to.
pub fn omit_token() -> &'static str {
    "__omit_place_holder__keel__"
}

/// The two minijinja environments (see the module docs) shared by every render.
pub(crate) struct Inner {
    strict: Environment<'static>,
    chain: Environment<'static>,
}

/// The templating engine, built once per run and shared by every host.
pub struct Templar {
    inner: Arc<Inner>,
}

/// The local variable the expression wrapper stores its result in.
const RESULT_VAR: &str = "__keel_result";

/// Syntax a `template` lookup may override (its `variable_start_string`,
/// `comment_start_string`... and `trim_blocks` options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxOverrides {
    pub variable: (String, String),
    pub comment: (String, String),
    pub trim_blocks: bool,
}

impl Default for SyntaxOverrides {
    fn default() -> Self {
        SyntaxOverrides {
            variable: ("{{".into(), "}}".into()),
            comment: ("{#".into(), "#}".into()),
            trim_blocks: true,
        }
    }
}

impl Inner {
    /// Environments with other syntax, for a `template` lookup that asks for
    /// it. Built per call: such lookups are rare.
    pub(crate) fn with_syntax(o: &SyntaxOverrides) -> Result<Inner, Error> {
        Ok(Inner {
            strict: build_env_with(true, o)?,
            chain: build_env_with(false, o)?,
        })
    }
}

fn build_env(strict: bool) -> Environment<'static> {
    build_env_with(strict, &SyntaxOverrides::default()).expect("default delimiters are valid")
}

fn build_env_with(strict: bool, o: &SyntaxOverrides) -> Result<Environment<'static>, Error> {
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
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    minijinja_contrib::add_to_environment(&mut env);
    env.set_formatter(native::format_output);
    env.add_global("omit", Value::from(omit_token()));
    env.add_global("True", Value::from(true));
    env.add_global("False", Value::from(false));
    env.add_global("None", Value::from(()));
    // `undef(hint)`: an undefined value, for a default that must be overridden.
    env.add_function("undef", |_hint: Option<Value>| Value::UNDEFINED);
    filters::register(&mut env);
    datetime::register(&mut env);
    tests::register(&mut env);
    lookups::register(&mut env);
    Ok(env)
}

impl Templar {
    pub fn new() -> Arc<Templar> {
        Arc::new(Templar {
            inner: Arc::new(Inner {
                strict: build_env(true),
                chain: build_env(false),
            }),
        })
    }

    fn ctx(&self, scope: &Scope, origin: &TemplateOrigin) -> Arc<RenderCtx> {
        RenderCtx::new(self.inner.clone(), scope, origin)
    }

    /// Renders a string. A template that is exactly one `{{ expr }}` keeps the
    /// expression's type (native types); anything else renders to a string.
    pub fn render_str(
        &self,
        src: &str,
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<Value, TemplateError> {
        if !is_template(src) {
            return Ok(Value::from(src));
        }
        render_str_in(&self.ctx(scope, origin), src)
    }

    /// Renders a string to a string (for template files: no native types).
    pub fn render_text(
        &self,
        src: &str,
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<String, TemplateError> {
        if !is_template(src) {
            return Ok(src.to_string());
        }
        render_text_in(&self.ctx(scope, origin), src)
    }

    /// Reads and renders a template file (the `template` module, the `template`
    /// lookup). Relative paths are resolved against the origin's search paths,
    /// trying a `templates/` subdirectory first.
    pub fn render_file(
        &self,
        path: &Path,
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<String, TemplateError> {
        let ctx = self.ctx(scope, origin);
        lookups::render_template_file(&ctx, path)
    }

    /// Renders the text of the template file `file` (the `template` module),
    /// with `{% include %}` searching the file's directory, then the origin's
    /// search stack (each directory's `templates/`, then itself).
    pub fn render_template_text(
        &self,
        text: &str,
        file: &Path,
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<String, TemplateError> {
        let dirs = lookups::include_dirs(file, &origin.search_paths);
        lookups::with_include_dirs(dirs, || self.render_text(text, scope, origin))
    }

    /// Recursively renders every string inside a value (task args, loop lists).
    /// `!unsafe` strings are left alone; `omit` removes map entries.
    pub fn render_value(
        &self,
        v: &Value,
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<Value, TemplateError> {
        if !scope::needs_render(v) {
            return Ok(v.clone());
        }
        render_value_in(&self.ctx(scope, origin), v)
    }

    /// Evaluates a bare Jinja expression (`when`, `changed_when`...).
    pub fn eval(
        &self,
        expr: &str,
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<Value, TemplateError> {
        eval_bare_in(&self.ctx(scope, origin), expr)
    }

    /// Evaluates a list of bare conditions, all of which must hold. A bool
    /// literal is accepted as-is. Truthiness follows Python, as Ansible's does.
    pub fn eval_conditions(
        &self,
        conds: &[String],
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<bool, TemplateError> {
        let mut ctx = None;
        for cond in conds {
            let c = cond.trim();
            let held = match c {
                "" | "true" | "True" | "yes" => true,
                "false" | "False" | "no" => false,
                _ => {
                    let ctx = ctx.get_or_insert_with(|| self.ctx(scope, origin));
                    let templated = is_template(c);
                    let expr = if templated {
                        tracing::warn!(
                            "conditional statements should not include jinja2 templating delimiters such as {{{{ }}}} or {{% %}}. Found: {c}"
                        );
                        match native::single_expression(c) {
                            Some(inner) => inner.to_string(),
                            None => render_text_in(ctx, c)?,
                        }
                    } else {
                        c.to_string()
                    };
                    let v = if templated {
                        eval_in(ctx, &expr)?
                    } else {
                        eval_bare_in(ctx, &expr)?
                    };
                    is_truthy(&v)
                }
            };
            if !held {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs a lookup plugin (`lookup('name', ...)`, `with_<name>` loops) and
    /// returns its list of results. `terms` are already templated: a list of
    /// terms, or a single term. For `with_items` the executor passes the loop
    /// value and gets it back flattened one level; `with_list` returns it as
    /// is; `with_dict` yields `{key, value}` items; `with_nested`/`with_together`
    /// take a list of lists.
    pub fn run_lookup(
        &self,
        name: &str,
        terms: Value,
        kwargs: &VarMap,
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<Vec<Value>, TemplateError> {
        let ctx = self.ctx(scope, origin);
        let terms = match terms.kind() {
            ValueKind::Seq => terms.try_iter().map(|i| i.collect()).unwrap_or_default(),
            ValueKind::Undefined | ValueKind::None => Vec::new(),
            _ => vec![terms],
        };
        lookups::run(&ctx, name, terms, kwargs).map_err(|e| convert_error(&ctx, e, None))
    }

    /// Number of compiled templates currently cached (for tests/benchmarks).
    pub fn names_known(&self) -> usize {
        self.inner.strict.templates().count()
    }
}

// ---- rendering against an existing context (also used for lazy variables) ----

fn ctx_value(ctx: &Arc<RenderCtx>) -> Value {
    Value::from_dyn_object(ctx.clone())
}

/// True when a strict-mode undefined error may be a chained lookup that
/// Ansible would allow (`x.y is defined`, `x.y | default(...)`).
fn may_chain(src: &str, err: &Error) -> bool {
    err.kind() == ErrorKind::UndefinedError
        && (src.contains("defined")
            || src.contains("default")
            || src.contains("|d(")
            || src.contains("| d("))
}

/// Renders `src` to text with the given context, retrying in chainable mode as
/// described in the module docs.
fn render_raw(ctx: &Arc<RenderCtx>, src: &str) -> Result<String, TemplateError> {
    render_escaped(ctx, &native::literal_backslashes(src))
}

/// Renders a template file's text: unlike templates in task arguments, a
/// file's string literals take Python's escapes (Ansible renders files with
/// `escape_backslashes=False`).
pub(crate) fn render_file_text_in(
    ctx: &Arc<RenderCtx>,
    src: &str,
    python_escapes: bool,
) -> Result<String, TemplateError> {
    if python_escapes {
        render_escaped(ctx, &native::python_escapes_in_blocks(src))
    } else {
        render_escaped(ctx, src)
    }
}

/// [`render_raw`] of a source whose backslashes are already dealt with.
fn render_escaped(ctx: &Arc<RenderCtx>, src: &str) -> Result<String, TemplateError> {
    let v = ctx_value(ctx);
    let first = ctx
        .inner
        .strict
        .get_template(src)
        .and_then(|t| t.render(&v));
    match first {
        Ok(s) => Ok(s),
        Err(e) if may_chain(src, &e) => {
            match ctx.inner.chain.get_template(src).and_then(|t| t.render(&v)) {
                Ok(s) => Ok(s),
                Err(_) => Err(convert_error(ctx, e, Some(src))),
            }
        }
        Err(e) => Err(convert_error(ctx, e, Some(src))),
    }
}

/// Evaluates a bare expression to a value.
/// Evaluates an expression to a value. `bare`: the expression is Jinja code
/// of its own (a conditional), whose string literals take Python's escapes;
/// otherwise it came from inside `{{ }}`, where backslashes are literal.
fn eval_raw(ctx: &Arc<RenderCtx>, expr: &str, bare: bool) -> Result<Value, TemplateError> {
    let wrapper = if bare {
        format!(
            "{{% set {RESULT_VAR} = ({}) %}}",
            native::python_escapes(expr)
        )
    } else {
        let w = format!("{{% set {RESULT_VAR} = ({expr}) %}}");
        native::literal_backslashes(&w).into_owned()
    };
    let wrapper = wrapper.as_str();
    let v = ctx_value(ctx);
    let run = |env: &Environment<'static>| -> Result<Value, Error> {
        let t = env.get_template(wrapper)?;
        let captured = t.render_captured(&v)?;
        Ok(captured
            .state()
            .lookup(RESULT_VAR)
            .unwrap_or(Value::UNDEFINED))
    };
    let result = match run(&ctx.inner.strict) {
        Ok(r) => r,
        Err(e) if may_chain(expr, &e) => match run(&ctx.inner.chain) {
            Ok(r) => r,
            Err(_) => return Err(convert_error(ctx, e, Some(&format!("{{{{ {expr} }}}}")))),
        },
        Err(e) => return Err(convert_error(ctx, e, Some(&format!("{{{{ {expr} }}}}")))),
    };
    if result.is_undefined() {
        // Printing it makes the strict environment say which part is undefined.
        let printed = format!("{{{{ {expr} }}}}");
        render_raw(ctx, &printed)?;
        return Err(error_msg(
            &ctx.origin,
            format!("'{}' is undefined", expr.trim()),
            Some(expr.trim().to_string()),
        ));
    }
    Ok(result)
}

pub(crate) fn eval_in(ctx: &Arc<RenderCtx>, expr: &str) -> Result<Value, TemplateError> {
    let v = eval_raw(ctx, expr, false)?;
    Ok(native::materialize(v))
}

/// [`eval_in`] for a bare expression (see [`eval_raw`]).
pub(crate) fn eval_bare_in(ctx: &Arc<RenderCtx>, expr: &str) -> Result<Value, TemplateError> {
    let v = eval_raw(ctx, expr, true)?;
    Ok(native::materialize(v))
}

pub(crate) fn render_text_in(ctx: &Arc<RenderCtx>, src: &str) -> Result<String, TemplateError> {
    render_raw(ctx, src)
}

pub(crate) fn render_str_in(ctx: &Arc<RenderCtx>, src: &str) -> Result<Value, TemplateError> {
    if !is_template(src) {
        return Ok(Value::from(src));
    }
    match native::single_expression(src) {
        Some(expr) => eval_in(ctx, expr),
        None => render_raw(ctx, src).map(Value::from),
    }
}

/// Renders every string inside `v`; drops map entries and list items that
/// rendered to the omit placeholder.
pub(crate) fn render_value_in(ctx: &Arc<RenderCtx>, v: &Value) -> Result<Value, TemplateError> {
    match v.kind() {
        ValueKind::String => {
            if v.is_safe() {
                return Ok(v.clone());
            }
            match v.as_str() {
                Some(s) if is_template(s) => render_str_in(ctx, s),
                _ => Ok(v.clone()),
            }
        }
        ValueKind::Seq if scope::needs_render(v) => {
            let mut out = Vec::new();
            for item in v.try_iter().map_err(|e| convert_error(ctx, e, None))? {
                let r = render_value_in(ctx, &item)?;
                if !is_omit(&r) {
                    out.push(r);
                }
            }
            Ok(Value::from(out))
        }
        ValueKind::Map
            if v.downcast_object_ref::<RenderCtx>().is_none() && scope::needs_render(v) =>
        {
            let mut out = IndexMap::new();
            for key in v.try_iter().map_err(|e| convert_error(ctx, e, None))? {
                let item = v.get_item(&key).unwrap_or(Value::UNDEFINED);
                let r = render_value_in(ctx, &item)?;
                if !is_omit(&r) {
                    // Keys may be templated too (`"{{ name }}": value`).
                    let k = match key.as_str() {
                        Some(s) if is_template(s) && !key.is_safe() => render_str_in(ctx, s)?,
                        _ => key,
                    };
                    out.insert(k, r);
                }
            }
            Ok(Value::from_object(out))
        }
        _ => Ok(v.clone()),
    }
}

fn is_omit(v: &Value) -> bool {
    v.as_str() == Some(omit_token())
}

// ---- errors ----

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

/// Turns a minijinja error into a [`TemplateError`], recovering errors raised
/// while templating a lazy variable and naming undefined variables.
pub(crate) fn convert_error(ctx: &Arc<RenderCtx>, err: Error, src: Option<&str>) -> TemplateError {
    // An error that came out of a nested template (a variable's value, a
    // lookup) already carries its full description.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    while let Some(c) = cause {
        if let Some(te) = c.downcast_ref::<TemplateError>() {
            return te.clone();
        }
        cause = c.source();
    }
    let detail = err
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| err.kind().to_string());
    let fragment = match (err.template_source(), err.range()) {
        (Some(s), Some(r)) if r.end <= s.len() => Some(s[r].to_string()),
        _ => None,
    };
    let mut undefined = None;
    let mut hint = None;
    let message = if let Some(custom) = detail.strip_prefix(filters::MANDATORY) {
        // The filter only sees the value; the name is what precedes `|`.
        let name = match (err.template_source(), err.range()) {
            (Some(s), Some(r)) if r.start <= s.len() => {
                native::expression_before_pipe(&s[..r.start])
            }
            _ => String::from("value"),
        };
        undefined = Some(name.clone());
        if custom.is_empty() {
            format!("Mandatory variable '{name}' not defined.")
        } else {
            custom.to_string()
        }
    } else if err.kind() == ErrorKind::UndefinedError {
        let name = detail
            .split('`')
            .nth(1)
            .map(str::to_string)
            .or_else(|| {
                fragment
                    .as_deref()
                    .map(native::root_name)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "value".to_string());
        let root = native::root_name(&name).to_string();
        // The variable exists but its value did not template: report why.
        if let Some(inner) = ctx.hints.lock().unwrap().get(&root) {
            let mut e = inner.clone();
            let raw = ctx
                .scope
                .get_raw(&root)
                .map(|v| v.to_string())
                .unwrap_or_default();
            e.diag.hint = Some(format!("while templating variable '{root}' = {raw:?}"));
            return e;
        }
        if ctx.scope.get_raw(&root).is_none() {
            let names = ctx.scope.names();
            if let Some(s) = crate::diag::suggest(&root, names.iter().map(String::as_str)) {
                hint = Some(format!("did you mean '{s}'?"));
            }
        }
        undefined = Some(name.clone());
        format!("'{name}' is undefined")
    } else {
        detail
    };
    let mut te = error_msg(&ctx.origin, message, undefined);
    let place = match (fragment, src) {
        (Some(f), _) if !f.trim().is_empty() => Some(format!("in `{}`", f.trim())),
        (_, Some(s)) => Some(format!("in {:?}", native::shorten(s, 120))),
        _ => None,
    };
    te.diag.hint = match (hint, place) {
        (Some(h), Some(p)) => Some(format!("{h} ({p})")),
        (Some(h), None) => Some(h),
        (None, Some(p)) => Some(p),
        (None, None) => None,
    };
    te
}
