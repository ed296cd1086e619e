//! A git project's checkout. Each project has a bare mirror under
//! `<data_dir>/projects/<id>/mirror`, fetched before every run, and one
//! checkout per commit under `<data_dir>/projects/<id>/rev/<sha>`: a run
//! resolves its branch to a commit once, records it on the run row, and
//! every later attempt of that run uses the same commit, so a push during a
//! run changes only the next run.
//!
//! git always runs as an argument vector (never through a shell); the URL
//! and ref come after `--end-of-options`/`--` where git takes options, the
//! URL was checked when the project was saved (`catalog::check_git_url`),
//! remote helpers (`ext::`) are refused by `GIT_ALLOW_PROTOCOL`, and git
//! never prompts. A deploy key is written for the fetch only, 0600 in a
//! 0700 directory, and removed when the fetch ends; the server's host key
//! must already be in [`known_hosts_file`] (or the panel user's
//! `~/.ssh/known_hosts`), since nothing is learned on first use.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::secrets::Secret;

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// git ran and refused; `stderr` is what it said, with the passwords
    /// of URLs hidden ([`redact`]).
    #[error("git {action} failed: {stderr}")]
    Failed {
        action: &'static str,
        stderr: String,
    },
    #[error("git {0} took longer than {1} s")]
    Timeout(&'static str, u64),
    /// The URL's host is somewhere the panel does not connect to.
    #[error("git fetch refused: {0}")]
    Refused(#[from] crate::outbound::OutboundError),
    /// The git server's SSH host key is not one the panel knows: the panel
    /// never learns a key on first use.
    #[error(
        "the git server's SSH host key is not in {} (or does not match the key there): \
         check the server's fingerprint by other means, then add its key line to that file \
         (ssh-keyscan -p PORT HOST prints it); ssh said: {stderr}",
        file.display()
    )]
    HostKey { file: PathBuf, stderr: String },
}

/// Where the panel keeps the SSH host keys of git servers that projects
/// fetch from with a deploy key: `<data_dir>/git_known_hosts`, in OpenSSH's
/// known_hosts format, written by the operator (nothing is learned on
/// first use) and taken by `admin backup`. The panel user's own
/// `~/.ssh/known_hosts` is read after it.
pub fn known_hosts_file(data_dir: &Path) -> PathBuf {
    data_dir.join("git_known_hosts")
}

