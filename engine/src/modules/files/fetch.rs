//! `fetch`: copies a file from the host to the controller. One round trip:
//! the probe sends the body only when its checksum differs from the local copy.

use std::path::PathBuf;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{self, sha1_hex, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Fetch;

/// The arguments `fetch` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "fetch",
    sets: &[&[
        &["src"],
        &["dest"],
        &["flat"],
        &["fail_on_missing"],
        &["validate_checksum", "validate_md5"],
    ]],
};

#[async_trait::async_trait]
impl Module for Fetch {
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
        let flat = a.bool(&["flat"], false)?;
        let fail_on_missing = a.bool(&["fail_on_missing"], true)?;
        let validate = a.bool(&["validate_checksum", "validate_md5"], true)?;
        a.finish()?;

        let (_, base) = kit::split_path(&src);
        let local: PathBuf = if flat {
            if dest.ends_with('/') {
                PathBuf::from(&dest).join(base)
            } else {
                PathBuf::from(&dest)
            }
        } else {
            PathBuf::from(&dest)
                .join(ctx.host)
                .join(src.trim_start_matches('/'))
        };
        let local_sum = std::fs::read(&local).ok().map(|b| sha1_hex(&b));
        let q_src = quote(&src);
        let mut probe = Query::new();
        // The body comes back only when it differs from the local copy.
        probe.stat("p", &src, true, Some("sha1sum")).section(
            "content",
            &format!(
                "if [ -f {q_src} ] && [ -r {q_src} ] && [ \"$(sha1sum < {q_src} | cut -c1-40)\" != {} ]; then echo 1; cat -- {q_src}; else echo 0; fi",
                quote(local_sum.as_deref().unwrap_or("none"))
            ),
        );
        let q = probe.run_checked(ctx).await?;
        let st = q.stat("p");
        let mut res = ModuleResult::ok()
            .with("file", src.clone())
            .with("dest", local.display().to_string());
        if !st.exists || st.is_dir() {
            let msg = if st.is_dir() {
                "remote file is a directory, fetch cannot work on directories"
            } else {
                "the remote file does not exist, not transferring"
            };
            if fail_on_missing || st.is_dir() {
                res.failed = true;
            }
            res.msg = Some(msg.to_string());
            return Ok(Plan::done(res));
        }
        let remote_sum = st.checksum.clone().unwrap_or_default();
        res.data
            .insert("remote_checksum".into(), remote_sum.clone().into());
        res.data
            .insert("checksum".into(), remote_sum.clone().into());
        let Some(body) = q.content() else {
            if local_sum.as_deref() == Some(remote_sum.as_str()) {
                return Ok(Plan::done(res));
            }
            res.failed = true;
            res.msg = Some(format!("file is not readable: {src}"));
            return Ok(Plan::done(res));
        };
        if validate && sha1_hex(&body) != remote_sum {
            res.failed = true;
            res.msg = Some("checksum mismatch: the file changed during transfer".into());
            return Ok(Plan::done(res));
        }
        res.changed = true;
        // The change is on the controller: the local copy.
        Ok(Plan::change(res.clone(), async move {
            if let Some(parent) = local.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    ModuleError::Failed(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            std::fs::write(&local, &body).map_err(|e| {
                ModuleError::Failed(format!("cannot write {}: {e}", local.display()))
            })?;
            Ok(res)
        }))
    }
}
