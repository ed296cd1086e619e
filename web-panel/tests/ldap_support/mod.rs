//! A real OpenLDAP `slapd` (Debian's package) for the lookup-group tests:
//! started on a loopback port with its configuration, database and TLS
//! certificates in a temporary directory (no system service), the `nis`
//! schema and the `openssh-lpk` schema (`sshPublicKey`) loaded, and
//! `ldapadd`/`ldapmodify` (Debian's `ldap-utils`) to change it while a
//! test runs. StartTLS is offered with a certificate from a throw-away CA,
//! which the panel is told to trust.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_panel::config::LdapConfig;

pub const BASE: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
const ADMIN_PW: &str = "directory-secret";

/// The openssh-lpk schema as OpenSSH's LDAP patches published it: one
/// attribute and one auxiliary class. Debian's slapd does not ship it.
const OPENSSH_LPK: &str = "attributetype ( 1.3.6.1.4.1.24552.500.1.1.1.13 NAME 'sshPublicKey'
  DESC 'OpenSSH public key' EQUALITY octetStringMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 )
objectclass ( 1.3.6.1.4.1.24552.500.1.1.2.0 NAME 'ldapPublicKey' SUP top AUXILIARY
  DESC 'OpenSSH LPK objectclass' MAY ( sshPublicKey $ uid ) )
";

/// Whether slapd and the LDAP tools are installed; when they are not, the
/// test installs them with apt (as the browser test does with Chromium).
pub fn ensure_installed() {
    if Path::new("/usr/sbin/slapd").exists() && Path::new("/usr/bin/ldapmodify").exists() {
        return;
    }
    let status = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slapd ldap-utils",
        ])
        .status()
        .expect("run apt-get");
    assert!(status.success(), "installing slapd and ldap-utils failed");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// A running slapd, stopped when dropped.
pub struct Slapd {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Slapd {
    pub async fn start() -> Slapd {
        ensure_installed();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A CA and a server certificate for 127.0.0.1.
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=keel test LDAP CA"])
            .arg("-keyout")
            .arg(d.join("ca.key"))
            .arg("-out")
            .arg(d.join("ca.pem")));
        run(Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(d.join("server.key"))
            .arg("-out")
            .arg(d.join("server.csr")));
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(d.join("server.csr"))
            .arg("-CA")
            .arg(d.join("ca.pem"))
            .arg("-CAkey")
            .arg(d.join("ca.key"))
            .arg("-extfile")
            .arg(d.join("ext.cnf"))
            .arg("-out")
            .arg(d.join("server.pem")));
        std::fs::write(d.join("openssh-lpk.schema"), OPENSSH_LPK).unwrap();
        std::fs::create_dir(d.join("db")).unwrap();
        let p = |n: &str| d.join(n).display().to_string();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {lpk}\n\
             pidfile {pid}\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             TLSCACertificateFile {ca}\n\
             TLSCertificateFile {cert}\n\
             TLSCertificateKeyFile {key}\n\
             database mdb\n\
             maxsize 33554432\n\
             suffix \"{BASE}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PW}\n\
             directory {db}\n",
            lpk = p("openssh-lpk.schema"),
            pid = p("slapd.pid"),
            ca = p("ca.pem"),
            cert = p("server.pem"),
            key = p("server.key"),
            db = p("db"),
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        std::fs::write(d.join("bind.pw"), format!("{ADMIN_PW}\n")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Slapd {
            child: None,
            port,
            dir,
        };
        s.spawn().await;
        s.ldif(
            "ldapadd",
            &format!(
                "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
                 dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n\
                 dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n"
            ),
        );
        s
    }

