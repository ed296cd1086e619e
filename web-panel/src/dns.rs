//! DNS publishing's wire side, below the `dns` job
//! (`provision/steps/dns.rs`): what records a server gets (A, AAAA, SSHFP
//! with SHA-256 fingerprints of its pre-generated host keys, CNAMEs of its
//! aliases), which configured zone each name belongs to, and the RFC 2136
//! update that replaces them on the primary server, signed with TSIG
//! (hickory-dns's client). It imports only `config`.
//!
//! An update is idempotent: for every name and type the panel manages it
//! deletes the whole RRset, then adds what should be there, in one message
//! per zone, so the server applies it atomically and a retried update
//! leaves the same zone. The TSIG secret is read from `dns.key_file` at
//! each update and lives only in the signer: no `Debug`, no error and no
//! log line shows it.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hickory_client::client::Client;
use hickory_client::proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_client::proto::dnssec::tsig::TSigner;
use hickory_client::proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_client::proto::rr::rdata::{sshfp, A, AAAA, CNAME, SSHFP};
use hickory_client::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::tcp::TcpClientStream;
use hickory_client::proto::xfer::{DnsHandle, FirstAnswer};
use serde::{Deserialize, Serialize};

use crate::config::DnsConfig;

/// Why publishing failed. [`DnsError::is_retryable`] classes it for the
/// job's retry policy.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The `[dns]` section cannot be used.
    #[error("dns configuration: {0}")]
    Config(String),
    #[error("reading the TSIG key {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The key file holds no base64 secret (the secret is never quoted).
    #[error("the TSIG key file {path} holds no base64 secret")]
    KeyFormat { path: String },
    /// A name no configured zone contains: no update can place it.
    #[error("{name} is in none of the configured zones ({zones})")]
    NotInZone { name: String, zones: String },
    #[error("{name:?} is not a valid DNS name: {reason}")]
    BadName { name: String, reason: String },
    /// The connection, the exchange or the answer's TSIG failed.
    #[error("update of zone {zone} via {server}: {detail}")]
    Exchange {
        zone: String,
        server: String,
        detail: String,
    },
    /// The server answered, and refused (NOTAUTH for a key it does not
    /// accept, REFUSED for a zone it does not serve...).
    #[error("update of zone {zone} refused by {server}: {rcode}")]
    Rejected {
        zone: String,
        server: String,
        rcode: String,
    },
}

impl DnsError {
    /// Names outside every zone and invalid names will not improve on
    /// retry; everything else (the server down, a key file being rotated, a
    /// zone not loaded yet) might.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            DnsError::NotInZone { .. } | DnsError::BadName { .. } | DnsError::Config(_)
        )
    }
}

/// One record's data, typed; stored as JSON in `dns_publications`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "UPPERCASE")]
pub enum RecordData {
    A {
        address: Ipv4Addr,
    },
    Aaaa {
        address: Ipv6Addr,
    },
    /// RFC 4255: the key's algorithm number, the fingerprint type (2 =
    /// SHA-256, RFC 6594) and the fingerprint in lower-case hex.
    Sshfp {
        algorithm: u8,
        fingerprint_type: u8,
        fingerprint: String,
    },
    /// An alias: the canonical name, absolute.
    Cname {
        target: String,
    },
}

impl RecordData {
    pub fn record_type(&self) -> RecordType {
        match self {
            RecordData::A { .. } => RecordType::A,
            RecordData::Aaaa { .. } => RecordType::AAAA,
            RecordData::Sshfp { .. } => RecordType::SSHFP,
            RecordData::Cname { .. } => RecordType::CNAME,
        }
    }
}

impl fmt::Display for RecordData {
    /// The presentation format (`dig`'s and `ssh-keygen -r`'s, lower-case
    /// hex).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordData::A { address } => write!(f, "A {address}"),
            RecordData::Aaaa { address } => write!(f, "AAAA {address}"),
            RecordData::Sshfp {
                algorithm,
                fingerprint_type,
                fingerprint,
            } => write!(f, "SSHFP {algorithm} {fingerprint_type} {fingerprint}"),
            RecordData::Cname { target } => write!(f, "CNAME {target}"),
        }
    }
}

