//! Templating: Jinja2 as Ansible uses it, on minijinja.
//!
//! The executor hands the [`Templar`] a [`Scope`] (the layered variables of one
//! host at one task) and asks it to render task arguments, evaluate `when`
//! expressions, or render template files. Variables are templated lazily, on
//! access, as Ansible does: `a: "{{ b }}"` resolves `b` only when `a` is used.
//!
//! Layout, bottom up (a file imports only files listed before it):
//! `error.rs` ([`TemplateError`], [`TemplateOrigin`]), `scope.rs` (layered
//! variables), `pyre.rs` (Python `re` semantics), `datetime.rs` (`now()`,
//! `strftime`, `to_datetime`), `native.rs` (keeping a single-expression
//! template's type, Python-style printing and escapes, value helpers),
//! `render.rs` (the rendering core: the two environments, the lazy context
//! object, render and eval), then `filters.rs`, `tests.rs` (Jinja tests) and
//! `lookups.rs` (which renders through the core), `env.rs` (builds the
//! environments and registers all of the above) and this file, the
//! [`Templar`]. The core never imports the builder: an environment pair keeps
//! the builder function it was made with, so the `template` lookup can ask
//! for other delimiters from below.
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

use std::path::Path;
use std::sync::Arc;

use minijinja::value::ValueKind;
use minijinja::Value;

use crate::vars::VarMap;

mod condition;
mod datetime;
mod env;
mod error;
mod file_vars;
mod filters;
mod lazy;
mod lookup_ini;
mod lookups;
mod native;
mod pyre;
mod render;
mod scope;
mod tests;

pub use condition::Condition;
pub use error::{TemplateError, TemplateOrigin};
pub use file_vars::{hostname, template_file_vars};
pub use filters::crypt_hash;
pub use lazy::{LazyMap, LazySource};
pub(crate) use native::value_from_json_with;
pub use native::{
    display_text, is_truthy, python_repr, to_bool, to_nice_json, to_nice_yaml, to_yaml,
    value_from_json, value_to_json,
};
pub use render::{is_template, omit_token};
pub use scope::Scope;

use render::{
    convert_error, eval_bare_in, eval_in, needs_render, render_file_text_in, render_str_in,
    render_text_in, render_value_in, Inner, RenderCtx, SyntaxOverrides,
};

/// The templating engine, built once per run and shared by every host.
pub struct Templar {
    inner: Arc<Inner>,
    /// `ALLOW_BROKEN_CONDITIONALS`: a condition whose result is not a
    /// boolean is judged by its truthiness instead of failing.
    allow_broken_conditionals: bool,
}

impl Templar {
    pub fn new() -> Arc<Templar> {
        Templar::with_broken_conditionals(false)
    }

