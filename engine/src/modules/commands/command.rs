//! `command`: runs a program with arguments, never through a shell's reading
//! of the user's text: the words are split on the controller and each one is
//! quoted into the script.

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::command::RUN_OPT_PARAMS;
use crate::modules::kit::command::{exec_check, plan_run, run_last, RunOpts};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct CommandModule;

/// The arguments `command` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "command",
    sets: &[
        &[
            &["_raw_params"],
            &["cmd"],
            &["argv"],
            &["executable"],
            &["expand_argument_vars"],
            &["_uses_shell"],
            &["warn"],
        ],
        RUN_OPT_PARAMS,
    ],
};

#[async_trait::async_trait]
impl Module for CommandModule {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let raw = a.string(&["_raw_params"])?;
        let cmd = a.string(&["cmd"])?;
        let argv = a.list_no_split(&["argv"])?;
        let opts = RunOpts::parse(&mut a)?;
        let executable = a.string(&["executable"])?;
        let expand = a.bool(&["expand_argument_vars"], true)?;
        a.ignore(&["_uses_shell", "warn"]);
        a.finish()?;

        let words: Vec<String> = match (raw.or(cmd), argv) {
            (Some(_), Some(_)) => {
                return Err(ModuleError::Args(
                    "parameters are mutually exclusive: cmd|_raw_params, argv (module command)"
                        .into(),
                ))
            }
            (Some(s), None) => shell_words::split(&s)
                .map_err(|e| ModuleError::Args(format!("cannot split command line {s:?}: {e}")))?,
            (None, Some(v)) => v,
            (None, None) => {
                return Ok(Plan::done(ModuleResult::failed(
                    "one of the following is required: _raw_params, cmd, argv",
                )))
            }
        };
        if words.is_empty() {
            return Ok(Plan::done(
                ModuleResult::failed("no command given").with("rc", 256),
            ));
        }
        let mut script = opts.prelude();
        let mut argv: Vec<String> = Vec::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            match expand.then(|| expand_word(i, w)).flatten() {
                Some((pre, reference)) => {
                    script.push_str(&pre);
                    argv.push(reference);
                }
                None => argv.push(quote(w)),
            }
        }
        script.push_str(&exec_check(&argv[0]));
        script.push_str(&run_last(&argv.join(" ")));
        let cmd_value = Value::from(words.clone());
        let stdin = opts.stdin_bytes();
        let plan = plan_run(ctx, script, stdin, cmd_value, opts);
        // ansible-core dropped `executable` for `command` in 2.4 but still
        // accepts it: the command runs as written, with a warning.
        Ok(match executable {
            Some(exe) => plan.map(move |r| {
                let w = format!(
                    "As of Ansible 2.4, the parameter 'executable' is no longer supported with the 'command' module. Not using '{exe}'."
                );
                r.data.insert("warnings".into(), Value::from(vec![w]));
            }),
            None => plan,
        })
    }

    fn takes_free_form(&self) -> bool {
        true
    }
}

/// Ansible expands `$VAR`, `${VAR}` and a leading `~` in each argument
/// (Python's `expandvars`/`expanduser`, never a shell). The same is done here
/// on the host with shell *parameter* tests only: the word is assembled in a
/// variable piece by piece, so nothing in it is ever evaluated. An unset
/// variable stays literal, as in Python. Returns the assembling lines and
/// the `"$var"` to use, or `None` when the word has nothing to expand.
pub fn expand_word(index: usize, word: &str) -> Option<(String, String)> {
    if !word.contains('$') && !word.starts_with('~') {
        return None;
    }
    let var = format!("kw{index}");
    let mut s = format!("{var}=\n");
    let mut rest = word;
    if rest == "~" || rest.starts_with("~/") {
        s.push_str(&format!(
            "if [ -n \"${{HOME+x}}\" ]; then {var}=\"$HOME\"; else {var}='~'; fi\n"
        ));
        rest = &rest[1..];
    }
    let mut literal = String::new();
    let flush = |lit: &mut String, s: &mut String| {
        if !lit.is_empty() {
            s.push_str(&format!("{var}=\"${var}\"{}\n", quote(lit)));
            lit.clear();
        }
    };
    let is_name = |n: &str| {
        !n.is_empty()
            && !n.as_bytes()[0].is_ascii_digit()
            && n.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric())
    };
    while let Some(pos) = rest.find('$') {
        literal.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, whole_len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if !is_name(name) {
            literal.push('$');
            rest = after;
            continue;
        }
        flush(&mut literal, &mut s);
        let original = &rest[pos..pos + 1 + whole_len];
        s.push_str(&format!(
            "if [ -n \"${{{name}+x}}\" ]; then {var}=\"${var}${name}\"; else {var}=\"${var}\"{}; fi\n",
            quote(original)
        ));
        rest = &after[whole_len..];
    }
    literal.push_str(rest);
    flush(&mut literal, &mut s);
    Some((s, format!("\"${var}\"")))
}