/// A record the panel manages: an absolute, lower-case name and its data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DnsRecord {
    pub name: String,
    #[serde(flatten)]
    pub data: RecordData,
}

impl fmt::Display for DnsRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} IN {}", self.name, self.data)
    }
}

/// `name` made absolute and lower-case (`Vm1.Example.org` →
/// `vm1.example.org.`), checked as a DNS name.
pub fn absolute(name: &str) -> Result<String, DnsError> {
    let trimmed = name.trim().trim_end_matches('.');
    let bad = |reason: String| DnsError::BadName {
        name: name.to_string(),
        reason,
    };
    if trimmed.is_empty() {
        return Err(bad("empty".into()));
    }
    let parsed = Name::from_ascii(format!("{trimmed}.")).map_err(|e| bad(e.to_string()))?;
    Ok(parsed.to_lowercase().to_ascii())
}

/// The SSHFP record of an OpenSSH public key line: its algorithm number
/// and the SHA-256 of the key blob, as `ssh-keygen -r` prints them. SHA-1
/// fingerprints (type 1) are not published: RFC 6594 moved SSHFP to
/// SHA-256, and OpenSSH accepts a host key matched by either. `None` for
/// a line that does not parse or an algorithm SSHFP has no number for.
pub fn sshfp(public_line: &str) -> Option<RecordData> {
    let key = ssh_key::PublicKey::from_openssh(public_line.trim()).ok()?;
    let algorithm = match key.algorithm() {
        ssh_key::Algorithm::Rsa { .. } => 1,
        ssh_key::Algorithm::Dsa => 2,
        ssh_key::Algorithm::Ecdsa { .. } => 3,
        ssh_key::Algorithm::Ed25519 => 4,
        _ => return None,
    };
    let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256);
    Some(RecordData::Sshfp {
        algorithm,
        fingerprint_type: 2,
        fingerprint: hex::encode(fingerprint.as_bytes()),
    })
}

/// The records of one server: `hostname`'s A and AAAA from its
/// allocation, an SSHFP per host key, and a CNAME to `hostname` for each
/// alias (aliases equal to the hostname are skipped: a name with a CNAME
/// can have no other records).
pub fn server_records(
    hostname: &str,
    ipv4: Option<&str>,
    ipv6: Option<&str>,
    host_keys: &str,
    aliases: &[String],
) -> Result<Vec<DnsRecord>, DnsError> {
    let name = absolute(hostname)?;
    let mut out = BTreeSet::new();
    let bad_address = |a: &str| DnsError::BadName {
        name: name.clone(),
        reason: format!("address {a:?} does not parse"),
    };
    if let Some(a) = ipv4.filter(|a| !a.is_empty()) {
        let address = a.parse().map_err(|_| bad_address(a))?;
        out.insert(DnsRecord {
            name: name.clone(),
            data: RecordData::A { address },
        });
    }
    if let Some(a) = ipv6.filter(|a| !a.is_empty()) {
        let address = a.parse().map_err(|_| bad_address(a))?;
        out.insert(DnsRecord {
            name: name.clone(),
            data: RecordData::Aaaa { address },
        });
    }
    for line in host_keys.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(data) = sshfp(line) {
            out.insert(DnsRecord {
                name: name.clone(),
                data,
            });
        }
    }
    for alias in aliases {
        let alias = absolute(alias)?;
        if alias != name {
            out.insert(DnsRecord {
                name: alias,
                data: RecordData::Cname {
                    target: name.clone(),
                },
            });
        }
    }
    Ok(out.into_iter().collect())
}

/// The configured zone `name` (absolute) belongs to: the longest one it
/// ends with.
pub fn zone_of(cfg: &DnsConfig, name: &str) -> Result<String, DnsError> {
    let mut best: Option<String> = None;
    for zone in &cfg.zones {
        let Ok(zone) = absolute(zone) else {
            continue;
        };
        let inside = name == zone || name.ends_with(&format!(".{zone}"));
        if inside && best.as_ref().is_none_or(|b| zone.len() > b.len()) {
            best = Some(zone);
        }
    }
    best.ok_or_else(|| DnsError::NotInZone {
        name: name.to_string(),
        zones: cfg.zones.join(", "),
    })
}