    async fn spawn(&mut self) {
        let d = self.dir.path();
        // `-d 0`: stay in the foreground, so the test owns the process.
        let child = Command::new("/usr/sbin/slapd")
            .args(["-d", "0", "-h"])
            .arg(format!("ldap://127.0.0.1:{}/", self.port))
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("ldapsearch")
                .args(["-x", "-H", &self.uri(), "-b", "", "-s", "base"])
                .output()
                .unwrap();
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "slapd did not answer: {out:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops slapd (the directory becomes unreachable); [`Self::restart`]
    /// brings it back with the same data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub fn uri(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// A CA that did not sign the server's certificate: a panel told to
    /// trust only it must refuse the directory.
    pub fn other_ca(&self) -> PathBuf {
        let d = self.dir.path();
        let path = d.join("other-ca.pem");
        if !path.exists() {
            run(Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-days", "2", "-subj", "/CN=some other CA"])
                .arg("-keyout")
                .arg(d.join("other-ca.key"))
                .arg("-out")
                .arg(&path));
        }
        path
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The panel's configuration for this directory: StartTLS, this CA.
    pub fn config(&self) -> LdapConfig {
        LdapConfig {
            url: self.uri(),
            starttls: true,
            ca_file: self.ca_file().display().to_string(),
            bind_dn: ADMIN_DN.into(),
            bind_password_file: self.dir.path().join("bind.pw").display().to_string(),
            base_dn: BASE.into(),
            ..LdapConfig::default()
        }
    }

    /// Feeds `ldif` to `tool` (`ldapadd` or `ldapmodify`) as the directory's
    /// admin.
    pub fn ldif(&self, tool: &str, ldif: &str) {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.uri(), "-D", ADMIN_DN, "-w", ADMIN_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{tool}: {out:?}\n{ldif}");
    }

    /// A posixAccount with `uidNumber` and, when given, an SSH key.
    pub fn add_person(&self, uid: &str, uid_number: i64, name: &str, key: Option<&str>) {
        let mut ldif = format!(
            "dn: uid={uid},ou=people,{BASE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
             objectClass: ldapPublicKey\nuid: {uid}\ncn: {name}\nsn: {name}\ndisplayName: {name}\n\
             uidNumber: {uid_number}\ngidNumber: {uid_number}\nhomeDirectory: /home/{uid}\n"
        );
        if let Some(k) = key {
            ldif.push_str(&format!("sshPublicKey: {k}\n"));
        }
        self.ldif("ldapadd", &ldif);
    }

    /// A posixGroup with `memberUid`s.
    pub fn add_posix_group(&self, cn: &str, gid: i64, members: &[&str]) {
        let mut ldif = format!(
            "dn: cn={cn},ou=groups,{BASE}\nobjectClass: posixGroup\ncn: {cn}\ngidNumber: {gid}\n"
        );
        for m in members {
            ldif.push_str(&format!("memberUid: {m}\n"));
        }
        self.ldif("ldapadd", &ldif);
    }

    /// A groupOfNames whose `member`s are people's DNs.
    pub fn add_names_group(&self, cn: &str, members: &[&str]) {
        let mut ldif =
            format!("dn: cn={cn},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {cn}\n");
        for m in members {
            ldif.push_str(&format!("member: uid={m},ou=people,{BASE}\n"));
        }
        self.ldif("ldapadd", &ldif);
    }

    /// `ldapmodify`: adds one more `sshPublicKey` to a person.
    pub fn add_key(&self, uid: &str, key: &str) {
        self.ldif(
            "ldapmodify",
            &format!("dn: uid={uid},ou=people,{BASE}\nchangetype: modify\nadd: sshPublicKey\nsshPublicKey: {key}\n"),
        );
    }

    /// `ldapmodify`: adds (`true`) or deletes one `memberUid` of a posixGroup.
    pub fn member_uid(&self, cn: &str, uid: &str, add: bool) {
        let op = if add { "add" } else { "delete" };
        self.ldif(
            "ldapmodify",
            &format!("dn: cn={cn},ou=groups,{BASE}\nchangetype: modify\n{op}: memberUid\nmemberUid: {uid}\n"),
        );
    }
}
