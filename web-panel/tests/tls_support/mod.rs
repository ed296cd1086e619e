//! TLS for the certificate tests: a throw-away CA made with rcgen
//! ([`TestCa`]: certificates for any names and validity, for uploads and
//! for Pebble's own HTTPS), and a real Pebble (Let's Encrypt's test ACME
//! server, Debian's `pebble`) started in a temporary directory
//! ([`Pebble`]). Debian's package ships no test certificates, so the CA
//! here signs Pebble's HTTPS certificate and the panel trusts it through
//! `acme.ca_file`. Pebble resolves the names it validates through
//! `pebble-challtestsrv`'s DNS, which answers every A query with the
//! address of the server under test, and fetches the HTTP-01 answers from
//! port 80 there: the VM's Apache.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};

pub const PEBBLE: &str = "/usr/bin/pebble";
pub const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// Whether Pebble can run here; skips (or fails under
/// `KEEL_REQUIRE_REAL`) otherwise.
pub fn can_run_pebble() -> bool {
    let ok = [PEBBLE, CHALLTESTSRV].iter().all(|t| Path::new(t).exists());
    if !ok {
        assert!(
            std::env::var_os("KEEL_REQUIRE_REAL").is_none(),
            "KEEL_REQUIRE_REAL is set, so this test may not skip: needs {PEBBLE} (apt install pebble)"
        );
        eprintln!("SKIP: needs {PEBBLE} and {CHALLTESTSRV} (apt install pebble)");
    }
    ok
}

/// A certificate authority for tests.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { params, key, pem }
    }

    /// A leaf for `names` (DNS names, or IP addresses), valid between the
    /// two dates (year, month, day).
    pub fn issue(&self, names: &[&str], from: (i32, u8, u8), until: (i32, u8, u8)) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        for n in names {
            params.subject_alt_names.push(match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap()),
            });
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0]);
        params.distinguished_name = dn;
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Issued {
            cert: format!("{}{}", cert.pem(), self.pem),
            key: key.serialize_pem(),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on {port}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A running Pebble and its DNS.
pub struct Pebble {
    dir: tempfile::TempDir,
    pub ca: TestCa,
    pub port: u16,
    pub management_port: u16,
    pebble: Child,
    dns: Child,
}

impl Pebble {
    /// Starts Pebble validating against `address` (every name resolves
    /// there; HTTP-01 on its port 80).
    pub fn start(address: &str) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Keel test CA for Pebble");
        let https = ca.issue(&["127.0.0.1", "localhost"], (2020, 1, 1), (2039, 1, 1));
        std::fs::write(dir.path().join("cert.pem"), &https.cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), &https.key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        let (port, management_port, dns_port, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": 80,
                "tlsPort": 443,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let mut dns = Command::new(CHALLTESTSRV)
            .args(["-defaultIPv4", address, "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(dns_management, "pebble-challtestsrv", &mut dns);
        let mut pebble = Command::new(PEBBLE)
            .arg("-config")
            .arg(dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // Validate at once, never refuse a good nonce, and a new
            // authorisation for every order, so a renewal validates again.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .unwrap();
        wait_port(port, "pebble", &mut pebble);
        Pebble {
            dir,
            ca,
            port,
            management_port,
            pebble,
            dns,
        }
    }

    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The CA file that makes Pebble's HTTPS trusted.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Pebble's output so far, for failure messages.
    pub fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("pebble.log"), read("pebble.err"))
    }

    /// The root of the chains Pebble issues (its management interface).
    pub async fn root_pem(&self) -> String {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca.pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let r = client
            .get(format!(
                "https://127.0.0.1:{}/roots/0",
                self.management_port
            ))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{r:?}");
        r.text().await.unwrap()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.dns.kill();
        let _ = self.pebble.wait();
        let _ = self.dns.wait();
    }
}