/// The TSIG key of `dns.key_file`; holds the secret, so no `Debug`.
struct TsigKey {
    secret: Vec<u8>,
}

impl TsigKey {
    /// Reads the secret: the file is either the base64 secret alone, or
    /// `tsig-keygen`'s `key "name" { algorithm …; secret "…"; };` clause.
    fn load(path: &str) -> Result<TsigKey, DnsError> {
        let text = std::fs::read_to_string(path).map_err(|source| DnsError::KeyFile {
            path: path.to_string(),
            source,
        })?;
        // The `secret` keyword: a word of its own (not part of the key's
        // quoted name), followed by the quoted value.
        let keyword = text.match_indices("secret").find(|(at, _)| {
            let before = text[..*at].chars().next_back();
            let after = text[at + "secret".len()..].trim_start();
            before.is_none_or(|c| c.is_whitespace() || c == ';' || c == '{')
                && after.starts_with('"')
        });
        let encoded = match keyword {
            Some((at, _)) => text[at + "secret".len()..]
                .split('"')
                .nth(1)
                .unwrap_or_default()
                .to_string(),
            None => text.trim().to_string(),
        };
        let secret = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| DnsError::KeyFormat {
                path: path.to_string(),
            })?;
        Ok(TsigKey { secret })
    }
}

/// The change to one zone: the RRsets (name, type) to empty, then the
/// records to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneUpdate {
    pub zone: String,
    pub clear: Vec<(String, RecordType)>,
    pub add: Vec<DnsRecord>,
}

/// What takes the zones from `before` (what the panel published last) to
/// `after`: every RRset either holds is emptied, then `after` is added, one
/// update per zone. Empty when both are empty.
pub fn plan(
    cfg: &DnsConfig,
    before: &[DnsRecord],
    after: &[DnsRecord],
) -> Result<Vec<ZoneUpdate>, DnsError> {
    fn slot(updates: &mut Vec<ZoneUpdate>, zone: String) -> &mut ZoneUpdate {
        match updates.iter().position(|u| u.zone == zone) {
            Some(i) => &mut updates[i],
            None => {
                updates.push(ZoneUpdate {
                    zone,
                    clear: Vec::new(),
                    add: Vec::new(),
                });
                updates.last_mut().expect("just pushed")
            }
        }
    }
    let mut updates: Vec<ZoneUpdate> = Vec::new();
    let mut sets = BTreeSet::new();
    for r in before.iter().chain(after) {
        sets.insert((r.name.clone(), r.data.record_type()));
    }
    for (name, rtype) in sets {
        slot(&mut updates, zone_of(cfg, &name)?)
            .clear
            .push((name, rtype));
    }
    for r in after {
        slot(&mut updates, zone_of(cfg, &r.name)?)
            .add
            .push(r.clone());
    }
    Ok(updates)
}

/// Sends RFC 2136 updates to `dns.server`, signed with the configured
/// TSIG key.
pub struct Publisher {
    server: std::net::SocketAddr,
    timeout: Duration,
    ttl: u32,
    signer: TSigner,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("server", &self.server)
            .field("key_name", &self.signer.signer_name().to_ascii())
            .finish_non_exhaustive()
    }
}

fn algorithm(name: &str) -> Result<TsigAlgorithm, DnsError> {
    match name.to_ascii_lowercase().as_str() {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        other => Err(DnsError::Config(format!(
            "dns.key_algorithm {other:?} is not one of {:?}",
            DnsConfig::ALGORITHMS
        ))),
    }
}

impl Publisher {
    /// Checks the configuration and reads the key file.
    pub fn new(cfg: &DnsConfig) -> Result<Publisher, DnsError> {
        cfg.check().map_err(DnsError::Config)?;
        let server = cfg.server_addr().map_err(DnsError::Config)?;
        let key = TsigKey::load(&cfg.key_file)?;
        let key_name = Name::from_ascii(absolute(&cfg.key_name)?)
            .map_err(|e| DnsError::Config(format!("dns.key_name {:?}: {e}", cfg.key_name)))?;
        // 300 s of clock skew, as BIND's nsupdate allows.
        let signer = TSigner::new(key.secret, algorithm(&cfg.key_algorithm)?, key_name, 300)
            .map_err(|e| DnsError::Config(format!("TSIG key: {e}")))?;
        Ok(Publisher {
            server,
            timeout: Duration::from_secs(cfg.timeout_secs),
            ttl: cfg.ttl,
            signer,
        })
    }

