//! The LDAP directory behind "lookup groups": a client that reads groups
//! and their members, and nothing else. It sits at the bottom of the panel,
//! beside `config` (which it reads) and below the domain layer
//! (`services::lookup`), which mirrors what it reads into the store and
//! queues the access runs.
//!
//! One [`Directory::connect`] is one TLS connection, bound with the
//! configured DN and the password read from `ldap.bind_password_file`.
//! TLS is not optional: `ldaps://`, or `ldap://` with StartTLS, and the
//! server's certificate is always verified (against `ldap.ca_file`, else
//! the system's roots). The bind password is never logged and has no
//! `Debug` that shows it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::config::LdapConfig;

/// How reading the directory fails. Every variant is worth a retry except
/// a configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("ldap: {0}")]
    Config(String),
    #[error("ldap: reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("ldap: connecting to {url}: {source}")]
    Connect {
        url: String,
        source: Box<ldap3::LdapError>,
    },
    #[error("ldap: binding as {dn}: {source}")]
    Bind {
        dn: String,
        source: Box<ldap3::LdapError>,
    },
    #[error("ldap: searching {base} for {filter}: {source}")]
    Search {
        base: String,
        filter: String,
        source: Box<ldap3::LdapError>,
    },
}

impl DirectoryError {
    /// A configuration problem does not go away by trying again.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            DirectoryError::Config(_) | DirectoryError::Read { .. }
        )
    }
}

/// One person as the directory has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryPerson {
    /// `uid`: the login name, which is the panel user's name.
    pub name: String,
    /// `displayName`, else `cn`.
    pub display_name: Option<String>,
    /// `uidNumber`, when the entry has one.
    pub uid_number: Option<i64>,
    /// `sshPublicKey` values (openssh-lpk schema), as written.
    pub ssh_keys: Vec<String>,
}

/// A group found in the directory and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryGroup {
    pub name: String,
    pub members: Vec<DirectoryPerson>,
}

/// The secret, kept out of `Debug` and logs.
struct BindPassword(String);

impl std::fmt::Debug for BindPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BindPassword(***)")
    }
}

const PERSON_ATTRS: [&str; 5] = ["uid", "cn", "displayName", "uidNumber", "sshPublicKey"];

/// A bound connection to the directory.
pub struct Directory {
    ldap: Ldap,
    cfg: LdapConfig,
}

