//! SSH transport: one russh session per host, commands on multiplexed
//! channels.
//!
//! [`SshConnection::connect`] dials the host (through jump hosts if any,
//! each hop a full SSH session tunnelled in a `direct-tcpip` channel of the
//! previous one; the first connection of the chain over TCP, or over the
//! stdin and stdout of a `ProxyCommand` child), checks every host key strictly against known_hosts, and
//! authenticates: key files, then password, then the ssh-agent. Each
//! [`Command`] then runs on its own session channel; a semaphore keeps the
//! number of open channels below sshd's `MaxSessions`, and a guard closes
//! every channel, since dropping a russh channel leaves it open on the server.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use russh::client::{self, Handle, Msg};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, ChannelWriteHalf, Pty};
use tokio::sync::Semaphore;

use super::command::{Command, Output, TransportError};
use super::known_hosts::{self, Verdict};
use super::r#become::{self, Wrapped};
use super::spec::{ConnectSpec, HostKeyPolicy, Keepalive};
use crate::shell::quote;

/// Verifies the server key of one hop and remembers why it was refused.
struct HostKeyCheck {
    files: Vec<PathBuf>,
    host: String,
    port: u16,
    policy: HostKeyPolicy,
    refusal: Arc<Mutex<Option<String>>>,
    /// Keys learned under `accept-new`, as warnings for the user.
    learned: Arc<Mutex<Vec<String>>>,
    /// Why the session ended, in words for the user, once it has.
    ended: Arc<Mutex<Option<String>>>,
    /// The keepalive in force, to explain a keepalive timeout.
    keepalive: Keepalive,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    /// Keeps why the session ended, so the host's unreachable message says
    /// it (a host that stopped answering, a reset, the server's goodbye)
    /// rather than only that a command's channel went away.
    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let (why, result) = match reason {
            client::DisconnectReason::ReceivedDisconnect(info) => (
                format!(
                    "the server ended the session ({:?}{}{})",
                    info.reason_code,
                    if info.message.is_empty() { "" } else { ": " },
                    info.message
                ),
                Ok(()),
            ),
            client::DisconnectReason::Error(russh::Error::KeepaliveTimeout) => {
                let every = self
                    .keepalive
                    .interval
                    .map(|d| format!(" sent every {}s", d.as_secs_f64()))
                    .unwrap_or_default();
                (
                    format!(
                        "the host stopped answering: no reply to {} keepalives{every} \
                         (ServerAliveInterval/ServerAliveCountMax)",
                        self.keepalive.max
                    ),
                    Err(russh::Error::KeepaliveTimeout),
                )
            }
            client::DisconnectReason::Error(e) => (format!("the connection ended: {e}"), Err(e)),
        };
        self.ended.lock().get_or_insert(why);
        result
    }

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(_) => {
                *self.refusal.lock() = Some(
                    "the server offered a host certificate, which Keel does not support".into(),
                );
                return Ok(false);
            }
        };
        let fp = known_hosts::fingerprint(key);
        let name = known_hosts::host_name(&self.host, self.port);
        let reason = match known_hosts::check(&self.files, &self.host, self.port, key) {
            Verdict::Trusted => return Ok(true),
            Verdict::Unknown if self.policy == HostKeyPolicy::AcceptNew => {
                let Some(file) = self.files.first() else {
                    *self.refusal.lock() = Some(format!(
                        "{} key {fp} of {name} is unknown and no known_hosts file is configured \
                         to learn it into",
                        key.algorithm()
                    ));
                    return Ok(false);
                };
                return match known_hosts::learn(file, &self.host, self.port, key) {
                    Ok(()) => {
                        self.learned.lock().push(format!(
                            "host key checking is off: permanently added the {} key {fp} of \
                             {name} to {} (a changed key is still refused)",
                            key.algorithm(),
                            file.display()
                        ));
                        Ok(true)
                    }
                    Err(e) => {
                        *self.refusal.lock() = Some(format!(
                            "{} key {fp} of {name} is unknown and could not be added to {}: {e}",
                            key.algorithm(),
                            file.display()
                        ));
                        Ok(false)
                    }
                };
            }
            Verdict::Unknown => format!(
                "{} key {fp} of {name} is not in {}; with host key checking on, Keel \
                 refuses unknown keys: add it to a known_hosts file (check the fingerprint \
                 out of band), e.g. `ssh-keyscan -p {} {} >> ~/.ssh/known_hosts`, or set \
                 host_key_checking = False to learn new keys (a changed key is still refused)",
                key.algorithm(),
                known_hosts::describe(&self.files),
                self.port,
                self.host
            ),
            Verdict::Mismatch { file, line } => format!(
                "REMOTE HOST KEY CHANGED: {name} presented {} key {fp}, which does not match \
                 {}:{line}; this may be a man-in-the-middle attack, or the host was reinstalled",
                key.algorithm(),
                file.display()
            ),
            Verdict::Revoked { file, line } => format!(
                "{} key {fp} of {name} is marked @revoked in {}:{line}",
                key.algorithm(),
                file.display()
            ),
        };
        *self.refusal.lock() = Some(reason);
        Ok(false)
    }
}

