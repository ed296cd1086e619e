//! `assemble`: joins the fragment files of a directory (in name order,
//! optionally filtered by a pattern, with a delimiter between them) into one
//! destination file. The fragments are read from the host (`remote_src`, the
//! default: one query round trip brings them all) or from the controller's
//! search path; the joined bytes then go through the kit's content path
//! (`put_content`), which compares checksums, honours check mode, diff,
//! `validate`, `backup` and the file attributes.

use base64::Engine as _;
use md5::Digest as _;

use crate::modules::args::{ModuleArgs, Params};
use crate::modules::kit::attrs::FILE_ATTR_PARAMS;
use crate::modules::kit::edit::compile;
use crate::modules::kit::{put_content, FileAttrs, Put, Query};
use crate::modules::{Args, Module, ModuleError, ModuleResult, Plan, TaskContext};
use crate::shell::quote;

pub struct Assemble;

/// The arguments `assemble` accepts (each: the name, then its aliases).
static PARAMS: Params = Params {
    module: "assemble",
    sets: &[
        &[
            &["src"],
            &["dest"],
            &["delimiter"],
            &["backup"],
            &["remote_src"],
            &["regexp"],
            &["ignore_hidden"],
            &["validate"],
            &["decrypt"],
            &["follow"],
        ],
        FILE_ATTR_PARAMS,
    ],
};

/// One fragment: its file name and bytes.
type Fragment = (String, Vec<u8>);

#[async_trait::async_trait]
impl Module for Assemble {
    fn params(&self) -> Option<&'static Params> {
        Some(&PARAMS)
    }

    async fn plan<'a>(
        &'a self,
        args: &'a Args,
        ctx: &'a TaskContext<'a>,
    ) -> Result<Plan<'a>, ModuleError> {
        let mut a = ModuleArgs::new(&PARAMS, args);
        let (Some(src), Some(dest)) = (a.string(&["src"])?, a.string(&["dest"])?) else {
            return Ok(Plan::done(ModuleResult::failed(
                "src and dest are required",
            )));
        };
        let delimiter = a.string(&["delimiter"])?;
        let backup = a.bool(&["backup"], false)?;
        let remote_src = a.bool(&["remote_src"], true)?;
        let regexp = a.string(&["regexp"])?;
        let ignore_hidden = a.bool(&["ignore_hidden"], false)?;
        let validate = a.string(&["validate"])?;
        let follow = a.bool(&["follow"], false)?;
        let attrs = FileAttrs::parse(&mut a)?;
        // Keel's fragments are read as they are; vaulted fragments are not
        // decrypted here.
        a.ignore(&["decrypt"]);
        a.finish()?;

        let pattern = match &regexp {
            Some(r) => Some(
                compile("regexp", r)
                    .map_err(|e| ModuleError::Args(format!("Invalid Regexp ({e}) in \"{r}\"")))?,
            ),
            None => None,
        };
        if let Some(v) = &validate {
            if !v.contains("%s") {
                return Ok(Plan::done(ModuleResult::failed(format!(
                    "validate must contain %s: {v}"
                ))));
            }
        }
        let fragments = if remote_src {
            match remote_fragments(ctx, &src).await? {
                Ok(f) => f,
                Err(msg) => return Ok(Plan::done(ModuleResult::failed(msg))),
            }
        } else {
            let Some(dir) = ctx.find_file("files", &src) else {
                return Ok(Plan::done(ModuleResult::failed(format!(
                    "Could not find or access '{src}' on the controller"
                ))));
            };
            if !dir.is_dir() {
                return Ok(Plan::done(ModuleResult::failed(format!(
                    "Source ({}) is not a directory",
                    dir.display()
                ))));
            }
            local_fragments(&dir)
                .map_err(|e| ModuleError::Failed(format!("cannot read {}: {e}", dir.display())))?
        };
        let chosen = fragments.into_iter().filter(|(name, _)| {
            pattern.as_ref().is_none_or(|re| re.is_match(name))
                && !(ignore_hidden && name.starts_with('.'))
        });
        let content = join(chosen, delimiter.as_deref());
        let md5 = hex::encode(md5::Md5::digest(&content));
        let put = Put {
            dest,
            basename: None,
            content,
            attrs,
            preserve_mode: None,
            backup,
            force: true,
            validate,
            follow,
            extra: vec![
                ("src".into(), src.into()),
                ("md5sum".into(), md5.into()),
                ("msg".into(), "OK".into()),
            ],
        };
        put_content(ctx, put).await
    }
}

