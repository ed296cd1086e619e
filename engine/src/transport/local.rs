//! Local transport: each [`Command`] is a child `/bin/sh -c` on the controller.
//!
//! Used for `connection: local` and `localhost`. The child runs in its own
//! process group so a timeout kills everything it started.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::command::{Command, Output, TransportError};
use super::r#become::{self, Wrapped};

pub struct LocalConnection {
    host: String,
}

impl Default for LocalConnection {
    fn default() -> Self {
        LocalConnection {
            host: "localhost".to_string(),
        }
    }
}

impl LocalConnection {
    /// A local connection reported under `host` in errors.
    pub fn new(host: impl Into<String>) -> LocalConnection {
        LocalConnection { host: host.into() }
    }

    pub async fn exec(&self, cmd: &Command) -> Result<Output, TransportError> {
        let script = r#become::with_env(&cmd.script, &cmd.env);
        let wrapped = match &cmd.become_ {
            Some(b) => r#become::wrap(&script, b),
            None => Wrapped {
                script,
                stdin_prefix: None,
                pty_password: None,
            },
        };
        if wrapped.pty_password.is_some() {
            return Err(TransportError::Become {
                host: self.host.clone(),
                method: "su".into(),
                reason: "su with a password needs a terminal, which the local \
                         connection does not provide; use sudo or connect over SSH"
                    .into(),
            });
        }
        let mut stdin = wrapped.stdin_prefix.clone().unwrap_or_default();
        if let Some(s) = &cmd.stdin {
            stdin.extend_from_slice(s);
        }

        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&wrapped.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| TransportError::Other {
                host: self.host.clone(),
                reason: format!("cannot start /bin/sh: {e}"),
            })?;
        let pid = child.id();
        let mut child_stdin = child.stdin.take().expect("piped stdin");
        // Writing on its own task: a script that does not read its stdin
        // must not block us (and a closed pipe is not an error).
        let writer = tokio::spawn(async move {
            let _ = child_stdin.write_all(&stdin).await;
            let _ = child_stdin.shutdown().await;
        });
        let run = child.wait_with_output();
        let out = match cmd.timeout {
            Some(t) => match tokio::time::timeout(t, run).await {
                Ok(r) => r,
                Err(_) => {
                    if let Some(pid) = pid {
                        // SAFETY: plain syscall; the group id is the child's pid.
                        unsafe {
                            libc::kill(-(pid as i32), libc::SIGKILL);
                        }
                    }
                    writer.abort();
                    return Err(TransportError::Timeout {
                        host: self.host.clone(),
                        secs: t.as_secs(),
                    });
                }
            },
            None => run.await,
        }
        .map_err(|e| TransportError::Other {
            host: self.host.clone(),
            reason: format!("waiting for /bin/sh: {e}"),
        })?;
        writer.abort();
        let rc = match out.status.code() {
            Some(c) => c,
            None => {
                use std::os::unix::process::ExitStatusExt;
                128 + out.status.signal().unwrap_or(0)
            }
        };
        if cmd.become_.is_some() && r#become::refused(rc, &out.stderr) {
            return Err(TransportError::Become {
                host: self.host.clone(),
                method: "sudo".into(),
                reason: r#become::refusal_reason(&out.stderr),
            });
        }
        Ok(Output {
            rc,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}