/// The host, port and whether git fetches it with curl, of a remote URL;
/// `None` for a local one (`file://`, a path).
fn remote_host(url: &str) -> Option<(String, u16, bool)> {
    let Some((scheme, rest)) = url.split_once("://") else {
        // scp-like user@host:path (check_git_url admits no other form).
        if url.starts_with('/') {
            return None;
        }
        let head = url.split_once(':')?.0;
        return Some((head.rsplit('@').next()?.to_string(), 22, false));
    };
    let (default_port, curl) = match scheme {
        "https" => (443, true),
        "http" => (80, true),
        "ssh" => (22, false),
        "git" => (9418, false),
        _ => return None,
    };
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit('@').next()?;
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (h, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then(|| (host.to_string(), port, curl))
}

const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// `text` with the secrets of every URL's user part hidden: the password
/// of `scheme://user:password@host` becomes `***`, and so does a lone user
/// part of an `http(s)://` URL, which is how access tokens are written
/// (`https://TOKEN@host/repo`). An SSH user (`ssh://git@host`) stays. For
/// anything that shows a git URL or what git said about one: API answers,
/// pages, audit rows, job errors and logs.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let web = head.ends_with("http://") || head.ends_with("https://");
        // The authority ends where the path, a quote or a blank begins.
        let end = tail
            .find(|c: char| c == '/' || c == '\'' || c == '"' || c == '<' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let user = &authority[..at];
                match user.split_once(':') {
                    Some((name, _)) => {
                        out.push_str(name);
                        out.push_str(":***");
                    }
                    None if web => out.push_str("***"),
                    None => out.push_str(user),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// One project's git settings, as a run needs them.
pub struct Repo<'a> {
    /// Where the fetch may connect (the SSRF guard).
    pub outbound: &'a crate::outbound::Outbound,
    pub project_id: i64,
    pub url: &'a str,
    pub git_ref: Option<&'a str>,
    pub deploy_key: Option<&'a Secret>,
}

fn project_dir(data_dir: &Path, id: i64) -> PathBuf {
    data_dir.join("projects").join(id.to_string())
}

/// Serialises fetches (and requirements installs) of one project within this process (git's own lock
/// files turn a clash between processes into a retryable failure).
pub(crate) fn project_lock(id: i64) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut m = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    m.entry(id).or_default().clone()
}

/// A directory that exists only while the fetch runs, holding the deploy
/// key (0600, in a 0700 directory).
struct KeyDir(PathBuf);

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> GitError {
    let context = context.into();
    move |source| GitError::Io { context, source }
}

async fn git(
    action: &'static str,
    args: &[&str],
    env: &[(&str, String)],
) -> Result<String, GitError> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.args([
        "-c",
        "protocol.ext.allow=never",
        "-c",
        "protocol.fd.allow=never",
    ])
    .args(args)
    .env("GIT_TERMINAL_PROMPT", "0")
    .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
    .env("GIT_CONFIG_NOSYSTEM", "1")
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(GIT_TIMEOUT, cmd.output())
        .await
        .map_err(|_| GitError::Timeout(action, GIT_TIMEOUT.as_secs()))?
        .map_err(io(format!("running git {action}")))?;
    if !out.status.success() {
        // git may repeat the URL, credentials and all, in what it says.
        return Err(GitError::Failed {
            action,
            stderr: redact(String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Fetches the project and returns the commit `pinned` (when a previous
/// attempt of the run resolved one) or the commit its ref names now, with
/// a checkout of that commit.
pub async fn checkout(
    data_dir: &Path,
    repo: &Repo<'_>,
    pinned: Option<&str>,
) -> Result<(PathBuf, String), GitError> {
    let lock = project_lock(repo.project_id);
    let _guard = lock.lock().await;
    let base = project_dir(data_dir, repo.project_id);
    let mirror = base.join("mirror");
    std::fs::create_dir_all(&base).map_err(io(format!("creating {}", base.display())))?;

    let mut env: Vec<(&str, String)> = Vec::new();
    let _key_dir = match repo.deploy_key {
        Some(key) => {
            use std::io::Write as _;
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            let dir = base.join(format!("key-{}", fastrand::u64(..)));
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(io(format!("creating {}", dir.display())))?;
            let guard = KeyDir(dir.clone());
            let path = dir.join("id");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io("writing the deploy key"))?;
            let mut text = key.expose().trim_end().to_string();
            text.push('\n');
            f.write_all(text.as_bytes())
                .map_err(io("writing the deploy key"))?;
            // GIT_SSH_COMMAND is read by a shell: both paths are the panel's
            // own, and quoted all the same. An unknown or changed host key
            // fails the fetch (never accept-new: a first fetch through a
            // hijacked name would pin the attacker's key).
            let known = format!(
                "UserKnownHostsFile={} ~/.ssh/known_hosts",
                known_hosts_file(data_dir).display()
            );
            env.push((
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o {}",
                    keel::shell::quote(&path.display().to_string()),
                    keel::shell::quote(&known)
                ),
            ));
            Some(guard)
        }
        None => None,
    };

    let mirror_s = mirror.display().to_string();
    if !mirror.join("HEAD").exists() {
        git(
            "init",
            &["init", "--quiet", "--bare", "--", &mirror_s],
            &env,
        )
        .await?;
    }
    let git_dir = format!("--git-dir={mirror_s}");
    // The SSRF guard: the remote's host must resolve only to addresses the
    // panel may reach. curl (http, https) is then pinned to exactly those
    // addresses and follows no redirect, so neither a second DNS answer nor
    // a redirect leads it elsewhere; ssh and git:// resolve again
    // themselves, so for them the check is as of now.
    let mut pin: Vec<String> = Vec::new();
    if let Some((host, port, curl)) = remote_host(repo.url) {
        let addrs = repo.outbound.resolve(&host, port).await?;
        let literal = host.parse::<std::net::IpAddr>().is_ok();
        if curl && !literal {
            let list: Vec<String> = addrs
                .iter()
                .map(|a| match a.ip() {
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                    v4 => v4.to_string(),
                })
                .collect();
            pin.push("-c".into());
            pin.push(format!(
                "http.curloptResolve={host}:{port}:{}",
                list.join(",")
            ));
        }
        if curl {
            pin.push("-c".into());
            pin.push("http.followRedirects=false".into());
        }
    }
    let mut args: Vec<&str> = vec![git_dir.as_str()];
    args.extend(pin.iter().map(String::as_str));
    // The URL is given on every fetch, so a project whose URL changed
    // fetches from the new one. Branches and tags are mirrored; the
    // remote's HEAD is remembered as FETCH_HEAD's first line.
    args.extend([
        "fetch",
        "--quiet",
        "--prune",
        "--force",
        "--",
        repo.url,
        "+HEAD:refs/keel/head",
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
    ]);
    git("fetch", &args, &env).await.map_err(|e| match e {
        GitError::Failed { stderr, .. } if stderr.contains("Host key verification failed") => {
            GitError::HostKey {
                file: known_hosts_file(data_dir),
                stderr,
            }
        }
        e => e,
    })?;
    let wanted = match (pinned, repo.git_ref) {
        (Some(sha), _) => sha.to_string(),
        (None, Some(r)) => r.to_string(),
        (None, None) => "refs/keel/head".to_string(),
    };
    let spec = format!("{wanted}^{{commit}}");
    let sha = git(
        "rev-parse",
        &[
            &git_dir,
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ],
        &env,
    )
    .await
    .map_err(|_| GitError::Failed {
        action: "rev-parse",
        stderr: format!("{wanted:?} names no commit of the repository"),
    })?;

    let rev = base.join("rev").join(&sha);
    if !rev.join(".git").exists() {
        let tmp = base
            .join("rev")
            .join(format!(".{sha}.{}", fastrand::u64(..)));
        std::fs::create_dir_all(base.join("rev")).map_err(io("creating the checkout directory"))?;
        let tmp_s = tmp.display().to_string();
        git(
            "clone",
            &[
                "clone",
                "--quiet",
                "--no-checkout",
                "--local",
                "--",
                &mirror_s,
                &tmp_s,
            ],
            &[],
        )
        .await?;
        git(
            "checkout",
            &["-C", &tmp_s, "checkout", "--quiet", "--detach", &sha, "--"],
            &[],
        )
        .await?;
        if let Err(e) = std::fs::rename(&tmp, &rev) {
            // Another process made the same checkout first: use it.
            let _ = std::fs::remove_dir_all(&tmp);
            if !rev.join(".git").exists() {
                return Err(io("moving the checkout in place")(e));
            }
        }
    }
    Ok((rev, sha))
}

#[cfg(test)]
mod tests {
    use super::{redact, remote_host};

    #[test]
    fn remote_hosts_of_git_urls() {
        let h = remote_host;
        assert_eq!(
            h("https://git.example.org/r.git"),
            Some(("git.example.org".into(), 443, true))
        );
        assert_eq!(
            h("http://u:p@127.0.0.1:8080/r"),
            Some(("127.0.0.1".into(), 8080, true))
        );
        assert_eq!(h("https://[::1]:8443/r"), Some(("::1".into(), 8443, true)));
        assert_eq!(
            h("ssh://git@host:2222/r"),
            Some(("host".into(), 2222, false))
        );
        assert_eq!(
            h("git://169.254.169.254/r"),
            Some(("169.254.169.254".into(), 9418, false))
        );
        assert_eq!(
            h("git@github.com:o/r.git"),
            Some(("github.com".into(), 22, false))
        );
        assert_eq!(h("file:///srv/repo"), None);
        assert_eq!(h("/srv/repo"), None);
    }

    #[test]
    fn url_secrets_are_hidden() {
        assert_eq!(
            redact("fatal: unable to access 'https://deploy:s3cret@git.example.org/r.git/': 403"),
            "fatal: unable to access 'https://deploy:***@git.example.org/r.git/': 403"
        );
        assert_eq!(
            redact("https://ghp_T0KEN@github.com/o/r and http://u:p@h"),
            "https://***@github.com/o/r and http://u:***@h"
        );
        // A password holding '@' or ':' is hidden whole.
        assert_eq!(
            redact("https://me:p@ss:w0rd@host/x"),
            "https://me:***@host/x"
        );
        for kept in [
            "ssh://git@host:22/repo.git",
            "git@host:org/repo.git",
            "https://host/repo.git",
            "file:///srv/repo",
            "no url here",
        ] {
            assert_eq!(redact(kept), kept);
        }
    }
}
