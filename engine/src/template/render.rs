//! The rendering core: the two minijinja environments ([`Inner`]), the
//! context object a render sees ([`RenderCtx`]), and the functions that
//! render strings, values and template files and evaluate expressions, with
//! errors turned into [`TemplateError`]s.
//!
//! When a template runs, minijinja looks names up through a [`RenderCtx`]:
//! it finds the highest-precedence value in the [`Scope`] and, if that value
//! still holds Jinja syntax, templates it there and then (recursively, with
//! loop detection), as Ansible does. `!unsafe` strings are carried as
//! minijinja "safe" strings — autoescape is off, so the flag has no other
//! meaning to us — and are never templated.
//!
//! This file sits below the filters, tests and lookups: it registers none of
//! them. The environments come from a builder handed in ([`BuildEnv`], in
//! `env.rs`), so a lookup that renders (`template`) can use this file without
//! a circle.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object, ObjectRepr, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};

use super::error::{
    error_msg, TemplateError, TemplateOrigin, CONTAINED_UNDEFINED, MANDATORY, UNDEF_HINT,
    USED_UNDEFINED,
};
use super::native::{self, ValueMap};
use super::scope::Scope;

/// True when `s` contains Jinja syntax and needs rendering.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// The sentinel value `omit` evaluates to.
pub fn omit_token() -> &'static str {
    "__omit_place_holder__keel__"
}

/// The two minijinja environments (see the module docs) shared by every
/// render, and the builder they were made with.
pub(crate) struct Inner {
    pub(super) strict: Environment<'static>,
    pub(super) chain: Environment<'static>,
    build: BuildEnv,
}

/// Builds one environment (strict or chainable) with the given syntax: the
/// builder in `env.rs`, which registers the filters, tests and lookups. An
/// [`Inner`] keeps the one it was made with, so a `template` lookup can ask
/// for other syntax without this file (or the lookup) importing the builder.
pub(crate) type BuildEnv = fn(bool, &SyntaxOverrides) -> Result<Environment<'static>, Error>;

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
    /// Both environments from `build`, with syntax `o`.
    pub(crate) fn new(build: BuildEnv, o: &SyntaxOverrides) -> Result<Inner, Error> {
        Ok(Inner {
            strict: build(true, o)?,
            chain: build(false, o)?,
            build,
        })
    }

    /// Environments with other syntax, for a `template` lookup that asks for
    /// it. Built per call: such lookups are rare.
    pub(crate) fn with_syntax(&self, o: &SyntaxOverrides) -> Result<Inner, Error> {
        Inner::new(self.build, o)
    }
}

/// The local variable the expression wrapper stores its result in.
const RESULT_VAR: &str = "__keel_result";

/// True when a value holds (possibly deep inside) a string that needs rendering.
pub(super) fn needs_render(v: &Value) -> bool {
    match v.kind() {
        ValueKind::String => !v.is_safe() && v.as_str().is_some_and(is_template),
        ValueKind::Seq | ValueKind::Map => {
            // Opaque objects (our own context, hostvars...) resolve themselves.
            if v.downcast_object_ref::<RenderCtx>().is_some()
                || v.downcast_object_ref::<super::lazy::LazyMap>().is_some()
            {
                return false;
            }
            match v.kind() {
                ValueKind::Map => v
                    .try_iter()
                    .map(|it| {
                        it.into_iter()
                            .any(|k| v.get_item(&k).ok().is_some_and(|x| needs_render(&x)))
                    })
                    .unwrap_or(false),
                _ => v
                    .try_iter()
                    .map(|mut it| it.any(|x| needs_render(&x)))
                    .unwrap_or(false),
            }
        }
        _ => false,
    }
}

/// The context object of one render: the scope, the origin and the state of
/// lazy resolution (which variables are being resolved, what they resolved to).
pub(crate) struct RenderCtx {
    pub(super) inner: Arc<Inner>,
    pub(super) scope: Scope,
    pub(super) origin: TemplateOrigin,
    resolving: Mutex<Vec<String>>,
    resolved: Mutex<HashMap<String, Value>>,
    /// Why a variable came out undefined although it exists: the error from
    /// templating its value. Reported if the undefined value is then used.
    pub(super) hints: Mutex<HashMap<String, TemplateError>>,
    /// Why the latest undefined value came about (a missing variable, a
    /// `map(attribute=)` item without it). An undefined value may travel
    /// inside a list or dict until the result is finalized; this is the
    /// message that result then fails with, as ansible-core's does.
    undefined_reason: Mutex<Option<String>>,
}

