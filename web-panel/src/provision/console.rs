//! The backends of a server's console (`services::console` decides who may
//! open one and as whom; `api/console.rs` carries it over a WebSocket).
//!
//! A libvirt VM's console is its serial line, opened through the driver
//! (`Driver::serial_console`); any other server's is a terminal over SSH:
//! the panel logs in as its admin account with its own key, trusting only
//! the host key it generated for the server (`hostkey::Pinned`), asks for
//! a pseudo-terminal and runs `sudo -n -i -u <account>`, so the shell is
//! the caller's own login shell on the server. Both give a
//! [`Console`]: output on one channel, keystrokes and sizes on the other;
//! dropping its input ends the SSH session.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use russh::ChannelMsg;
use tokio::sync::mpsc;

use super::hostkey::{client_config, Pinned};
use super::HostDrivers;
use crate::hypervisor::{Console, ConsoleInput, DriverError};
use crate::services::console::{ConsoleKind, ConsoleTarget};
use crate::services::hosts::Placement;

/// How long logging in to a server may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a console could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Panel(#[from] crate::domain::PanelError),
    #[error("ssh: {0}")]
    Ssh(String),
}

/// The terminal's size when it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    pub cols: u16,
    pub rows: u16,
}

impl Default for TermSize {
    fn default() -> Self {
        TermSize { cols: 80, rows: 24 }
    }
}

/// What the panel needs to log in to its servers.
#[derive(Debug, Clone, Copy)]
pub struct PanelLogin<'a> {
    /// The panel's admin account on every server.
    pub admin_user: &'a str,
    /// The panel's private key (`<data_dir>/ssh/id_ed25519`).
    pub private_key: &'a Path,
}

/// Opens the console of `target`: the serial line when its driver has
/// one, else a shell over SSH as the caller's account.
pub async fn open(
    hosts: &HostDrivers,
    placement: &Placement,
    target: &ConsoleTarget,
    login: PanelLogin<'_>,
    size: TermSize,
) -> Result<(ConsoleKind, Console), ConsoleError> {
    if let Some(driver) = driver_of(hosts, placement)? {
        if let Some(console) = driver.serial_console(&target.vm_name).await? {
            return Ok((ConsoleKind::Serial, console));
        }
    }
    let account = target.shell_account()?;
    let console = ssh_shell(target, account, login, size).await?;
    Ok((ConsoleKind::Ssh, console))
}

/// The driver of the host that holds the server, as `Provisioner::driver_at`
/// picks it; `None` when this process has no driver for it (a panel that
/// serves pages only, or a server with no host).
fn driver_of(
    hosts: &HostDrivers,
    placement: &Placement,
) -> Result<Option<Arc<dyn crate::hypervisor::Driver>>, ConsoleError> {
    let Some(name) = placement.host.as_deref() else {
        return Ok(hosts.only().map(|(_, d)| d.clone()));
    };
    if placement.host_state.as_deref() == Some(crate::services::hosts::HostState::Down.as_str()) {
        return Err(
            DriverError::Unavailable(format!("hypervisor host {name} is marked down")).into(),
        );
    }
    Ok(hosts.get(name).cloned())
}

/// A login shell of `account` on the server, in a pseudo-terminal.
async fn ssh_shell(
    target: &ConsoleTarget,
    account: &str,
    login: PanelLogin<'_>,
    size: TermSize,
) -> Result<Console, ConsoleError> {
    let addr = target
        .ssh_addr()
        .ok_or_else(|| ConsoleError::Ssh(format!("no address to reach {}", target.hostname)))?;
    let ssh = |what: &str, e: &dyn std::fmt::Display| ConsoleError::Ssh(format!("{what}: {e}"));
    let key = russh::keys::load_secret_key(login.private_key, None)
        .map_err(|e| ssh(&format!("loading {}", login.private_key.display()), &e))?;
    let handler = Pinned {
        expected: target.host_key.clone(),
    };
    let connected = async {
        let mut handle = client::connect(client_config(), addr, handler)
            .await
            .map_err(|e| ssh(&format!("connecting to {addr}"), &e))?;
        let auth = handle
            .authenticate_publickey(
                login.admin_user,
                russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), None),
            )
            .await
            .map_err(|e| ssh("logging in", &e))?;
        if !auth.success() {
            return Err(ConsoleError::Ssh("the panel's key was refused".into()));
        }
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|e| ssh("opening a session", &e))?;
        channel
            .request_pty(
                true,
                "xterm-256color",
                u32::from(size.cols),
                u32::from(size.rows),
                0,
                0,
                &[],
            )
            .await
            .map_err(|e| ssh("asking for a terminal", &e))?;
        // The account name passed `unix_name_problem`; quoted all the same.
        let command = format!("exec sudo -n -i -u {}", keel::shell::quote(account));
        channel
            .exec(true, command)
            .await
            .map_err(|e| ssh("starting the shell", &e))?;
        Ok::<_, ConsoleError>((handle, channel))
    };
    let (handle, channel) = tokio::time::timeout(LOGIN_TIMEOUT, connected)
        .await
        .map_err(|_| ConsoleError::Ssh(format!("logging in to {addr} timed out")))??;
    let (out_tx, out_rx) = mpsc::channel(64);
    let (in_tx, in_rx) = mpsc::channel(64);
    tokio::spawn(pump(handle, channel, out_tx, in_rx));
    Ok(Console {
        output: out_rx,
        input: in_tx,
    })
}

/// Carries one SSH console until either side ends, then closes the
/// channel and the connection (dropping a russh channel does not close it).
async fn pump(
    handle: client::Handle<Pinned>,
    channel: russh::Channel<client::Msg>,
    output: mpsc::Sender<Vec<u8>>,
    mut input: mpsc::Receiver<ConsoleInput>,
) {
    let (mut reader, writer) = channel.split();
    loop {
        tokio::select! {
            msg = reader.wait() => match msg {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    if output.send(data.to_vec()).await.is_err() {
                        break;
                    }
                }
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            got = input.recv() => match got {
                Some(ConsoleInput::Data(d)) => {
                    if writer.data_bytes(d).await.is_err() {
                        break;
                    }
                }
                Some(ConsoleInput::Resize { cols, rows }) => {
                    let _ = writer
                        .window_change(u32::from(cols), u32::from(rows), 0, 0)
                        .await;
                }
                None => break,
            },
        }
    }
    let _ = writer.eof().await;
    let _ = writer.close().await;
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
}
