//! Bringing a source onto the controller: a git clone at a ref, a tarball
//! (a path, `file://` or HTTP(S) URL) unpacked, or a directory copied —
//! always into a fresh temporary directory, so an install never writes a
//! half-fetched tree into a roles or collections path.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::GalaxyError;

/// A scratch directory removed when dropped.
pub(crate) type Scratch = tempfile::TempDir;

pub(crate) fn scratch() -> Result<Scratch, GalaxyError> {
    tempfile::Builder::new()
        .prefix("keel-galaxy-")
        .tempdir()
        .map_err(|e| GalaxyError::io("creating a temporary directory", e))
}

fn git(url: &str, args: &[&str], cwd: Option<&Path>) -> Result<(), GalaxyError> {
    let mut cmd = Command::new("git");
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    // Never stop to ask for credentials: a run with no terminal would hang.
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| GalaxyError::io("running git (is it installed?)", e))?;
    if !out.status.success() {
        return Err(GalaxyError::Git {
            url: url.to_string(),
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Clones `url` into `<scratch>/<name>` and checks out `reference` (a tag,
/// branch or commit) when one is given, as ansible-galaxy does.
pub(crate) fn git_clone(
    url: &str,
    reference: Option<&str>,
    scratch: &Path,
    name: &str,
) -> Result<PathBuf, GalaxyError> {
    let dest = scratch.join(name);
    let dest_s = dest.to_string_lossy().to_string();
    git(url, &["clone", "--quiet", url, &dest_s], None)?;
    if let Some(r) = reference.filter(|r| !r.is_empty()) {
        git(url, &["checkout", "--quiet", r], Some(&dest))?;
    }
    Ok(dest)
}

/// The bytes of a tarball at a path or URL.
pub(crate) fn read_source(src: &str) -> Result<Vec<u8>, GalaxyError> {
    if let Some(path) = src.strip_prefix("file://") {
        return std::fs::read(path).map_err(|e| GalaxyError::io(format!("reading {path}"), e));
    }
    if src.starts_with("http://") || src.starts_with("https://") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| GalaxyError::io("starting the HTTP client", e))?;
        return rt.block_on(async {
            let resp = reqwest::get(src)
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| GalaxyError::Source(format!("downloading {src}: {e}")))?;
            resp.bytes()
                .await
                .map(|b| b.to_vec())
                .map_err(|e| GalaxyError::Source(format!("downloading {src}: {e}")))
        });
    }
    std::fs::read(src).map_err(|e| GalaxyError::io(format!("reading {src}"), e))
}

/// Unpacks a tar archive (gzip-compressed or not) into `into`. Entries
/// that would land outside it (`..`, absolute paths) are refused by the
/// `tar` crate's `unpack`.
pub(crate) fn unpack(bytes: &[u8], into: &Path, what: &str) -> Result<(), GalaxyError> {
    let reader: Box<dyn std::io::Read> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    tar::Archive::new(reader)
        .unpack(into)
        .map_err(|e| GalaxyError::Source(format!("{what} is not a readable tar archive: {e}")))
}

/// Copies a tree, leaving out version-control directories.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<(), GalaxyError> {
    std::fs::create_dir_all(to)
        .map_err(|e| GalaxyError::io(format!("creating {}", to.display()), e))?;
    let entries = std::fs::read_dir(from)
        .map_err(|e| GalaxyError::io(format!("reading {}", from.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| GalaxyError::io(format!("reading {}", from.display()), e))?;
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let ft = entry
            .file_type()
            .map_err(|e| GalaxyError::io(format!("reading {}", src.display()), e))?;
        if ft.is_dir() {
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src)
                .map_err(|e| GalaxyError::io(format!("reading {}", src.display()), e))?;
            std::os::unix::fs::symlink(target, &dst)
                .map_err(|e| GalaxyError::io(format!("writing {}", dst.display()), e))?;
        } else {
            std::fs::copy(&src, &dst)
                .map_err(|e| GalaxyError::io(format!("writing {}", dst.display()), e))?;
        }
    }
    Ok(())
}

/// Replaces `dest` with `staged` (a directory on the same or another file
/// system): the old tree goes only once the new one is complete.
pub(crate) fn put_in_place(staged: &Path, dest: &Path) -> Result<(), GalaxyError> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| GalaxyError::io(format!("creating {}", parent.display()), e))?;
    }
    if dest.exists() || dest.symlink_metadata().is_ok() {
        remove(dest)?;
    }
    if std::fs::rename(staged, dest).is_err() {
        copy_tree(staged, dest)?;
    }
    Ok(())
}

pub(crate) fn remove(path: &Path) -> Result<(), GalaxyError> {
    let r = if path.is_dir() && !path.is_symlink() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    r.map_err(|e| GalaxyError::io(format!("removing {}", path.display()), e))
}