    /// Applies one zone's update, over TCP (an update with several host
    /// keys may not fit a UDP answer's size), and checks the answer, whose
    /// TSIG the client verifies.
    pub async fn apply(&self, update: &ZoneUpdate) -> Result<(), DnsError> {
        let exchange = |detail: String| DnsError::Exchange {
            zone: update.zone.clone(),
            server: self.server.to_string(),
            detail,
        };
        let message = self.message(update)?;
        let (stream, sender) = TcpClientStream::new(
            self.server,
            None,
            Some(self.timeout),
            TokioRuntimeProvider::new(),
        );
        let signer: Arc<TSigner> = Arc::new(self.signer.clone());
        let (client, background) = Client::with_timeout(stream, sender, self.timeout, Some(signer))
            .await
            .map_err(|e| exchange(e.to_string()))?;
        let bg = tokio::spawn(background);
        let answer = client.send(message).first_answer().await;
        bg.abort();
        let answer = answer.map_err(|e| exchange(e.to_string()))?;
        match answer.response_code() {
            ResponseCode::NoError => Ok(()),
            rcode => Err(DnsError::Rejected {
                zone: update.zone.clone(),
                server: self.server.to_string(),
                rcode: rcode.to_string(),
            }),
        }
    }

    fn message(&self, update: &ZoneUpdate) -> Result<Message, DnsError> {
        let name = |n: &str| {
            Name::from_str(n).map_err(|e| DnsError::BadName {
                name: n.to_string(),
                reason: e.to_string(),
            })
        };
        let mut zone = Query::new();
        zone.set_name(name(&update.zone)?)
            .set_query_class(DNSClass::IN)
            .set_query_type(RecordType::SOA);
        let mut message = Message::new();
        message
            .set_id(fastrand::u16(..))
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Update)
            .set_recursion_desired(false);
        message.add_zone(zone);
        // RFC 2136 2.5.2: delete an RRset = class ANY, TTL 0, no RDATA.
        for (n, rtype) in &update.clear {
            let mut rr = Record::update0(name(n)?, 0, *rtype);
            rr.set_dns_class(DNSClass::ANY);
            message.add_update(rr.into_record_of_rdata());
        }
        for r in &update.add {
            let rdata = match &r.data {
                RecordData::A { address } => RData::A(A(*address)),
                RecordData::Aaaa { address } => RData::AAAA(AAAA(*address)),
                RecordData::Sshfp {
                    algorithm,
                    fingerprint_type,
                    fingerprint,
                } => RData::SSHFP(SSHFP::new(
                    sshfp::Algorithm::from(*algorithm),
                    sshfp::FingerprintType::from(*fingerprint_type),
                    hex::decode(fingerprint).map_err(|e| DnsError::BadName {
                        name: r.name.clone(),
                        reason: format!("SSHFP fingerprint: {e}"),
                    })?,
                )),
                RecordData::Cname { target } => RData::CNAME(CNAME(name(target)?)),
            };
            message.add_update(Record::from_rdata(name(&r.name)?, self.ttl, rdata));
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(zones: &[&str]) -> DnsConfig {
        DnsConfig {
            server: "127.0.0.1:53".into(),
            zones: zones.iter().map(|z| z.to_string()).collect(),
            key_name: "k".into(),
            key_file: "/nonexistent".into(),
            ..DnsConfig::default()
        }
    }

    /// The fingerprints `ssh-keygen -r x -f KEY.pub` (OpenSSH 9.2) prints
    /// for these keys, type 2 (SHA-256) lines.
    #[test]
    fn sshfp_matches_ssh_keygen_r() {
        let ed =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtunXU91vu9GWCFAoDmmKZWkT5M4q0cyWQnaZXk03k3 h";
        assert_eq!(
            sshfp(ed).unwrap().to_string(),
            "SSHFP 4 2 a34a7d50ece2e5f7bbbfcb77f3817db7f3ba6d594192fc6895beddfe461cdff5"
        );
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC+no5kRkX0/fAoLZlMebEwNDsXWkIBXTXE0u9yW5ZS9sJc6eeKKOTZFnVPJQu7lisMxJZ7+TI9DeKrGT0uNgkP4U7BAQFebIJUxy6fheckeR5DVIJ5sT4+Wc/EfPm29uiHD38v8Yt3ZBwuzaaaiU21nDKBubKl0zO809e3ixOKQQ== r";
        assert_eq!(
            sshfp(rsa).unwrap().to_string(),
            "SSHFP 1 2 4188d47c4f5b4e542971844c080cb155b73e843fac95cf7f5a19285038c994e6"
        );
        assert_eq!(sshfp("ssh-ed25519 not-base64"), None);
        let records = server_records("Vm1.example.org", Some("192.0.2.7"), None, ed, &[]).unwrap();
        let text: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            text,
            [
                "vm1.example.org. IN A 192.0.2.7",
                "vm1.example.org. IN SSHFP 4 2 a34a7d50ece2e5f7bbbfcb77f3817db7f3ba6d594192fc6895beddfe461cdff5"
            ]
        );
    }