/// An open SSH connection to one host.
pub struct SshConnection {
    name: String,
    handle: Handle<HostKeyCheck>,
    /// Sessions of the jump hosts, kept open while the tunnel is in use.
    _hops: Vec<Handle<HostKeyCheck>>,
    /// The `ProxyCommand` carrying the first connection; killed on drop.
    _proxy: Option<tokio::process::Child>,
    channels: Arc<Semaphore>,
    /// Idle persistent shells (see [`Shell`]).
    shells: Mutex<Vec<Shell>>,
    /// Signalled when a shell goes back to the idle list.
    shell_idle: tokio::sync::Notify,
    /// Numbers the commands sent to persistent shells, for their end markers.
    counter: std::sync::atomic::AtomicU64,
    /// Random per connection, so a command's output cannot fake a marker.
    nonce: u64,
    /// Host keys learned while connecting (`accept-new`), not yet reported.
    notices: Mutex<Vec<String>>,
    /// Why the session (or a jump host's) ended, once it has.
    ended: Arc<Mutex<Option<String>>>,
}

/// A long-lived `/bin/sh` on its own channel, fed one command at a time.
///
/// Opening a session channel makes sshd fork, start the login shell and then
/// `sh`: several milliseconds of the host's CPU for every command. A shell
/// that stays open runs each command in a subshell (`( eval '...' )`, a fork
/// but no exec) and ends it with a marker line carrying the exit status, on
/// stdout and on stderr. The script arrives as one quoted word, so even a
/// script with a syntax error cannot desynchronise the stream.
struct Shell {
    reader: russh::ChannelReadHalf,
    writer: Arc<ChannelWriteHalf<Msg>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// Largest stdin passed inline to a persistent shell (as a quoted word).
const INLINE_STDIN_MAX: usize = 256 * 1024;

/// Closes its channel when dropped (on timeout or error paths), because a
/// russh channel that is merely dropped stays open on the server and counts
/// against `MaxSessions`.
struct ChannelGuard {
    writer: Option<Arc<ChannelWriteHalf<Msg>>>,
}

impl ChannelGuard {
    async fn close(mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.close().await;
        }
    }

    /// Kills what still runs (the session would otherwise count against
    /// `MaxSessions` until it exits), then closes.
    async fn kill_and_close(mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.signal(russh::Sig::KILL).await;
            let _ = w.close().await;
        }
    }
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                // Only reached when the command was abandoned (timeout,
                // cancelled task): stop it as well.
                rt.spawn(async move {
                    let _ = w.signal(russh::Sig::KILL).await;
                    let _ = w.close().await;
                });
            }
        }
    }
}

fn config(keepalive: Keepalive) -> Arc<client::Config> {
    Arc::new(client::Config {
        nodelay: true,
        keepalive_interval: keepalive.interval,
        keepalive_max: keepalive.max,
        inactivity_timeout: None,
        ..Default::default()
    })
}