/// The regular files of `src` on the host, with their bytes (one round
/// trip). Names travel base64-encoded, so any byte in them survives.
async fn remote_fragments(
    ctx: &TaskContext<'_>,
    src: &str,
) -> Result<Result<Vec<Fragment>, String>, ModuleError> {
    let mut q = Query::new();
    q.raw(&format!(
        "s={}\nif [ ! -e \"$s\" ]; then echo 'MISSING 1'; elif [ ! -d \"$s\" ]; then echo 'NOTDIR 1'; fi\n",
        quote(src)
    ));
    q.section(
        "fragments",
        "cd -- \"$s\" || exit 0\nfor f in * .[!.]* ..?*; do [ -f \"$f\" ] || continue; printf '%s %s\\n' \"$(printf %s \"$f\" | base64 | tr -d '\\n')\" \"$(wc -c < \"$f\")\"; cat -- \"$f\"; done",
    );
    let ans = q.run(ctx).await?;
    if ans.line("MISSING").is_some() {
        return Ok(Err(format!("Source ({src}) does not exist")));
    }
    if ans.line("NOTDIR").is_some() {
        return Ok(Err(format!("Source ({src}) is not a directory")));
    }
    let mut rest = ans.bytes("fragments");
    let mut out = Vec::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
        let (name, size) = header.split_once(' ').unwrap_or((&header, "0"));
        let size: usize = size.trim().parse().unwrap_or(0);
        let body_end = (nl + 1 + size).min(rest.len());
        let name = b64
            .decode(name)
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .unwrap_or_default();
        out.push((name, rest[nl + 1..body_end].to_vec()));
        rest = &rest[body_end..];
    }
    out.sort();
    Ok(Ok(out))
}

/// The regular files of a controller directory, with their bytes.
fn local_fragments(dir: &std::path::Path) -> std::io::Result<Vec<Fragment>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.is_file() {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(&path)?,
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// ansible-core's joining: a newline after a fragment that lacks one, the
/// delimiter (with Python's escapes decoded, ending in a newline) between
/// fragments.
fn join(fragments: impl Iterator<Item = Fragment>, delimiter: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut delimiter: Option<Vec<u8>> = delimiter.map(|d| d.as_bytes().to_vec());
    let mut add_newline = false;
    let mut first = true;
    for (_, body) in fragments {
        if add_newline {
            out.push(b'\n');
        }
        if !first {
            if let Some(d) = delimiter.as_mut().filter(|d| !d.is_empty()) {
                // ansible-core decodes the (already decoded) delimiter again
                // before each fragment; doing the same keeps the bytes equal.
                *d = escape_decode(d);
                out.extend_from_slice(d);
                if d.last() != Some(&b'\n') {
                    out.push(b'\n');
                }
            }
        }
        add_newline = !body.ends_with(b"\n");
        out.extend_from_slice(&body);
        first = false;
    }
    out
}

/// Python's `codecs.escape_decode`: `\n`, `\t`, `\\`, `\xhh`, octal and
/// the other one-letter escapes; anything else stays as written.
fn escape_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' || i + 1 >= s.len() {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let c = s[i + 1];
        let simple = match c {
            b'\n' => Some(None),
            b'\\' => Some(Some(b'\\')),
            b'\'' => Some(Some(b'\'')),
            b'"' => Some(Some(b'"')),
            b'a' => Some(Some(7)),
            b'b' => Some(Some(8)),
            b'f' => Some(Some(12)),
            b'n' => Some(Some(b'\n')),
            b'r' => Some(Some(b'\r')),
            b't' => Some(Some(b'\t')),
            b'v' => Some(Some(11)),
            _ => None,
        };
        if let Some(b) = simple {
            out.extend(b);
            i += 2;
            continue;
        }
        if c == b'x' {
            let hex = s
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        if (b'0'..=b'7').contains(&c) {
            let mut j = i + 1;
            let mut v: u32 = 0;
            while j < s.len() && j < i + 4 && (b'0'..=b'7').contains(&s[j]) {
                v = v * 8 + u32::from(s[j] - b'0');
                j += 1;
            }
            out.push((v & 0xff) as u8);
            i = j;
            continue;
        }
        out.push(b'\\');
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frags(items: &[(&str, &str)]) -> Vec<Fragment> {
        items
            .iter()
            .map(|(n, b)| (n.to_string(), b.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn fragments_join_with_newlines_and_delimiters() {
        let f = frags(&[("a", "one"), ("b", "two\n"), ("c", "three\n")]);
        assert_eq!(join(f.clone().into_iter(), None), b"one\ntwo\nthree\n");
        assert_eq!(
            join(f.into_iter(), Some("#--\\t--#")),
            b"one\n#--\t--#\ntwo\n#--\t--#\nthree\n"
        );
    }

    #[test]
    fn escapes_decode_like_python_bytes() {
        assert_eq!(escape_decode(br"a\nb\x41\101\q"), b"a\nbAA\\q");
    }
}