    /// A templar that judges non-boolean conditions by their truthiness
    /// when `allow` is set (`ALLOW_BROKEN_CONDITIONALS`), as ansible-core
    /// before 2.19 did.
    pub fn with_broken_conditionals(allow: bool) -> Arc<Templar> {
        Arc::new(Templar {
            inner: Arc::new(
                Inner::new(env::build, &SyntaxOverrides::default())
                    .expect("default delimiters are valid"),
            ),
            allow_broken_conditionals: allow,
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
        if !is_template(text) {
            return Ok(text.to_string());
        }
        // A file's string literals take Python's escapes (`'a\nb'` is two
        // lines), unlike those inside `{{ }}` of task arguments.
        lookups::with_include_dirs(dirs, || {
            render_file_text_in(&self.ctx(scope, origin), text, true)
        })
    }

    /// Recursively renders every string inside a value (task args, loop lists).
    /// `!unsafe` strings are left alone; `omit` removes map entries.
    pub fn render_value(
        &self,
        v: &Value,
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<Value, TemplateError> {
        if !needs_render(v) {
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

    /// [`Templar::eval`] as `debug: var=` uses it: an undefined value does
    /// not fail, each `{{ }}` expression that meets one prints as
    /// `<< error N - why >>` instead, and the reasons come back as the lines
    /// of Ansible's warning. A variable whose value is a template is marked
    /// expression by expression; anything else is one marker. Other errors
    /// (a filter's) fail, as in ansible-core.
    pub fn eval_marking_errors(
        &self,
        expr: &str,
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<(Value, Vec<String>), TemplateError> {
        let first = match self.eval(expr, scope, origin) {
            Ok(v) if !v.is_undefined() => return Ok((v, Vec::new())),
            Ok(_) => format!("'{}' is undefined", expr.trim()),
            Err(e) if e.undefined.is_some() => e.diag.message,
            Err(e) => return Err(e),
        };
        // The reasons name no task or host: the result carries both.
        let bare = TemplateOrigin {
            label: None,
            host: None,
            ..origin.clone()
        };
        let raw = scope
            .get_raw(expr.trim())
            .filter(|v| !v.is_safe())
            .and_then(|v| v.as_str())
            .and_then(native::expression_pieces);
        let mut errors = Vec::new();
        let Some(pieces) = raw else {
            let why = match self.eval(expr, scope, &bare) {
                Err(e) => e.diag.message,
                Ok(_) => first,
            };
            errors.push(why);
            let marker = format!("<< error 1 - {} >>", errors[0]);
            return Ok((Value::from(marker), errors));
        };
        let mut out = String::new();
        for (is_expr, piece) in pieces {
            if !is_expr {
                out.push_str(piece);
                continue;
            }
            match self.render_str(piece, scope, &bare) {
                Ok(v) => out.push_str(&native::display_text(&v)),
                Err(e) if e.undefined.is_some() => {
                    errors.push(e.diag.message);
                    let n = errors.len();
                    out.push_str(&format!("<< error {n} - {} >>", errors[n - 1]));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((Value::from(out), errors))
    }

    /// Evaluates a list of bare conditions, all of which must hold. A bool
    /// literal is accepted as-is. Truthiness follows Python, as Ansible's does.
    pub fn eval_conditions(
        &self,
        conds: &[Condition],
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<bool, TemplateError> {
        Ok(self.first_false_condition(conds, scope, origin)?.is_none())
    }

    /// The first of `conds` that does not hold (conditions after it are not
    /// evaluated, as in Ansible), or `None` when all hold.
    pub fn first_false_condition<'c>(
        &self,
        conds: &'c [Condition],
        scope: &Scope,
        origin: &TemplateOrigin,
    ) -> Result<Option<&'c Condition>, TemplateError> {
        let mut ctx = None;
        for cond in conds {
            let c = cond.as_str().trim();
            let held = match cond.as_literal() {
                Some(b) => b,
                None if c.is_empty() => true,
                None => {
                    let ctx = ctx.get_or_insert_with(|| self.ctx(scope, origin));
                    let v = condition_value(ctx, cond, c, origin)?;
                    self.judge(cond, &v, origin)?
                }
            };
            if !held {
                return Ok(Some(cond));
            }
        }
        Ok(None)
    }

    /// A condition's value as a boolean. ansible-core 2.19 requires a
    /// boolean: anything else fails, naming its type, unless
    /// `ALLOW_BROKEN_CONDITIONALS` asks for the old truthiness.
    fn judge(
        &self,
        cond: &Condition,
        v: &Value,
        origin: &TemplateOrigin,
    ) -> Result<bool, TemplateError> {
        let held = is_truthy(v);
        if v.kind() == ValueKind::Bool || v.is_undefined() || self.allow_broken_conditionals {
            return Ok(held);
        }
        // ansible-core names where the value was made; Keel knows where the
        // condition is written (a value without an origin, such as `None`,
        // is `<unknown>` there too).
        let at = match cond.span().or(origin.span.as_ref()) {
            Some(span) if !v.is_none() => span.to_string(),
            _ => "<unknown>".to_string(),
        };
        let e = error::error_msg(
            origin,
            format!(
                "Conditional result ({}) was derived from value of type '{}' at '{at}'. Conditionals must have a boolean result.",
                if held { "True" } else { "False" },
                native::python_type_name(v),
            ),
            None,
        );
        Err(e.hint(
            "Broken conditionals can be temporarily allowed with the `ALLOW_BROKEN_CONDITIONALS` configuration option.",
        ))
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

/// What a condition evaluates to, by ansible-core 2.19's rules: a bare
/// expression is evaluated. A condition that is one whole `{{ expr }}` is
/// evaluated too; when that gives a string, the string is evaluated as an
/// expression in turn if it is a variable's own text from the playbook
/// (trusted), and refused if the template made it or a module returned it
/// (untrusted), since such text could run lookups.
fn condition_value(
    ctx: &Arc<RenderCtx>,
    cond: &Condition,
    c: &str,
    origin: &TemplateOrigin,
) -> Result<Value, TemplateError> {
    if cond.is_untrusted() {
        return Err(untrusted_error(origin));
    }
    if cond.is_number() {
        return Err(error::error_msg(
            origin,
            "Conditional expressions must be strings.".to_string(),
            None,
        ));
    }
    if !is_template(c) {
        return eval_bare_in(ctx, c);
    }
    // ansible-core 2.19 no longer templates text into an expression: a
    // whole `{{ expr }}` is accepted, and so are templates inside the
    // expression's string constants (`'{{ x }}' == 'a'`), rendered first.
    let Some(inner) = native::single_expression(c) else {
        let Some(expr) = render_string_constants(ctx, c)? else {
            return Err(error::error_msg(
                origin,
                format!(
                    "Syntax error in expression. Template delimiters are not supported in expressions: {c}"
                ),
                None,
            ));
        };
        return eval_bare_in(ctx, &expr);
    };
    let v = eval_in(ctx, inner)?;
    let Some(text) = v.as_str().filter(|_| v.kind() == ValueKind::String) else {
        tracing::warn!(
            "Conditionals should not be surrounded by templating delimiters such as {{{{ }}}} or {{% %}}. This feature will be removed from ansible-core version 2.23."
        );
        return Ok(v);
    };
    if names_trusted_text(&ctx.scope, inner, text) {
        return eval_bare_in(ctx, text);
    }
    Err(untrusted_error(origin))
}

/// ansible-core's refusal of a template or expression that came from data.
fn untrusted_error(origin: &TemplateOrigin) -> TemplateError {
    error::error_msg(
        origin,
        "Encountered untrusted template or expression.".to_string(),
        None,
    )
    .hint(
        "Templates and expressions must be defined by trusted sources such as playbooks or roles, not untrusted sources such as module results.",
    )
}

/// Whether `expr` (the inside of a `{{ }}`) names a variable whose value,
/// as the playbook, inventory or `set_fact` wrote it, is the plain string
/// `text`: a variable path (`x`, `x.y`, `x['y']`, `x[0]`), optionally
/// through `default(...)`/`d(...)`, which hands its input back unchanged.
/// A value that was itself a template, an `!unsafe` string or a module's
/// result (registered results are `!unsafe`) is not such text.
fn names_trusted_text(scope: &Scope, expr: &str, text: &str) -> bool {
    let mut expr = expr.trim();
    if let Some((path, filter)) = expr.split_once('|') {
        let filter = filter.trim();
        let passes_through = ["default(", "d("]
            .iter()
            .any(|f| filter.starts_with(f) && filter.ends_with(')') && !filter.contains('|'));
        if !passes_through {
            return false;
        }
        expr = path.trim();
    }
    let Some(steps) = variable_path(expr) else {
        return false;
    };
    let Some((root, rest)) = steps.split_first() else {
        return false;
    };
    let Some(mut v) = scope.get_raw(root.as_str().unwrap_or_default()).cloned() else {
        return false;
    };
    for step in rest {
        match v.get_item(step) {
            Ok(next) if !next.is_undefined() => v = next,
            _ => return false,
        }
    }
    v.kind() == ValueKind::String
        && !crate::vars::is_unsafe(&v)
        && v.as_str().is_some_and(|s| s == text && !is_template(s))
}

/// The steps of a variable path (`a.b['c'][0]`): the root name, then each
/// key or index. `None` for anything else.
fn variable_path(expr: &str) -> Option<Vec<Value>> {
    fn ident(s: &str) -> usize {
        s.char_indices()
            .take_while(|(i, ch)| {
                ch.is_ascii_alphabetic() || *ch == '_' || (*i > 0 && ch.is_ascii_digit())
            })
            .count()
    }
    let n = ident(expr);
    if n == 0 {
        return None;
    }
    let mut steps = vec![Value::from(&expr[..n])];
    let mut rest = &expr[n..];
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let n = ident(r);
            if n == 0 {
                return None;
            }
            steps.push(Value::from(&r[..n]));
            rest = &r[n..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']')?;
            let key = r[..close].trim();
            let quoted = [('\'', '\''), ('"', '"')]
                .iter()
                .find_map(|(a, b)| key.strip_prefix(*a)?.strip_suffix(*b));
            match quoted {
                Some(k) if !k.contains(['\'', '"', '\\']) => steps.push(Value::from(k)),
                Some(_) => return None,
                None => steps.push(Value::from(key.parse::<i64>().ok()?)),
            }
            rest = &r[close + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

/// `expr` with each string constant that holds a template (`'{{ x }}'`)
/// replaced by the constant of its rendered text. `None` when a template
/// delimiter stands outside any string constant, which is a syntax error.
fn render_string_constants(
    ctx: &Arc<RenderCtx>,
    expr: &str,
) -> Result<Option<String>, TemplateError> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    loop {
        let Some(open) = rest.find(['\'', '"']) else {
            if is_template(rest) {
                return Ok(None);
            }
            out.push_str(rest);
            return Ok(Some(out));
        };
        let (outside, literal) = rest.split_at(open);
        if is_template(outside) {
            return Ok(None);
        }
        out.push_str(outside);
        let quote = literal.as_bytes()[0] as char;
        // The constant's text, up to its closing quote (a backslash escapes
        // the next character).
        let mut text = String::new();
        let mut chars = literal[1..].char_indices();
        let mut end = None;
        while let Some((i, ch)) = chars.next() {
            match ch {
                '\\' => match chars.next() {
                    Some((_, e)) if e == quote || e == '\\' => text.push(e),
                    Some((_, e)) => {
                        text.push('\\');
                        text.push(e);
                    }
                    None => {}
                },
                ch if ch == quote => {
                    end = Some(i + 2);
                    break;
                }
                ch => text.push(ch),
            }
        }
        let Some(end) = end else {
            // An unclosed constant: left for the parser to report.
            out.push_str(literal);
            return Ok(Some(out));
        };
        if is_template(&text) {
            let rendered = render_text_in(ctx, &text)?;
            out.push(quote);
            for ch in rendered.chars() {
                if ch == quote || ch == '\\' {
                    out.push('\\');
                }
                out.push(ch);
            }
            out.push(quote);
        } else {
            out.push_str(&literal[..end]);
        }
        rest = &literal[end..];
    }
}