impl SshConnection {
    /// Connects and authenticates; every hop's host key is checked.
    pub async fn connect(name: &str, spec: &ConnectSpec) -> Result<SshConnection, TransportError> {
        let mut hops: Vec<Handle<HostKeyCheck>> = Vec::new();
        // Each hop is offered its own keys, then the target's.
        let mut targets: Vec<(String, u16, String, Vec<PathBuf>)> = spec
            .jump
            .iter()
            .map(|h| {
                let mut keys = h.identity_files.clone();
                keys.extend(
                    spec.identity_files
                        .iter()
                        .filter(|k| !h.identity_files.contains(k))
                        .cloned(),
                );
                (
                    h.host.clone(),
                    h.port,
                    h.user.clone().unwrap_or_else(|| spec.user.clone()),
                    keys,
                )
            })
            .collect();
        targets.push((
            spec.address.clone(),
            spec.port,
            spec.user.clone(),
            spec.identity_files.clone(),
        ));
        let last = targets.len() - 1;
        let learned = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(None));
        let mut proxy: Option<tokio::process::Child> = None;
        let proxy_stderr = Arc::new(Mutex::new(Vec::<u8>::new()));
        for (i, (host, port, user, keys)) in targets.into_iter().enumerate() {
            let addr = format!("{host}:{port}");
            let via = if i == 0 {
                String::new()
            } else {
                format!(" (via jump host {})", i)
            };
            let conn_err = |reason: String| {
                let said = String::from_utf8_lossy(&proxy_stderr.lock())
                    .trim()
                    .to_string();
                let said = if i == 0 && !said.is_empty() {
                    format!(" (ProxyCommand said: {said})")
                } else {
                    String::new()
                };
                TransportError::Connect {
                    host: name.to_string(),
                    addr: addr.clone(),
                    reason: format!("{reason}{via}{said}"),
                }
            };
            let refusal = Arc::new(Mutex::new(None));
            let handler = HostKeyCheck {
                files: spec.known_hosts.clone(),
                host: host.clone(),
                port,
                policy: spec.host_key_policy,
                refusal: refusal.clone(),
                learned: learned.clone(),
                ended: ended.clone(),
                keepalive: spec.keepalive,
            };
            let dial = async {
                match hops.last() {
                    None if spec.proxy_command.is_some() => {
                        let command = spec.proxy_command.as_deref().unwrap_or_default();
                        let (child, stream, said) = spawn_proxy(command, proxy_stderr.clone())
                            .map_err(|e| {
                                conn_err(format!("cannot run ProxyCommand `{command}`: {e}"))
                            })?;
                        proxy = Some(child);
                        let r =
                            client::connect_stream(config(spec.keepalive), stream, handler).await;
                        if r.is_err() {
                            // What the command printed says why; its stdout
                            // can close before its stderr has been read.
                            let _ = tokio::time::timeout(PROXY_STDERR_WAIT, said).await;
                        }
                        r
                    }
                    None => {
                        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                            .await
                            .map_err(|e| conn_err(e.to_string()))?;
                        let _ = tcp.set_nodelay(true);
                        client::connect_stream(config(spec.keepalive), tcp, handler).await
                    }
                    Some(prev) => {
                        let ch = prev
                            .channel_open_direct_tcpip(host.clone(), port as u32, "127.0.0.1", 0)
                            .await
                            .map_err(|e| {
                                conn_err(format!("jump host could not open a tunnel: {e}"))
                            })?;
                        client::connect_stream(config(spec.keepalive), ch.into_stream(), handler)
                            .await
                    }
                }
                .map_err(|e| match refusal.lock().take() {
                    Some(reason) => TransportError::HostKey {
                        host: name.to_string(),
                        addr: addr.clone(),
                        reason,
                    },
                    None => conn_err(e.to_string()),
                })
            };
            let mut handle = match tokio::time::timeout(spec.connect_timeout, dial).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(conn_err(format!(
                        "timed out after {}s",
                        spec.connect_timeout.as_secs_f64()
                    )))
                }
            };
            match tokio::time::timeout(
                spec.connect_timeout,
                authenticate(&mut handle, &user, &keys, spec),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    return Err(TransportError::Auth {
                        host: name.to_string(),
                        user: format!("{user}@{addr}"),
                        reason,
                    })
                }
                Err(_) => return Err(conn_err("authentication timed out".into())),
            }
            if i == last {
                return Ok(SshConnection {
                    name: name.to_string(),
                    handle,
                    _hops: hops,
                    _proxy: proxy,
                    channels: Arc::new(Semaphore::new(spec.max_channels.max(1))),
                    shells: Mutex::new(Vec::new()),
                    shell_idle: tokio::sync::Notify::new(),
                    counter: std::sync::atomic::AtomicU64::new(0),
                    nonce: rand::random::<u64>(),
                    notices: Mutex::new(std::mem::take(&mut *learned.lock())),
                    ended,
                });
            }
            hops.push(handle);
        }
        unreachable!("the target is always the last hop")
    }

    /// Warnings from connecting (host keys learned), each given out once.
    pub fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.notices.lock())
    }

    /// Like [`lost`](Self::lost), after giving the session a moment to say
    /// why it ended: a command's channel can end just before the session
    /// reports its keepalive timeout or reset.
    async fn lost_settled(&self, e: &str) -> TransportError {
        for _ in 0..50 {
            if self.ended.lock().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.lost(e)
    }

    /// The session went away under a command: said by why it ended, when
    /// the session recorded that, else by what the command saw.
    fn lost(&self, e: impl std::fmt::Display) -> TransportError {
        let reason = match self.ended.lock().clone() {
            Some(why) => format!("{why}; {e}"),
            None => e.to_string(),
        };
        TransportError::Lost {
            host: self.name.clone(),
            reason,
        }
    }

    /// Runs one command on a new channel.
    pub async fn exec(&self, cmd: &Command) -> Result<Output, TransportError> {
        if self.handle.is_closed() {
            return Err(self.lost("the SSH session is closed"));
        }
        if let Some(req) = self.shell_request(cmd) {
            return self.run_in_shell(req).await;
        }
        let _permit = self.channels.acquire().await.map_err(|e| self.lost(e))?;
        let run = self.run_on_channel(cmd);
        match cmd.timeout {
            Some(t) => tokio::time::timeout(t, run)
                .await
                .map_err(|_| TransportError::Timeout {
                    host: self.name.clone(),
                    secs: t.as_secs(),
                })?,
            None => run.await,
        }
    }

    /// The line a persistent shell runs for `cmd`, when `cmd` can use one:
    /// no timeout, no become password, and stdin that is text small enough
    /// to inline.
    fn shell_request(&self, cmd: &Command) -> Option<(String, u64)> {
        if cmd.timeout.is_some() {
            return None;
        }
        let script = r#become::with_env(&cmd.script, &cmd.env);
        let wrapped = match &cmd.become_ {
            Some(b) => r#become::wrap(&script, b),
            None => Wrapped {
                script,
                stdin_prefix: None,
                pty_password: None,
            },
        };
        // A become password goes through a fresh session every time: sudo
        // caches credentials per parent process, and a long-lived shell would
        // let a later command with a wrong password ride on that cache.
        if wrapped.pty_password.is_some() || wrapped.stdin_prefix.is_some() {
            return None;
        }
        let mut stdin = Vec::new();
        if let Some(s) = &cmd.stdin {
            stdin.extend_from_slice(s);
        }
        if stdin.len() > INLINE_STDIN_MAX || stdin.contains(&0) {
            return None;
        }
        let stdin = String::from_utf8(stdin).ok()?;
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = format!("( eval {} )", quote(&wrapped.script));
        let run = if stdin.is_empty() {
            format!("{body} </dev/null")
        } else {
            format!("printf '%s' {} | {body}", quote(&stdin))
        };
        let tag = format!("{:016x}{:x}", self.nonce, n);
        let line = format!(
            "{run}; __keel_rc=$?; printf '\\036{tag} %d\\036\\n' \"$__keel_rc\"; printf '\\036{tag}\\036\\n' >&2\n"
        );
        Some((line, n))
    }

    /// An idle shell, or a new one when a channel slot is free; otherwise
    /// waits for whichever comes first. Idle shells hold their slot, so
    /// waiting on the semaphore alone could wait forever.
    async fn take_shell(&self) -> Result<Shell, TransportError> {
        let permit = loop {
            let idle = self.shell_idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if let Some(sh) = self.shells.lock().pop() {
                return Ok(sh);
            }
            tokio::select! {
                p = self.channels.clone().acquire_owned() => break p.map_err(|e| self.lost(e))?,
                _ = &mut idle => continue,
            }
        };
        let mut attempt = 0;
        let channel = loop {
            match self.handle.channel_open_session().await {
                Ok(c) => break c,
                Err(e) if self.handle.is_closed() => return Err(self.lost(e)),
                Err(russh::Error::ChannelOpenFailure(_)) if attempt < 40 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => {
                    return Err(TransportError::Other {
                        host: self.name.clone(),
                        reason: format!("cannot open a channel: {e}"),
                    })
                }
            }
        };
        let (reader, writer) = channel.split();
        let writer = Arc::new(writer);
        writer
            .exec(true, "exec /bin/sh")
            .await
            .map_err(|e| self.lost(e))?;
        Ok(Shell {
            reader,
            writer,
            _permit: permit,
        })
    }

    async fn run_in_shell(&self, (line, n): (String, u64)) -> Result<Output, TransportError> {
        if self.handle.is_closed() {
            return Err(self.lost("the SSH session is closed"));
        }
        let mut sh = self.take_shell().await?;
        let tag = format!("{:016x}{:x}", self.nonce, n);
        let out_marker = format!("\x1e{tag} ");
        let err_marker = format!("\x1e{tag}\x1e\n");
        if let Err(e) = sh.writer.data(line.as_bytes()).await {
            let _ = sh.writer.close().await;
            return Err(self.lost(e));
        }
        let mut out = Output {
            rc: -1,
            ..Default::default()
        };
        let mut rc: Option<i32> = None;
        let mut err_done = false;
        let mut scanned_out = 0usize;
        while rc.is_none() || !err_done {
            let Some(msg) = sh.reader.wait().await else {
                break;
            };
            match msg {
                ChannelMsg::Data { data } => {
                    out.stdout.extend_from_slice(&data);
                    if let Some(pos) = find(
                        &out.stdout,
                        out_marker.as_bytes(),
                        scanned_out.saturating_sub(out_marker.len()),
                    ) {
                        let rest = &out.stdout[pos + out_marker.len()..];
                        if let Some(end) = rest.iter().position(|b| *b == 0x1e) {
                            rc = std::str::from_utf8(&rest[..end])
                                .ok()
                                .and_then(|s| s.parse().ok());
                            out.stdout.truncate(pos);
                        }
                    }
                    scanned_out = out.stdout.len();
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    out.stderr.extend_from_slice(&data);
                    if out.stderr.ends_with(err_marker.as_bytes()) {
                        let l = out.stderr.len() - err_marker.len();
                        out.stderr.truncate(l);
                        err_done = true;
                    }
                }
                ChannelMsg::Eof
                | ChannelMsg::Close
                | ChannelMsg::ExitStatus { .. }
                | ChannelMsg::ExitSignal { .. } => break,
                _ => {}
            }
        }
        match rc {
            Some(code) if err_done => {
                out.rc = code;
                self.shells.lock().push(sh);
                self.shell_idle.notify_one();
                Ok(out)
            }
            _ => {
                let _ = sh.writer.close().await;
                Err(self
                    .lost_settled("the remote shell exited in the middle of a command")
                    .await)
            }
        }
    }

    async fn run_on_channel(&self, cmd: &Command) -> Result<Output, TransportError> {
        let script = r#become::with_env(&cmd.script, &cmd.env);
        let wrapped = match &cmd.become_ {
            Some(b) => r#become::wrap(&script, b),
            None => Wrapped {
                script,
                stdin_prefix: None,
                pty_password: None,
            },
        };
        // sshd frees a session slot a little after both sides closed the
        // channel, so a refusal right after another command finished is
        // retried briefly before it counts as an error.
        let mut attempt = 0;
        let channel = loop {
            match self.handle.channel_open_session().await {
                Ok(c) => break c,
                Err(e) if self.handle.is_closed() => return Err(self.lost(e)),
                Err(russh::Error::ChannelOpenFailure(_)) if attempt < 40 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => {
                    return Err(TransportError::Other {
                        host: self.name.clone(),
                        reason: format!("cannot open a channel: {e}"),
                    })
                }
            }
        };
        let (mut reader, writer) = channel.split();
        let writer = Arc::new(writer);
        let guard = ChannelGuard {
            writer: Some(writer.clone()),
        };
        let result = self.drive(&mut reader, &writer, &wrapped, cmd).await;
        if result.is_ok() {
            guard.close().await;
        } else {
            guard.kill_and_close().await;
        }
        let out = result?;
        if cmd.become_.is_some()
            && wrapped.pty_password.is_none()
            && r#become::refused(out.rc, &out.stderr)
        {
            return Err(TransportError::Become {
                host: self.name.clone(),
                method: "sudo".into(),
                reason: r#become::refusal_reason(&out.stderr),
            });
        }
        Ok(out)
    }

    async fn drive(
        &self,
        reader: &mut russh::ChannelReadHalf,
        writer: &Arc<ChannelWriteHalf<Msg>>,
        wrapped: &Wrapped,
        cmd: &Command,
    ) -> Result<Output, TransportError> {
        let pty = wrapped.pty_password.is_some();
        let mut line = format!("/bin/sh -c {}", quote(&wrapped.script));
        // (Not under a PTY: `timeout` moves to a background process group,
        // which may not read the terminal su prompts on.)
        if let (Some(t), false) = (cmd.timeout, pty) {
            // sshd ignores signal requests on root logins, so a command we
            // stop waiting for would keep its session slot until it ends;
            // coreutils' `timeout` kills its whole process group on the host.
            line = format!("timeout -s KILL {:.3} {line}", t.as_secs_f64() + 0.05);
        }
        if pty {
            writer
                .request_pty(
                    false,
                    "dumb",
                    200,
                    24,
                    0,
                    0,
                    &[(Pty::ECHO, 0), (Pty::ONLCR, 0)],
                )
                .await
                .map_err(|e| self.lost(e))?;
        }
        writer.exec(true, line).await.map_err(|e| self.lost(e))?;

        let mut stdin = wrapped.stdin_prefix.clone().unwrap_or_default();
        if let Some(s) = &cmd.stdin {
            stdin.extend_from_slice(s);
        }
        let feeder = if pty {
            None
        } else {
            let w = writer.clone();
            // Fed on its own task so a script that prints a lot before reading
            // its stdin cannot deadlock against us.
            Some(tokio::spawn(async move {
                if !stdin.is_empty() {
                    w.data(&stdin[..]).await?;
                }
                w.eof().await
            }))
        };

        let mut out = Output {
            rc: -1,
            ..Default::default()
        };
        let mut got_status = false;
        let mut prompt_answered = !pty;
        let mut prompt_buf: Vec<u8> = Vec::new();
        while let Some(msg) = reader.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    if !prompt_answered {
                        prompt_buf.extend_from_slice(&data);
                        let text = String::from_utf8_lossy(&prompt_buf);
                        if let Some(pos) = text.find("assword") {
                            if let Some(colon) = text[pos..].find(':') {
                                let pw = wrapped.pty_password.clone().unwrap_or_default();
                                writer
                                    .data(format!("{pw}\n").as_bytes())
                                    .await
                                    .map_err(|e| self.lost(e))?;
                                if let Some(s) = &cmd.stdin {
                                    writer.data(&s[..]).await.map_err(|e| self.lost(e))?;
                                }
                                writer.eof().await.map_err(|e| self.lost(e))?;
                                prompt_answered = true;
                                let rest = &text[pos + colon + 1..];
                                out.stdout.extend_from_slice(
                                    rest.trim_start_matches(['\r', '\n', ' ']).as_bytes(),
                                );
                            }
                        }
                    } else {
                        out.stdout.extend_from_slice(&data);
                    }
                }
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    out.stderr.extend_from_slice(&data);
                }
                ChannelMsg::ExitStatus { exit_status } => {
                    out.rc = exit_status as i32;
                    got_status = true;
                }
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    out.rc = 128 + signal_number(&signal_name);
                    got_status = true;
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        if let Some(f) = feeder {
            f.abort();
        }
        if !prompt_answered {
            // su exited before asking: it failed for another reason.
            out.stdout = prompt_buf;
        }
        if !got_status {
            if self.handle.is_closed() {
                return Err(self
                    .lost_settled("the connection closed while a command was running")
                    .await);
            }
            return Err(TransportError::Other {
                host: self.name.clone(),
                reason: "the channel closed without an exit status".into(),
            });
        }
        if pty && out.rc != 0 {
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("Authentication failure") || text.contains("incorrect password") {
                return Err(TransportError::Become {
                    host: self.name.clone(),
                    method: "su".into(),
                    reason: text.trim().to_string(),
                });
            }
        }
        Ok(out)
    }

    /// Whether the session has ended (the server closed it, the network
    /// reset it, or keepalives went unanswered).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Closes the session (and with it every channel and tunnel).
    pub async fn close(&self) {
        let shells: Vec<Shell> = std::mem::take(&mut *self.shells.lock());
        for sh in shells {
            let _ = sh.writer.eof().await;
            let _ = sh.writer.close().await;
        }
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        for h in self._hops.iter().rev() {
            let _ = h
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
    }

    /// Opens an SFTP session on a new channel (counted against the cap).
    pub async fn sftp(&self) -> Result<russh_sftp::client::SftpSession, TransportError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.lost(e))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| self.lost(e))?;
        russh_sftp::client::SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| TransportError::Other {
                host: self.name.clone(),
                reason: format!("sftp: {e}"),
            })
    }
}

