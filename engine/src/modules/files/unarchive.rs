//! `unarchive`: unpacks a tar (plain, gz, bz2, xz) or zip archive into a
//! directory on the host.
//!
//! The archive is either on the controller (found like `copy`'s `src` and
//! sent as the script's stdin) or already on the host (`remote_src`). One
//! round trip does the rest: it unpacks into a scratch directory on the
//! host, compares every unpacked path with `dest` (type, content, mode,
//! link target) and, unless in check mode, copies the scratch tree over
//! `dest` only when something differs. `changed` is that observed
//! difference, so re-running with the same archive is a no-op.

use crate::modules::args::{ModeSpec, ModuleArgs, Params};
use crate::modules::kit::{failure_text, state_diff, Answers};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Unarchive;

/// Script exit statuses the controller turns into messages.
const NOT_DIR: i32 = 80;
const NO_SRC: i32 = 81;
const NO_UNZIP: i32 = 82;
const EXTRACT_FAILED: i32 = 83;

/// The arguments `unarchive` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "unarchive",
    sets: &[&[
        &["src"],
        &["dest"],
        &["copy"],
        &["remote_src"],
        &["creates"],
        &["list_files"],
        &["exclude"],
        &["include"],
        &["extra_opts"],
        &["mode"],
        &["owner"],
        &["group"],
        &["keep_newer"],
        &["validate_certs"],
        &["decrypt"],
        &["io_buffer_size"],
        &["attributes"],
        &["unsafe_writes"],
        &["seuser"],
        &["serole"],
        &["setype"],
        &["selevel"],
    ]],
};

#[async_trait::async_trait]
impl Module for Unarchive {
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
        // `copy: no` is the old spelling of `remote_src: yes`.
        let copy = a.opt_bool(&["copy"])?;
        let remote_src = a.bool(&["remote_src"], false)? || copy == Some(false);
        let creates = a.string(&["creates"])?;
        let list_files = a.bool(&["list_files"], false)?;
        let exclude = a.list_no_split(&["exclude"])?.unwrap_or_default();
        let include = a.list_no_split(&["include"])?.unwrap_or_default();
        let extra_opts = a.list_no_split(&["extra_opts"])?.unwrap_or_default();
        let mode = a.mode(&["mode"])?;
        let owner = a.string(&["owner"])?;
        let group = a.string(&["group"])?;
        a.ignore(&[
            "keep_newer",
            "validate_certs",
            "decrypt",
            "io_buffer_size",
            "attributes",
            "unsafe_writes",
            "seuser",
            "serole",
            "setype",
            "selevel",
        ]);
        a.finish()?;

        let stdin =
            if remote_src {
                None
            } else {
                let Some(p) = ctx.find_file("files", &src) else {
                    return Ok(Plan::done(ModuleResult::failed(format!(
                        "Could not find or access '{src}' on the Ansible Controller."
                    ))));
                };
                Some(std::fs::read(&p).map_err(|e| {
                    ModuleError::Failed(format!("could not read {}: {e}", p.display()))
                })?)
            };

