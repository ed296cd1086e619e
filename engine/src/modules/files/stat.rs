//! `stat`: reports a path's status (one round trip, never changes anything).

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::{checksum_tool, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};

pub struct Stat;

/// The arguments `stat` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "stat",
    sets: &[&[
        &["path", "dest", "name"],
        &["follow"],
        &["get_checksum"],
        &["checksum_algorithm", "checksum", "checksum_algo"],
        &["get_md5"],
        &["get_mime"],
        &["mime"],
        &["mime_type"],
        &["mime-type"],
        &["get_attributes"],
        &["attr"],
        &["attributes"],
    ]],
};

#[async_trait::async_trait]
impl Module for Stat {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let path = a.req_string(&["path", "dest", "name"])?;
        let follow = a.bool(&["follow"], false)?;
        let get_checksum = a.bool(&["get_checksum"], true)?;
        let algo = a
            .choice(
                &["checksum_algorithm", "checksum", "checksum_algo"],
                &["md5", "sha1", "sha224", "sha256", "sha384", "sha512"],
                Some("sha1"),
            )?
            .unwrap_or_else(|| "sha1".into());
        a.ignore(&[
            "get_md5",
            "get_mime",
            "mime",
            "mime_type",
            "mime-type",
            "get_attributes",
            "attr",
            "attributes",
        ]);
        a.finish()?;

        let tool = if get_checksum {
            checksum_tool(&algo)
        } else {
            None
        };
        let mut probe = Query::new();
        probe.stat("p", &path, follow, tool);
        let q = probe.run_checked(ctx).await?;
        let st = q.stat("p");
        Ok(Plan::done(
            ModuleResult::ok().with("stat", st.to_value(&path, get_checksum)),
        ))
    }
}