fn signal_number(sig: &russh::Sig) -> i32 {
    use russh::Sig;
    match sig {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        _ => 0,
    }
}

/// Tries key files, then the password, then the agent. Returns why all failed.
async fn authenticate(
    handle: &mut Handle<HostKeyCheck>,
    user: &str,
    keys: &[PathBuf],
    spec: &ConnectSpec,
) -> Result<(), String> {
    let mut tried: Vec<String> = Vec::new();
    let mut files = keys.to_vec();
    if files.is_empty() && spec.password.is_none() {
        if let Some(home) = dirs::home_dir() {
            for k in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let p = home.join(".ssh").join(k);
                if p.exists() {
                    files.push(p);
                }
            }
        }
    }
    let rsa_hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    for path in &files {
        let key = match russh::keys::load_secret_key(path, spec.key_passphrase.as_deref()) {
            Ok(k) => k,
            Err(e) => {
                let why = match e {
                    russh::keys::Error::KeyIsEncrypted => {
                        "encrypted and no passphrase given".to_string()
                    }
                    other => other.to_string(),
                };
                tried.push(format!("key {} unusable: {why}", path.display()));
                continue;
            }
        };
        let hash = if key.algorithm().is_rsa() {
            rsa_hash
        } else {
            None
        };
        match handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
        {
            Ok(r) if r.success() => return Ok(()),
            Ok(_) => tried.push(format!("key {} refused", path.display())),
            Err(e) => return Err(format!("while offering {}: {e}", path.display())),
        }
    }
    if let Some(pw) = &spec.password {
        match handle.authenticate_password(user, pw).await {
            Ok(r) if r.success() => return Ok(()),
            Ok(_) => tried.push("password refused".into()),
            Err(e) => return Err(format!("while sending the password: {e}")),
        }
    }
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match russh::keys::agent::client::AgentClient::connect_env().await {
            Ok(mut agent) => match agent.request_identities().await {
                Ok(ids) => {
                    for id in ids {
                        let key = id.public_key().into_owned();
                        let hash = if key.algorithm().is_rsa() {
                            rsa_hash
                        } else {
                            None
                        };
                        match handle
                            .authenticate_publickey_with(user, key, hash, &mut agent)
                            .await
                        {
                            Ok(r) if r.success() => return Ok(()),
                            _ => {}
                        }
                    }
                    tried.push("no ssh-agent key accepted".into());
                }
                Err(e) => tried.push(format!("ssh-agent: {e}")),
            },
            Err(e) => tried.push(format!("ssh-agent: {e}")),
        }
    }
    if tried.is_empty() {
        tried.push("no key file, password or ssh-agent to try".into());
    }
    Err(tried.join("; "))
}

/// How long a failed connection waits for the rest of its `ProxyCommand`'s
/// stderr before it reports.
const PROXY_STDERR_WAIT: Duration = Duration::from_secs(1);

/// Starts a `ProxyCommand` as `ssh` does (`exec` of the line in the user's
/// shell) and returns it with a stream over its stdin and stdout. What it
/// writes to stderr is kept (the last 4 KiB) for the error message should
/// the connection fail; the task returned ends when its stderr closes.
fn spawn_proxy(
    command: &str,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
) -> std::io::Result<(
    tokio::process::Child,
    tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>,
    tokio::task::JoinHandle<()>,
)> {
    use tokio::io::AsyncReadExt;
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".to_string());
    let mut child = tokio::process::Command::new(shell)
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(stdin), Some(stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::Error::other("the child has no pipes"));
    };
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let mut tail = stderr_tail.lock();
            tail.extend_from_slice(&buf[..n]);
            let excess = tail.len().saturating_sub(4096);
            tail.drain(..excess);
        }
    });
    Ok((child, tokio::io::join(stdout, stdin), reader))
}

/// Position of `needle` in `hay`, searching from `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}