    #[test]
    fn names_go_to_the_longest_zone_they_end_with() {
        let c = cfg(&["example.org", "lab.example.org."]);
        assert_eq!(zone_of(&c, "vm.example.org.").unwrap(), "example.org.");
        assert_eq!(
            zone_of(&c, "vm.lab.example.org.").unwrap(),
            "lab.example.org."
        );
        assert_eq!(zone_of(&c, "example.org.").unwrap(), "example.org.");
        let e = zone_of(&c, "vm.badexample.org.").unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert_eq!(absolute("Vm1.Example.ORG").unwrap(), "vm1.example.org.");
        assert!(absolute("a..b").is_err());
    }

    /// A replace empties every RRset before or after holds, and adds only
    /// after; a removal (after empty) only empties.
    #[test]
    fn plans_replace_whole_rrsets_per_zone() {
        let c = cfg(&["example.org", "example.net"]);
        let before = server_records("vm.example.org", Some("192.0.2.1"), None, "", &[]).unwrap();
        let after = server_records(
            "vm.example.org",
            Some("192.0.2.2"),
            Some("2001:db8::2"),
            "",
            &["www.example.net".into()],
        )
        .unwrap();
        let plan_ = plan(&c, &before, &after).unwrap();
        assert_eq!(plan_.len(), 2);
        assert_eq!(plan_[0].zone, "example.org.");
        assert_eq!(
            plan_[0].clear,
            vec![
                ("vm.example.org.".to_string(), RecordType::A),
                ("vm.example.org.".to_string(), RecordType::AAAA)
            ]
        );
        assert_eq!(plan_[0].add.len(), 2);
        assert_eq!(plan_[1].zone, "example.net.");
        assert_eq!(
            plan_[1].add[0].to_string(),
            "www.example.net. IN CNAME vm.example.org."
        );
        let removal = plan(&c, &after, &[]).unwrap();
        assert!(removal.iter().all(|u| u.add.is_empty()));
        assert_eq!(removal.iter().map(|u| u.clear.len()).sum::<usize>(), 3);
        assert!(plan(&c, &[], &[]).unwrap().is_empty());
    }

    #[test]
    fn key_files_hold_a_bare_secret_or_a_tsig_keygen_clause() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("bare");
        std::fs::write(&bare, "c2VjcmV0LWJ5dGVz\n").unwrap();
        assert_eq!(
            TsigKey::load(bare.to_str().unwrap()).unwrap().secret,
            b"secret-bytes"
        );
        let clause = dir.path().join("clause");
        std::fs::write(
            &clause,
            "key \"my-secret\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LWJ5dGVz\";\n};\n",
        )
        .unwrap();
        assert_eq!(
            TsigKey::load(clause.to_str().unwrap()).unwrap().secret,
            b"secret-bytes"
        );
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "secret \"not base64!\"").unwrap();
        let e = TsigKey::load(junk.to_str().unwrap()).err().unwrap();
        assert!(!e.to_string().contains("not base64"), "{e}");
        assert!(matches!(
            TsigKey::load("/nonexistent/key"),
            Err(DnsError::KeyFile { .. })
        ));
    }
}
