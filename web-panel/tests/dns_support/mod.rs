//! [`Bind`]: a real BIND 9 (`/usr/sbin/named`, Debian's `bind9`) the DNS
//! tests start in a temporary directory: the primary for one zone on
//! `127.0.0.1` and a free port, signed by BIND itself (`dnssec-policy`),
//! open to RFC 2136 updates signed with a TSIG key from `tsig-keygen`; and,
//! on demand, a validating resolver on port 53 of an address of its own
//! (`127.53.X.Y`, added to `lo` and removed on drop) that trusts the zone's
//! key, so OpenSSH's system resolver can be pointed at it and gets answers
//! with the AD bit. Both stop on drop. `dig` reads what they serve.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_panel::config::DnsConfig;

pub const NAMED: &str = "/usr/sbin/named";

/// Whether BIND and its tools are here; prints why not (or fails when
/// `KEEL_REQUIRE_REAL` is set).
pub fn can_run_bind() -> bool {
    let tools = [NAMED, "/usr/sbin/tsig-keygen", "/usr/bin/dig"];
    let ok = tools.iter().all(|t| Path::new(t).exists());
    if !ok {
        assert!(
            std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
            "KEEL_REQUIRE_REAL is set, so this test may not skip: needs {tools:?} (apt install bind9 bind9-dnsutils)"
        );
        eprintln!("SKIP: needs {tools:?} (apt install bind9 bind9-dnsutils)");
    }
    ok
}

pub struct Bind {
    dir: tempfile::TempDir,
    pub zone: String,
    pub port: u16,
    /// `tsig-keygen`'s output: the `key` clause named.conf includes and the
    /// panel reads.
    pub key_file: PathBuf,
    primary: Child,
    resolver: Option<(Child, Ipv4Addr)>,
}

