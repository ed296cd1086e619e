//! Measures how to put a small file on a host: `cat > file` with the bytes on
//! stdin of an exec channel, against SFTP (one session reused, and one session
//! per file). Runs against a real sshd test host on loopback (needs root).
//!
//! `cargo run -p keel-engine --example transfer_bench [ITERATIONS]`

use keel::shell::quote;
use keel::transport::{Command, ConnectSpec, SshConnection};
use keel::vars::VarMap;
use keel_testhosts::TestHosts;
use minijinja::Value;
use std::time::Instant;
use tokio::io::AsyncWriteExt;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200);
    let th = TestHosts::start(1)?;
    let h = &th.hosts[0];
    let mut v = VarMap::new();
    v.insert("ansible_host".into(), Value::from(h.addr.clone()));
    v.insert("ansible_port".into(), Value::from(h.port));
    v.insert("ansible_user".into(), Value::from("root"));
    v.insert(
        "ansible_ssh_private_key_file".into(),
        Value::from(th.client_key.display().to_string()),
    );
    v.insert(
        "keel_known_hosts".into(),
        Value::from(th.known_hosts.display().to_string()),
    );
    let spec = ConnectSpec::from_vars(&h.name, &v)?;
    let conn = SshConnection::connect(&h.name, &spec).await?;
    let data = vec![b'k'; 1024];

    let t = Instant::now();
    for i in 0..n {
        let cmd = Command {
            script: format!("cat > {}", quote(&format!("/tmp/exec-{i}"))),
            stdin: Some(data.clone()),
            ..Default::default()
        };
        let out = conn.exec(&cmd).await?;
        anyhow::ensure!(out.rc == 0, "exec failed: {}", out.stderr_str());
    }
    let exec = t.elapsed();

    let t = Instant::now();
    let sftp = conn.sftp().await?;
    for i in 0..n {
        let mut f = sftp.create(format!("/tmp/sftp-{i}")).await?;
        f.write_all(&data).await?;
        f.shutdown().await?;
    }
    let sftp_reused = t.elapsed();
    drop(sftp);

    let t = Instant::now();
    for i in 0..n {
        let sftp = conn.sftp().await?;
        let mut f = sftp.create(format!("/tmp/sftp1-{i}")).await?;
        f.write_all(&data).await?;
        f.shutdown().await?;
        let _ = sftp.close().await;
    }
    let sftp_each = t.elapsed();

    let check = th.sh(0, "cat /tmp/exec-* /tmp/sftp-* /tmp/sftp1-* | wc -c");
    anyhow::ensure!(
        check.trim() == (3 * n * 1024).to_string(),
        "bytes on host: {check}"
    );
    let per = |d: std::time::Duration| d.as_secs_f64() * 1000.0 / n as f64;
    println!("{n} x 1 KiB files, loopback sshd:");
    println!(
        "  exec + stdin (cat >):        {:8.1} ms total, {:.3} ms/file",
        exec.as_secs_f64() * 1e3,
        per(exec)
    );
    println!(
        "  sftp, one session reused:    {:8.1} ms total, {:.3} ms/file",
        sftp_reused.as_secs_f64() * 1e3,
        per(sftp_reused)
    );
    println!(
        "  sftp, new session per file:  {:8.1} ms total, {:.3} ms/file",
        sftp_each.as_secs_f64() * 1e3,
        per(sftp_each)
    );
    conn.close().await;
    Ok(())
}