impl std::fmt::Debug for RenderCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<vars>")
    }
}

/// The name under which a template can reach its own context (for lookups).
pub(super) const CTX_KEY: &str = "__keel_ctx";

impl RenderCtx {
    pub(super) fn new(inner: Arc<Inner>, scope: &Scope, origin: &TemplateOrigin) -> Arc<RenderCtx> {
        Arc::new(RenderCtx {
            inner,
            scope: scope.clone(),
            origin: origin.clone(),
            resolving: Mutex::new(Vec::new()),
            resolved: Mutex::new(HashMap::new()),
            hints: Mutex::new(HashMap::new()),
            undefined_reason: Mutex::new(None),
        })
    }

    /// Records why an undefined value was made (see `undefined_reason`).
    pub(super) fn note_undefined(&self, why: String) {
        *self.undefined_reason.lock() = Some(why);
    }

    /// Looks up `name` and templates its value if needed. `Ok(None)`: no such
    /// variable.
    pub(super) fn resolve(self: &Arc<Self>, name: &str) -> Result<Option<Value>, TemplateError> {
        let Some(raw) = self.scope.get_raw(name) else {
            return Ok(None);
        };
        // Fast path: scalars and plain strings need no work.
        match raw.kind() {
            ValueKind::String if raw.is_safe() || !raw.as_str().is_some_and(is_template) => {
                return Ok(Some(raw.clone()))
            }
            ValueKind::Seq | ValueKind::Map | ValueKind::String => {}
            _ => return Ok(Some(raw.clone())),
        }
        if let Some(v) = self.resolved.lock().get(name) {
            return Ok(Some(v.clone()));
        }
        if !needs_render(raw) {
            self.resolved.lock().insert(name.to_string(), raw.clone());
            return Ok(Some(raw.clone()));
        }
        {
            let mut stack = self.resolving.lock();
            if stack.iter().any(|n| n == name) {
                let chain = stack.join(" -> ");
                return Err(error_msg(
                    &self.origin,
                    format!("recursive loop detected in template for variable {name} ({chain} -> {name})"),
                    None,
                ));
            }
            stack.push(name.to_string());
        }
        let out = render_value_in(self, raw);
        self.resolving.lock().pop();
        let v = out?;
        self.resolved.lock().insert(name.to_string(), v.clone());
        Ok(Some(v))
    }
}

impl Object for RenderCtx {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        match self.resolve(name) {
            Ok(Some(v)) => Some(v),
            Ok(None) => match name {
                CTX_KEY => Some(Value::from_dyn_object(self.clone())),
                // `vars` is the whole scope, resolved lazily like everything else.
                "vars" => Some(Value::from_dyn_object(self.clone())),
                _ => {
                    self.note_undefined(format!("'{name}' is undefined"));
                    None
                }
            },
            Err(e) => {
                if e.undefined.is_some() && !e.diag.message.contains("recursive loop") {
                    // Like Ansible: an undefined inside a variable's value makes
                    // the variable undefined (so `is defined` and `default`
                    // work), and the reason is reported if it is then used.
                    self.hints.lock().insert(name.to_string(), e);
                    None
                } else {
                    let kind = ErrorKind::InvalidOperation;
                    Some(Value::from(
                        Error::new(kind, e.diag.message.clone()).with_source(e),
                    ))
                }
            }
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.scope.names().into_iter().map(Value::from).collect())
    }
}

/// A value leaving the template engine: our lazy context object (`vars`)
/// becomes a plain map so callers see ordinary data.
pub(crate) fn materialize(v: Value) -> Value {
    if v.downcast_object_ref::<RenderCtx>().is_some() {
        let mut map = ValueMap::new();
        if let Ok(it) = v.try_iter() {
            for k in it {
                if let Ok(val) = v.get_item(&k) {
                    if !val.is_undefined() {
                        map.insert(k, val);
                    }
                }
            }
        }
        return Value::from_object(map);
    }
    v
}

// ---- rendering against an existing context (also used for lazy variables) ----

fn ctx_value(ctx: &Arc<RenderCtx>) -> Value {
    Value::from_dyn_object(ctx.clone())
}