fn tls_config(cfg: &LdapConfig) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    let mut roots = rustls::RootCertStore::empty();
    if cfg.ca_file.is_empty() {
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system certificate rustls cannot read is no reason to fail.
            let _ = roots.add(cert);
        }
    } else {
        let certs = CertificateDer::pem_file_iter(&cfg.ca_file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| DirectoryError::Config(format!("ca_file {}: {e}", cfg.ca_file)))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| DirectoryError::Config(format!("ca_file {}: {e}", cfg.ca_file)))?;
        }
    }
    if roots.is_empty() {
        return Err(DirectoryError::Config(
            "no CA certificate to verify the server with (set ldap.ca_file)".into(),
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| DirectoryError::Config(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

fn first(entry: &SearchEntry, attr: &str) -> Option<String> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .and_then(|(_, v)| v.first().cloned())
}

fn all(entry: &SearchEntry, attr: &str) -> Vec<String> {
    entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
        .flat_map(|(_, v)| v.iter().cloned())
        .collect()
}

fn person(entry: &SearchEntry) -> Option<DirectoryPerson> {
    Some(DirectoryPerson {
        name: first(entry, "uid")?,
        display_name: first(entry, "displayName").or_else(|| first(entry, "cn")),
        uid_number: first(entry, "uidNumber").and_then(|v| v.trim().parse().ok()),
        ssh_keys: all(entry, "sshPublicKey")
            .into_iter()
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect(),
    })
}

impl Directory {
    /// Connects over TLS and binds. `cfg.url` must be set (LDAP is on).
    pub async fn connect(cfg: &LdapConfig) -> Result<Directory, DirectoryError> {
        cfg.check().map_err(DirectoryError::Config)?;
        let password = BindPassword(
            std::fs::read_to_string(&cfg.bind_password_file)
                .map_err(|source| DirectoryError::Read {
                    path: cfg.bind_password_file.clone(),
                    source,
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        );
        let settings = LdapConnSettings::new()
            .set_conn_timeout(Duration::from_secs(cfg.timeout_secs))
            .set_starttls(cfg.starttls)
            .set_config(tls_config(cfg)?);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &cfg.url)
            .await
            .map_err(|source| DirectoryError::Connect {
                url: cfg.url.clone(),
                source: Box::new(source),
            })?;
        ldap3::drive!(conn);
        ldap.with_timeout(Duration::from_secs(cfg.timeout_secs))
            .simple_bind(&cfg.bind_dn, &password.0)
            .await
            .and_then(|r| r.success())
            .map_err(|source| DirectoryError::Bind {
                dn: cfg.bind_dn.clone(),
                source: Box::new(source),
            })?;
        Ok(Directory {
            ldap,
            cfg: cfg.clone(),
        })
    }

    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let (entries, _) = self
            .ldap
            .with_timeout(Duration::from_secs(self.cfg.timeout_secs))
            .search(base, scope, filter, attrs.to_vec())
            .await
            .and_then(|r| r.success())
            .map_err(|source| DirectoryError::Search {
                base: base.to_string(),
                filter: filter.to_string(),
                source: Box::new(source),
            })?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    /// Names of the groups `ldap.group_filter` matches whose name starts
    /// with `prefix` (case-insensitive), sorted, at most `limit`: the
    /// site page's autocomplete.
    pub async fn group_names(
        &mut self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, DirectoryError> {
        let filter = if prefix.is_empty() {
            self.cfg.group_filter.clone()
        } else {
            format!("(&{}(cn={}*))", self.cfg.group_filter, ldap_escape(prefix))
        };
        let base = self.cfg.base_dn.clone();
        let entries = self.search(&base, Scope::Subtree, &filter, &["cn"]).await?;
        let names: BTreeSet<String> = entries.iter().filter_map(|e| first(e, "cn")).collect();
        Ok(names.into_iter().take(limit).collect())
    }

    /// The group `name` and its members; `None` when the directory has no
    /// such group. Members are `memberUid` values (posixGroup), looked up
    /// under `ldap.user_filter`, and `member`/`uniqueMember` DNs
    /// (groupOfNames), read directly; members without a `uid` are skipped.
    pub async fn group(&mut self, name: &str) -> Result<Option<DirectoryGroup>, DirectoryError> {
        let filter = format!("(&{}(cn={}))", self.cfg.group_filter, ldap_escape(name));
        let base = self.cfg.base_dn.clone();
        let entries = self
            .search(
                &base,
                Scope::Subtree,
                &filter,
                &["cn", "memberUid", "member", "uniqueMember"],
            )
            .await?;
        let Some(entry) = entries.first() else {
            return Ok(None);
        };
        let mut members = Vec::new();
        let mut seen = BTreeSet::new();
        for uid in all(entry, "memberUid") {
            let filter = format!("(&{}(uid={}))", self.cfg.user_filter, ldap_escape(&uid));
            for e in self
                .search(&base, Scope::Subtree, &filter, &PERSON_ATTRS)
                .await?
            {
                if let Some(p) = person(&e) {
                    if seen.insert(p.name.clone()) {
                        members.push(p);
                    }
                }
            }
        }
        let dns: Vec<String> = all(entry, "member")
            .into_iter()
            .chain(all(entry, "uniqueMember"))
            .collect();
        for dn in dns {
            let found = match self
                .search(
                    &dn,
                    Scope::Base,
                    &self.cfg.user_filter.clone(),
                    &PERSON_ATTRS,
                )
                .await
            {
                Ok(found) => found,
                // A member DN that no longer exists (noSuchObject, 32) is a
                // member who left, not a failure of the directory.
                Err(DirectoryError::Search { source, .. }) if matches!(&*source, ldap3::LdapError::LdapResult { result } if result.rc == 32) => {
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            for e in found {
                if let Some(p) = person(&e) {
                    if seen.insert(p.name.clone()) {
                        members.push(p);
                    }
                }
            }
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(DirectoryGroup {
            name: first(entry, "cn").unwrap_or_else(|| name.to_string()),
            members,
        }))
    }

    /// Ends the session politely; dropping it works too.
    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}