        let token = format!("@@KEEL-UNARCHIVE-{:016x}@@", rand::random::<u64>());
        let sec = |name: &str| format!("printf '\\n%s %s\\n' '{token}' '{name}'\n");
        let mut s = String::new();
        if let Some(c) = &creates {
            s.push_str(&format!(
                "if [ -e {} ]; then {}echo 1; exit 0; fi\n",
                quote(c),
                sec("skip")
            ));
        }
        s.push_str(&format!(
            "d={}\n[ -d \"$d\" ] || exit {NOT_DIR}\n\
             t=$(mktemp -d) || exit 1\ntrap 'rm -rf \"$t\"' EXIT\nmkdir \"$t/x\"\n",
            quote(&dest)
        ));
        if remote_src {
            s.push_str(&format!(
                "[ -f {0} ] || exit {NO_SRC}\nar={0}\n",
                quote(&src)
            ));
        } else {
            s.push_str("cat > \"$t/archive\"\nar=\"$t/archive\"\n");
        }
        let extra: String = extra_opts
            .iter()
            .map(|o| format!(" {}", quote(o)))
            .collect();
        let tar_ex: String = exclude
            .iter()
            .map(|e| format!(" --exclude={}", quote(e)))
            .collect();
        let tar_in: String = include.iter().map(|e| format!(" {}", quote(e))).collect();
        let zip_in = tar_in.clone();
        let zip_ex = if exclude.is_empty() {
            String::new()
        } else {
            format!(
                " -x{}",
                exclude
                    .iter()
                    .map(|e| format!(" {}", quote(e)))
                    .collect::<String>()
            )
        };
        // The zip local-file signature decides the handler; GNU tar detects
        // its compression by itself.
        s.push_str(&format!(
            "magic=$(od -An -tx1 -N4 \"$ar\" | tr -d ' \\n')\n\
             if [ \"$magic\" = 504b0304 ] || [ \"$magic\" = 504b0506 ]; then\n\
               command -v unzip >/dev/null 2>&1 || exit {NO_UNZIP}\n\
               {h}echo ZipArchive\n\
               unzip -q -o{extra} \"$ar\"{zip_in}{zip_ex} -d \"$t/x\" >&2 || exit {EXTRACT_FAILED}\n\
               {f}unzip -Z1 \"$ar\"{zip_in}{zip_ex}\n\
             else\n\
               {h}echo TgzArchive\n\
               tar -xf \"$ar\" -C \"$t/x\"{extra}{tar_ex}{tar_in} >&2 || exit {EXTRACT_FAILED}\n\
               {f}tar -tf \"$ar\"{tar_ex}{tar_in}\n\
             fi\n",
            h = sec("handler"),
            f = sec("files"),
        ));
        // Paths that differ from dest (missing, other type, other content or
        // mode, other link target).
        s.push_str(&format!(
            "{}cd \"$t/x\" && find . -mindepth 1 | while IFS= read -r p; do\n\
               q=\"$d/$p\"\n\
               if [ -L \"$p\" ]; then [ -L \"$q\" ] && [ \"$(readlink \"$p\")\" = \"$(readlink \"$q\")\" ] || echo \"${{p#./}}\"\n\
               elif [ -d \"$p\" ]; then [ -d \"$q\" ] && ! [ -L \"$q\" ] || echo \"${{p#./}}\"\n\
               else [ -f \"$q\" ] && ! [ -L \"$q\" ] && cmp -s \"$p\" \"$q\"{same_mode} || echo \"${{p#./}}\"; fi\n\
             done > \"$t/differ\"\ncd /\ncat \"$t/differ\"\n",
            sec("differ"),
            // With `mode` set the archive's own modes do not count.
            same_mode = if mode.is_none() {
                " && [ \"$(stat -c %a \"$p\")\" = \"$(stat -c %a \"$q\")\" ]"
            } else {
                ""
            },
        ));
        // Check mode runs the script up to here: it only learns what differs.
        let preview = s.clone();
        {
            s.push_str("if [ -s \"$t/differ\" ]; then cp -a \"$t/x/.\" \"$d/\" || exit 1; fi\n");
            // Ownership and mode apply to every unpacked path; a difference
            // counts as a change.
            let mut attr = String::new();
            if let Some(o) = &owner {
                attr.push_str(&format!("chown -h {} \"$q\"; ", quote(o)));
            }
            if let Some(g) = &group {
                attr.push_str(&format!("chgrp -h {} \"$q\"; ", quote(g)));
            }
            match &mode {
                Some(ModeSpec::Octal(m)) => {
                    attr.push_str(&format!("[ -L \"$q\" ] || chmod {m:04o} \"$q\"; "))
                }
                Some(ModeSpec::Symbolic(m)) => {
                    attr.push_str(&format!("[ -L \"$q\" ] || chmod {} \"$q\"; ", quote(m)))
                }
                _ => {}
            }
            if !attr.is_empty() {
                s.push_str(&format!(
                    "{}cd \"$t/x\" && find . -mindepth 1 | while IFS= read -r p; do q=\"$d/${{p#./}}\"\n\
                       b=$(stat -c '%a %U %G' \"$q\"); {attr}\n\
                       [ \"$b\" = \"$(stat -c '%a %U %G' \"$q\")\" ] || echo \"${{p#./}}\"\n\
                     done; cd /\n",
                    sec("attrs")
                ));
            }
        }
        let out_of = Outcome {
            token,
            src,
            dest,
            creates,
            list_files,
        };
        let stdin2 = stdin.clone();
        let out_of2 = out_of.clone();
        Ok(Plan::fused(
            out_of2.run(ctx, preview, stdin2),
            out_of.run(ctx, s, stdin),
        ))
    }
}

/// How one run of the unarchive script becomes the module's result.
#[derive(Clone)]
struct Outcome {
    token: String,
    src: String,
    dest: String,
    creates: Option<String>,
    list_files: bool,
}

impl Outcome {
    async fn run(
        self,
        ctx: &TaskContext<'_>,
        s: String,
        stdin: Option<Vec<u8>>,
    ) -> Result<ModuleResult, ModuleError> {
        let Outcome {
            token,
            src,
            dest,
            creates,
            list_files,
        } = self;
        let out = ctx.run(s, stdin).await?;
        let fail = |m: String| {
            Ok(ModuleResult::failed(m)
                .with("dest", dest.clone())
                .with("src", src.clone()))
        };
        match out.rc {
            0 => {}
            NOT_DIR => return fail(format!("dest '{dest}' must be an existing dir")),
            NO_SRC => return fail(format!("Source '{src}' does not exist")),
            NO_UNZIP => {
                return fail(
                    "Unable to find required 'unzip' binary in the path; install unzip on the host to unpack zip archives"
                        .into(),
                )
            }
            EXTRACT_FAILED => {
                return fail(format!(
                    "Failed to unpack {src} to {dest}: {}",
                    failure_text(&out)
                ))
            }
            _ => return fail(failure_text(&out)),
        }
        let ans = Answers::parse(&token, &out.stdout);
        if ans.yes("skip") {
            let mut r = ModuleResult::ok().with_msg(format!(
                "skipped, since {} exists",
                creates.unwrap_or_default()
            ));
            r.skipped = true;
            return Ok(r);
        }
        let lines = |k: &str| -> Vec<String> {
            ans.text(k)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        };
        let differ = lines("differ");
        let attrs = lines("attrs");
        let mut res = ModuleResult::changed(!differ.is_empty() || !attrs.is_empty())
            .with("dest", dest.clone())
            .with("src", src.clone())
            .with("handler", ans.trimmed("handler").to_string());
        if list_files {
            res.data.insert("files".into(), lines("files").into());
        }
        if ctx.diff && res.changed {
            let mut all = differ.clone();
            all.extend(attrs.into_iter().filter(|p| !differ.contains(p)));
            res.diff
                .push(state_diff(&dest, &[], &[("unpacked", all.join(", "))]));
        }
        Ok(res)
    }
}
