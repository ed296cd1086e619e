//! `stat`: reports a path's status (one round trip, never changes anything).

use crate::modules::args::{dict, ModuleArgs, Params};
use crate::modules::kit::{checksum_tool, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

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
        let get_mime = a.bool(&["get_mime", "mime", "mime_type", "mime-type"], true)?;
        a.ignore(&["get_md5", "get_attributes", "attr", "attributes"]);
        a.finish()?;

        let tool = if get_checksum {
            checksum_tool(&algo)
        } else {
            None
        };
        let mut probe = Query::new();
        if get_mime {
            // What ansible-core runs: `file` names the type and encoding.
            probe.section(
                "mime",
                &format!(
                    "command -v file >/dev/null && file --mime-type --mime-encoding {}",
                    quote(&path)
                ),
            );
        }
        probe.stat("p", &path, follow, tool);
        let q = probe.run_checked(ctx).await?;
        let st = q.stat("p");
        let mut pairs = st.to_pairs(&path, get_checksum);
        if get_mime && st.exists {
            let (mimetype, charset) = parse_mime(q.trimmed("mime"))
                .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
            pairs.push(("mimetype", mimetype.into()));
            pairs.push(("charset", charset.into()));
        }
        Ok(Plan::done(ModuleResult::ok().with("stat", dict(pairs))))
    }
}

/// `path: text/plain; charset=us-ascii` → (`text/plain`, `us-ascii`), split
/// as ansible-core splits it (at the last `:`).
fn parse_mime(out: &str) -> Option<(String, String)> {
    let (_, rest) = out.rsplit_once(':')?;
    let (mimetype, charset) = rest.split_once(';')?;
    let (_, charset) = charset.split_once('=')?;
    Some((mimetype.trim().to_string(), charset.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::parse_mime;

    #[test]
    fn mime_output_splits_at_the_last_colon() {
        assert_eq!(
            parse_mime("/tmp/foo:bar.txt: text/plain; charset=us-ascii"),
            Some(("text/plain".into(), "us-ascii".into()))
        );
        assert_eq!(parse_mime(""), None);
    }
}
