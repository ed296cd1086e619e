//! `template`: renders a controller-side Jinja file with the host's variables,
//! then places the result like `copy` with `content` (same probe/apply path).

use std::sync::Arc;

use minijinja::Value;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::attrs::FILE_ATTR_PARAMS;
use crate::modules::kit::{put_content, FileAttrs, Put};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct Template;

/// The arguments `template` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "template",
    sets: &[
        &[
            &["src"],
            &["dest"],
            &["backup"],
            &["force"],
            &["validate"],
            &["follow"],
            &["newline_sequence"],
            &["trim_blocks"],
            &["lstrip_blocks"],
            &["output_encoding"],
            &["block_start_string"],
            &["block_end_string"],
            &["variable_start_string"],
            &["variable_end_string"],
            &["comment_start_string"],
            &["comment_end_string"],
        ],
        FILE_ATTR_PARAMS,
    ],
};

#[async_trait::async_trait]
impl Module for Template {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let src = a.req_string(&["src"])?;
        let dest = a.req_string(&["dest"])?;
        let attrs = FileAttrs::parse(&mut a)?;
        let backup = a.bool(&["backup"], false)?;
        let force = a.bool(&["force"], true)?;
        let validate = a.string(&["validate"])?;
        let follow = a.bool(&["follow"], false)?;
        let newline = a.choice(
            &["newline_sequence"],
            &["\\n", "\\r", "\\r\\n"],
            Some("\\n"),
        )?;
        // The shared Templar always renders with Jinja's `trim_blocks`, which
        // is the template module's default; `trim_blocks: no` is accepted but
        // has no effect.
        a.bool(&["trim_blocks"], true)?;
        let lstrip_blocks = a.bool(&["lstrip_blocks"], false)?;
        a.ignore(&[
            "output_encoding",
            "block_start_string",
            "block_end_string",
            "variable_start_string",
            "variable_end_string",
            "comment_start_string",
            "comment_end_string",
        ]);
        a.finish()?;

        let Some(path) = ctx.find_file("templates", &src) else {
            return Ok(Plan::done(ModuleResult::failed(format!(
                "Could not find or access '{src}' on the controller"
            ))));
        };
        // A vaulted template is decrypted on the controller, as in Ansible.
        let bytes = crate::vault::read_file(&path)
            .map_err(|e| ModuleError::Failed(format!("cannot read template: {e}")))?;
        let mut text = String::from_utf8(bytes).map_err(|_| {
            ModuleError::Failed(format!(
                "cannot read template {}: not UTF-8 text",
                path.display()
            ))
        })?;
        if lstrip_blocks {
            text = lstrip_block_lines(&text);
        }
        // Ansible's template-only variables, on top of the host's scope.
        let mut scope = ctx.scope.clone();
        let mut layer = crate::template::template_file_vars(&src, &path, Some(&dest));
        if ctx.scope.get_raw("ansible_managed").is_none() {
            layer.insert("ansible_managed".into(), Value::from("Ansible managed"));
        }
        scope.push(Arc::new(layer));
        let mut rendered = ctx
            .templar
            .render_template_text(&text, &path, &scope, ctx.origin)?;
        match newline.as_deref() {
            Some("\\r\\n") => rendered = rendered.replace('\n', "\r\n"),
            Some("\\r") => rendered = rendered.replace('\n', "\r"),
            _ => {}
        }
        let base = path
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = base.strip_suffix(".j2").unwrap_or(&base).to_string();
        put_content(
            ctx,
            Put {
                dest,
                basename: Some(base),
                content: rendered.into_bytes(),
                attrs,
                preserve_mode: local_mode(&path),
                backup,
                force,
                validate,
                follow,
                extra: vec![("src".into(), path.display().to_string().into())],
            },
        )
        .await
    }
}

fn local_mode(p: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Jinja's `lstrip_blocks`: whitespace before a block tag at line start goes.
fn lstrip_block_lines(src: &str) -> String {
    src.split_inclusive('\n')
        .map(|line| {
            let t = line.trim_start_matches([' ', '\t']);
            if t.starts_with("{%") && !t.starts_with("{%+") {
                t.to_string()
            } else {
                line.to_string()
            }
        })
        .collect()
}
