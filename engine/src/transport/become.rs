//! Privilege escalation: a command's [`Become`] settings, and wrapping its
//! script in `sudo` or `su`.
//!
//! Sits between a [`Command`](super::Command) and the connection that runs it:
//! both the local and the SSH transport call [`wrap`] and run what it returns.
//!
//! The password never appears in a command line or a log. For `sudo` it
//! travels as the first line of the command's stdin: a small `sh` prelude
//! reads that line (the shell's `read` consumes exactly one line from a pipe),
//! pipes it into `sudo -S -p '' -v` to validate and cache the credentials, and
//! then runs the real command with `sudo -n` (non-interactive; not `exec`ed,
//! since sudo keys its cache on the parent process when there is no tty), so the
//! password can never leak into the command's own stdin, whether or not sudo
//! would have asked for it (`NOPASSWD`, cached credentials). The cost is one
//! extra `sudo` process; the caveat is that it needs sudo's credential cache
//! (`timestamp_timeout` > 0, the default). `su` can only read a password from
//! a terminal, so `su` with a password asks the transport for a PTY and
//! answers the prompt there.

use crate::shell::quote;

/// Privilege escalation for one command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BecomeMethod {
    #[default]
    Sudo,
    Su,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Become {
    pub method: BecomeMethod,
    pub user: String,
    /// Never printed: `Debug` redacts it.
    pub password: Option<String>,
    pub flags: Option<String>,
    pub exe: Option<String>,
}

impl std::fmt::Debug for Become {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Become")
            .field("method", &self.method)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("flags", &self.flags)
            .finish()
    }
}

/// Printed on stderr by the sudo prelude when the password was refused; the
/// transports turn it into [`TransportError::Become`](super::TransportError::Become).
pub(crate) const FAILED_MARKER: &str = "KEEL-BECOME-FAILED";

/// Exit status the prelude uses together with [`FAILED_MARKER`].
pub(crate) const FAILED_RC: i32 = 97;

/// A script ready to run as the login user.
#[derive(Clone)]
pub(crate) struct Wrapped {
    pub script: String,
    /// Written to stdin before the command's own stdin.
    pub stdin_prefix: Option<Vec<u8>>,
    /// `su` with a password: run under a PTY and answer its prompt with this.
    pub pty_password: Option<String>,
}

/// Wraps `script` (already carrying its `export` prefix) for `b`.
pub(crate) fn wrap(script: &str, b: &Become) -> Wrapped {
    match b.method {
        BecomeMethod::Sudo => wrap_sudo(script, b),
        BecomeMethod::Su => wrap_su(script, b),
    }
}

fn wrap_sudo(script: &str, b: &Become) -> Wrapped {
    let exe = b.exe.as_deref().filter(|s| !s.is_empty()).unwrap_or("sudo");
    // Ansible's default flags are `-H -S -n`, kept as written (`-S` is
    // harmless beside `-n`, which never lets sudo read a password; the line
    // then reads as ansible-core's does in `-vvv` output). `-n` is added
    // when missing: the password, if any, was given to the prelude below.
    let user_flags = b.flags.as_deref().unwrap_or("-H -S -n");
    let mut run = exe.to_string();
    for f in user_flags.split_whitespace() {
        run.push(' ');
        run.push_str(f);
    }
    if !user_flags.split_whitespace().any(|f| f == "-n") {
        run.push_str(" -n");
    }
    run.push_str(&format!(
        " -u {} -- /bin/sh -c {}",
        quote(&b.user),
        quote(script)
    ));
    match &b.password {
        None => Wrapped {
            script: run,
            stdin_prefix: None,
            pty_password: None,
        },
        Some(pw) => {
            let prelude = format!(
                "IFS= read -r __keel_pw || __keel_pw=; \
                 if printf '%s\\n' \"$__keel_pw\" | {exe} -S -p '' -v; then unset __keel_pw; \
                 else unset __keel_pw; echo {FAILED_MARKER} >&2; exit {FAILED_RC}; fi; {run}"
            );
            let mut line = pw.as_bytes().to_vec();
            line.push(b'\n');
            Wrapped {
                script: prelude,
                stdin_prefix: Some(line),
                pty_password: None,
            }
        }
    }
}

fn wrap_su(script: &str, b: &Become) -> Wrapped {
    let exe = b.exe.as_deref().filter(|s| !s.is_empty()).unwrap_or("su");
    let flags = b.flags.as_deref().unwrap_or("");
    let mut run = exe.to_string();
    if !flags.trim().is_empty() {
        run.push(' ');
        run.push_str(flags.trim());
    }
    run.push_str(&format!(" {} -c {}", quote(&b.user), quote(script)));
    Wrapped {
        script: run,
        stdin_prefix: None,
        pty_password: b.password.clone(),
    }
}

/// Whether a finished command failed because escalation was refused.
pub(crate) fn refused(rc: i32, stderr: &[u8]) -> bool {
    rc == FAILED_RC && String::from_utf8_lossy(stderr).contains(FAILED_MARKER)
}

/// The part of stderr worth showing when escalation was refused (sudo's own
/// complaint), without our marker.
pub(crate) fn refusal_reason(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(FAILED_MARKER) && !l.trim().is_empty())
        .collect();
    if lines.is_empty() {
        "incorrect password or no sudo rights".to_string()
    } else {
        lines.join("; ")
    }
}

/// Prepends `export K='v';` for each variable.
pub(crate) fn with_env(script: &str, env: &[(String, String)]) -> String {
    if env.is_empty() {
        return script.to_string();
    }
    let mut out = String::new();
    for (k, v) in env {
        out.push_str(&format!("export {}={}; ", k, quote(v)));
    }
    out.push_str(script);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sudo(pw: Option<&str>) -> Become {
        Become {
            method: BecomeMethod::Sudo,
            user: "root".into(),
            password: pw.map(str::to_string),
            flags: None,
            exe: None,
        }
    }

    #[test]
    fn sudo_without_password_is_non_interactive() {
        let w = wrap("id -u", &sudo(None));
        assert_eq!(w.script, "sudo -H -S -n -u root -- /bin/sh -c 'id -u'");
        assert!(w.stdin_prefix.is_none());
    }

    #[test]
    fn sudo_password_goes_to_stdin_not_argv() {
        let w = wrap("id -u", &sudo(Some("s3cr'et")));
        assert!(!w.script.contains("s3cr"));
        assert_eq!(w.stdin_prefix.as_deref(), Some(&b"s3cr'et\n"[..]));
    }

    #[test]
    fn su_with_password_wants_pty() {
        let b = Become {
            method: BecomeMethod::Su,
            ..sudo(Some("x"))
        };
        let w = wrap("id", &b);
        assert_eq!(w.script, "su root -c id");
        assert_eq!(w.pty_password.as_deref(), Some("x"));
    }
}