fn free_port() -> u16 {
    // Both UDP and TCP must be free: BIND listens on both.
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn named(conf: &Path, log: &Path) -> Child {
    let check = Command::new("named-checkconf").arg(conf).output().unwrap();
    assert!(check.status.success(), "{conf:?}: {check:?}");
    Command::new(NAMED)
        .arg("-g")
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

impl Bind {
    /// The signed primary for `zone`, answering once it has its DNSKEY.
    pub fn start(zone: &str) -> Bind {
        let dir = tempfile::Builder::new()
            .prefix("keel-bind-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let key_file = d.join("tsig.key");
        let key = run(Command::new("tsig-keygen").args(["-a", "hmac-sha256", "keel-panel"]));
        std::fs::write(&key_file, key).unwrap();
        std::fs::create_dir(d.join("primary")).unwrap();
        let p = d.join("primary");
        std::fs::write(
            p.join("zone.db"),
            format!(
                "$TTL 300\n@ IN SOA ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 300\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n"
            ),
        )
        .unwrap();
        let port = free_port();
        std::fs::write(
            p.join("named.conf"),
            format!(
                r#"include "{key}";
options {{
  directory "{dir}";
  pid-file none;
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  key-directory "{dir}";
}};
controls {{ }};
dnssec-policy "keel-test" {{ keys {{ csk lifetime unlimited algorithm ecdsap256sha256; }}; }};
zone "{zone}" {{
  type primary;
  file "{dir}/zone.db";
  update-policy {{ grant keel-panel zonesub ANY; }};
  dnssec-policy "keel-test";
}};
"#,
                key = key_file.display(),
                dir = p.display(),
            ),
        )
        .unwrap();
        let primary = named(&p.join("named.conf"), &d.join("primary.log"));
        let bind = Bind {
            zone: zone.to_string(),
            port,
            key_file,
            primary,
            resolver: None,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while bind.ksk().is_none() {
            assert!(
                Instant::now() < deadline,
                "named did not serve a signed {zone}: {}",
                std::fs::read_to_string(bind.dir.path().join("primary.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        bind
    }

    /// The panel's `[dns]` section for this server.
    pub fn config(&self) -> DnsConfig {
        DnsConfig {
            server: format!("127.0.0.1:{}", self.port),
            zones: vec![self.zone.clone()],
            key_name: "keel-panel".into(),
            key_file: self.key_file.display().to_string(),
            ttl: 60,
            ..DnsConfig::default()
        }
    }

    /// The zone's key-signing key (flags 257) as `257 3 13 BASE64`.
    fn ksk(&self) -> Option<String> {
        self.dig(&self.zone, "DNSKEY")
            .into_iter()
            .find(|k| k.starts_with("257 "))
    }

    /// `dig +short` of the primary: the answers, one a line.
    pub fn dig(&self, name: &str, rtype: &str) -> Vec<String> {
        dig(&["@127.0.0.1", "-p", &self.port.to_string()], name, rtype)
    }

    /// Starts the validating resolver (once) and returns its address.
    pub fn resolver(&mut self) -> Ipv4Addr {
        if let Some((_, ip)) = &self.resolver {
            return *ip;
        }
        let ip = loop {
            let ip = Ipv4Addr::new(127, 53, fastrand::u8(1..255), fastrand::u8(1..255));
            let added = Command::new("ip")
                .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
                .status()
                .unwrap();
            if added.success() {
                break ip;
            }
        };
        let ksk = self.ksk().unwrap();
        let mut fields = ksk.splitn(4, ' ');
        let (flags, proto, alg) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        let key: String = fields.next().unwrap().split_whitespace().collect();
        let r = self.dir.path().join("resolver");
        std::fs::create_dir_all(&r).unwrap();
        std::fs::write(
            r.join("named.conf"),
            format!(
                r#"options {{
  directory "{dir}";
  pid-file none;
  listen-on port 53 {{ {ip}; }};
  listen-on-v6 {{ none; }};
  recursion yes;
  allow-query {{ 127.0.0.0/8; }};
  dnssec-validation yes;
}};
controls {{ }};
trust-anchors {{ "{zone}." static-key {flags} {proto} {alg} "{key}"; }};
zone "{zone}" {{ type forward; forward only; forwarders {{ 127.0.0.1 port {port}; }}; }};
"#,
                dir = r.display(),
                zone = self.zone,
                port = self.port,
            ),
        )
        .unwrap();
        let child = named(&r.join("named.conf"), &self.dir.path().join("resolver.log"));
        self.resolver = Some((child, ip));
        let deadline = Instant::now() + Duration::from_secs(30);
        while dig(&[&format!("@{ip}")], &self.zone, "SOA").is_empty() {
            assert!(
                Instant::now() < deadline,
                "the resolver on {ip} does not answer: {}",
                std::fs::read_to_string(self.dir.path().join("resolver.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ip
    }

    /// A `resolv.conf` naming the resolver, with `trust-ad` so glibc
    /// passes its AD bit on to OpenSSH.
    pub fn resolv_conf(&mut self) -> PathBuf {
        let ip = self.resolver();
        let path = self.dir.path().join("resolv.conf");
        std::fs::write(&path, format!("nameserver {ip}\noptions edns0 trust-ad\n")).unwrap();
        path
    }
}

/// `dig +short` with `server` arguments; the answers, one a line.
pub fn dig(server: &[&str], name: &str, rtype: &str) -> Vec<String> {
    let out = Command::new("dig")
        .args(server)
        .args(["+short", "+tries=2", "+time=2", name, rtype])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .map(|l| l.trim().to_string())
        .collect()
}

/// An SSHFP answer as `ssh-keygen -r` writes it: `ALG TYPE hex`, the hex
/// in lower case and in one piece (dig splits and upper-cases it).
pub fn sshfp_text(answer: &str) -> String {
    let mut f = answer.split_whitespace();
    let (alg, t) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
    format!("{alg} {t} {}", f.collect::<String>().to_lowercase())
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.primary.kill();
        let _ = self.primary.wait();
        if let Some((child, ip)) = &mut self.resolver {
            let _ = child.kill();
            let _ = child.wait();
            let _ = Command::new("ip")
                .args(["addr", "del", &format!("{ip}/32"), "dev", "lo"])
                .status();
        }
    }
}