/// True when a strict-mode undefined error may be a chained lookup that
/// Ansible would allow (`x.y is defined`, `x.y | default(...)`): the source
/// applies the `defined`/`undefined` test or the `default` filter. Names that
/// merely contain those words (`_undefined == 'yes'`) do not count: there the
/// undefined value is used, which fails in ansible-core 2.19.
fn may_chain(src: &str, err: &Error) -> bool {
    static CHAIN: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"\bis\s+(?:not\s+)?(?:ansible\.builtin\.)?(?:un)?defined\b|\|\s*(?:ansible\.builtin\.)?(?:default|d)\b",
        )
        .expect("valid pattern")
    });
    err.kind() == ErrorKind::UndefinedError && CHAIN.is_match(src)
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
    // `undef()` fails when called in the strict environment; passed along
    // unused (`lookup('env', 'X', default=undef())`) it must not, so such an
    // expression is retried where it is a plain undefined, and fails only
    // if the result is undefined (below).
    let undef_called = |e: &Error| e.detail().is_some_and(|d| d.starts_with(UNDEF_HINT));
    let result = match run(&ctx.inner.strict) {
        Ok(r) => r,
        Err(e) if may_chain(expr, &e) || undef_called(&e) => match run(&ctx.inner.chain) {
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
    let v = materialize(v);
    if native::contains_undefined(&v) {
        // Finalizing the result meets an undefined value kept in a list or
        // dict (`[1, nope]`, `items | map(attribute='missing')`): Ansible
        // fails here with the reason the value was undefined.
        let why = ctx
            .undefined_reason
            .lock()
            .clone()
            .unwrap_or_else(|| format!("'{}' is undefined", expr.trim()));
        return Err(error_msg(&ctx.origin, why, Some(expr.trim().to_string())));
    }
    Ok(v)
}

/// [`eval_in`] for a bare expression (see [`eval_raw`]).
pub(crate) fn eval_bare_in(ctx: &Arc<RenderCtx>, expr: &str) -> Result<Value, TemplateError> {
    let v = eval_raw(ctx, expr, true)?;
    Ok(materialize(v))
}

pub(crate) fn render_text_in(ctx: &Arc<RenderCtx>, src: &str) -> Result<String, TemplateError> {
    render_raw(ctx, src)
}

pub(crate) fn render_str_in(ctx: &Arc<RenderCtx>, src: &str) -> Result<Value, TemplateError> {
    if !is_template(src) {
        return Ok(Value::from(src));
    }
    // Jinja drops one trailing newline of the source and Ansible puts it
    // back on text results, so `{{ expr }}\n` (a folded `>` scalar) keeps
    // the expression's type unless it is a string.
    let (body, newline) = match src.strip_suffix('\n') {
        Some(b) => (b, true),
        None => (src, false),
    };
    match native::single_expression(body) {
        Some(expr) => {
            let v = eval_in(ctx, expr)?;
            Ok(match v.as_str() {
                Some(s) if newline => Value::from(format!("{s}\n")),
                _ => v,
            })
        }
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
        ValueKind::Seq if needs_render(v) => {
            let mut out = Vec::new();
            for item in v.try_iter().map_err(|e| convert_error(ctx, e, None))? {
                let r = render_value_in(ctx, &item)?;
                if !is_omit(&r) {
                    out.push(r);
                }
            }
            Ok(Value::from(out))
        }
        ValueKind::Map if v.downcast_object_ref::<RenderCtx>().is_none() && needs_render(v) => {
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

/// Turns a minijinja error into a [`TemplateError`], recovering errors raised
/// while templating a lazy variable and naming undefined variables.
/// Python's words (3.11, which ansible-core 2.19 runs on) for a division by
/// zero, which minijinja reports as `unable to calculate 5 / 0`.
fn zero_division(detail: &str) -> Option<&'static str> {
    let rest = detail.strip_prefix("unable to calculate ")?;
    let ops = [
        (
            " // ",
            "integer division or modulo by zero",
            "float floor division by zero",
        ),
        (" / ", "division by zero", "float division by zero"),
        (" % ", "integer modulo by zero", "float modulo"),
    ];
    ops.into_iter().find_map(|(op, int, float)| {
        let (lhs, rhs) = rest.rsplit_once(op)?;
        if rhs.trim().parse::<f64>().ok()? != 0.0 {
            return None;
        }
        let is_float =
            |s: &str| s.contains(['.', 'e', 'E']) || s.contains("inf") || s.contains("nan");
        Some(if is_float(lhs) || is_float(rhs) {
            float
        } else {
            int
        })
    })
}

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
        (Some(s), Some(r)) => s.get(r).map(str::to_string),
        _ => None,
    };
    let mut undefined = None;
    let mut hint = None;
    let message = if detail == CONTAINED_UNDEFINED {
        let why = ctx.undefined_reason.lock().clone();
        why.unwrap_or_else(|| match &fragment {
            Some(f) => format!("'{}' holds an undefined value", f.trim()),
            None => detail.clone(),
        })
    } else if detail == USED_UNDEFINED {
        let why = ctx.undefined_reason.lock().clone();
        let why = why.unwrap_or_else(|| match &fragment {
            Some(f) => format!("'{}' is undefined", native::root_name(f.trim())),
            None => "an undefined value was used".to_string(),
        });
        undefined = Some(why.split('\'').nth(1).unwrap_or("value").to_string());
        why
    } else if let Some(hint) = detail.strip_prefix(UNDEF_HINT) {
        undefined = Some("undef()".to_string());
        hint.to_string()
    } else if let Some(custom) = detail.strip_prefix(MANDATORY) {
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
        if let Some(inner) = ctx.hints.lock().get(&root) {
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
        // A defined variable missing an attribute or item: Python's wording.
        let path = if name.starts_with('(') {
            fragment.as_deref().unwrap_or("")
        } else {
            name.as_str()
        };
        missing_attribute(ctx, path).unwrap_or_else(|| format!("'{name}' is undefined"))
    } else if let Some(python) = zero_division(&detail) {
        python.to_string()
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

/// For `a.b['c'][0]` whose root `a` is defined: "object of type 'dict' has no
/// attribute 'c'" for the first step that does not resolve, as Jinja words it
/// under ansible-core. `None` when the path is not a plain variable path or
/// every step resolves.
fn missing_attribute(ctx: &Arc<RenderCtx>, path: &str) -> Option<String> {
    let path = path.trim();
    let root = native::root_name(path);
    if root.is_empty() || ctx.scope.get_raw(root).is_none() {
        return None;
    }
    let mut cur = ctx_value(ctx).get_attr(root).ok()?;
    let mut rest = &path[root.len()..];
    while !rest.is_empty() {
        let (step, printed, after) = if let Some(r) = rest.strip_prefix('.') {
            let name = native::root_name(r);
            if name.is_empty() {
                return None;
            }
            (Value::from(name), format!("'{name}'"), &r[name.len()..])
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let inner = r[..end].trim();
            let step = if let Ok(i) = inner.parse::<i64>() {
                Value::from(i)
            } else {
                let q = inner.chars().next()?;
                if (q != '\'' && q != '"') || !inner.ends_with(q) || inner.len() < 2 {
                    return None;
                }
                Value::from(&inner[1..inner.len() - 1])
            };
            let printed = match step.as_str() {
                Some(s) => format!("'{s}'"),
                None => step.to_string(),
            };
            (step, printed, &r[end + 1..])
        } else {
            return None;
        };
        let next = match step.as_str() {
            Some(s) if cur.kind() == ValueKind::Map => cur.get_attr(s).ok(),
            Some(s) => cur.get_attr(s).ok().filter(|v| !v.is_undefined()),
            None => cur.get_item(&step).ok(),
        }
        .filter(|v| !v.is_undefined());
        match next {
            Some(v) => cur = v,
            None => {
                return Some(format!(
                    "object of type '{}' has no attribute {printed}",
                    native::python_type_name(&cur)
                ))
            }
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::template::{Scope, Templar, TemplateOrigin};

    /// Found by the `template` fuzz target: an error whose source range ends
    /// inside a multi-byte character must be reported, not panic while the
    /// failing fragment is cut out.
    #[test]
    fn error_range_inside_a_multibyte_char_does_not_panic() {
        let templar = Templar::new();
        let scope = Scope::new();
        let origin = TemplateOrigin::default();
        let src = "{{ [1] is subset([1, 2])\u{702}}";
        assert!(templar.render_str(src, &scope, &origin).is_err());
        assert!(templar.render_text(src, &scope, &origin).is_err());
    }
}
