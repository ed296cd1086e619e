//! The ACME client's wire side, below the `certificate` job
//! (`provision/steps/certificate.rs`): the panel's account on the
//! configured ACME server, and an order for a vhost's names in two halves
//! — [`AcmeClient::order`] gives the HTTP-01 challenges the server must
//! answer, the job puts them on the server (a role run), then
//! [`PendingOrder::complete`] tells the ACME server to validate, finalises
//! with a fresh key and fetches the chain. `instant-acme` speaks the
//! protocol. It imports only `config`.
//!
//! The account's credentials (its private key) are kept in
//! `<data_dir>/acme/account-<hash of the directory URL>.json`, 0600 in a
//! 0700 directory, so every order uses one account per ACME server. The
//! certificate's private key leaves this module only in [`Issued`], which
//! has no `Debug`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};

use crate::config::AcmeConfig;

/// Why an ACME step failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The configuration cannot work (no directory, an unreadable CA file):
    /// no retry helps.
    #[error("acme configuration: {0}")]
    Config(String),
    /// The account file cannot be read or written.
    #[error("acme account file {path}: {source}")]
    Account {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The ACME server refused, could not be reached, or did not validate
    /// the challenges; a later attempt may pass.
    #[error("acme server: {0}")]
    Server(String),
}

impl AcmeError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, AcmeError::Config(_))
    }
}

fn server(context: &str, e: instant_acme::Error) -> AcmeError {
    AcmeError::Server(format!("{context}: {e}"))
}

/// One HTTP-01 challenge: Apache must answer
/// `http://NAME/.well-known/acme-challenge/TOKEN` with `key_authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http01 {
    pub name: String,
    pub token: String,
    pub key_authorization: String,
}

/// The panel's account on one ACME server.
pub struct AcmeClient {
    account: Account,
}

/// An order whose challenges still have to be served.
pub struct PendingOrder {
    order: Order,
    /// The challenges of the authorisations still pending (an
    /// authorisation the server already holds valid needs none).
    pub challenges: Vec<Http01>,
}

/// What the ACME server issued, with the key generated for it. No `Debug`:
/// the key is a secret.
pub struct Issued {
    /// The certificate and its chain, PEM, leaf first.
    pub chain_pem: String,
    /// The certificate's private key, PEM (PKCS#8).
    pub key_pem: String,
}

/// How long the ACME server is given to validate and to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

impl AcmeClient {
    /// The panel's account on `cfg.directory_url`: read from its file
    /// under `data_dir`, or created (and the file written) the first time.
    pub async fn connect(cfg: &AcmeConfig, data_dir: &Path) -> Result<AcmeClient, AcmeError> {
        if !cfg.enabled() {
            return Err(AcmeError::Config("acme.directory_url is not set".into()));
        }
        let builder = || {
            if cfg.ca_file.trim().is_empty() {
                Account::builder().map_err(|e| AcmeError::Config(format!("HTTP client: {e}")))
            } else {
                Account::builder_with_root(cfg.ca_file.trim())
                    .map_err(|e| AcmeError::Config(format!("acme.ca_file {}: {e}", cfg.ca_file)))
            }
        };
        let dir = data_dir.join("acme");
        let digest = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(cfg.directory_url.trim().as_bytes()))
        };
        let path = dir.join(format!("account-{}.json", &digest[..16]));
        let io = |source| AcmeError::Account {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let creds: AccountCredentials = serde_json::from_str(&text)
                    .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
                let account = builder()?
                    .from_credentials(creds)
                    .await
                    .map_err(|e| server("loading the account", e))?;
                return Ok(AcmeClient { account });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let contact = (!cfg.contact.trim().is_empty()).then(|| {
            format!(
                "mailto:{}",
                cfg.contact.trim().trim_start_matches("mailto:")
            )
        });
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, creds) = builder()?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                cfg.directory_url.trim().to_string(),
                None,
            )
            .await
            .map_err(|e| server("creating the account", e))?;
        write_private(
            &dir,
            &path,
            &serde_json::to_string(&creds).unwrap_or_default(),
        )
        .map_err(io)?;
        Ok(AcmeClient { account })
    }

    /// Orders a certificate for `names` (the first is the vhost's name) and
    /// returns the HTTP-01 challenges to serve.
    pub async fn order(&self, names: &[String]) -> Result<PendingOrder, AcmeError> {
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = self
            .account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| server("new order", e))?;
        let mut challenges = Vec::new();
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| server("authorization", e))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Server(format!(
                        "authorization of {} is {other:?}",
                        authz.identifier()
                    )))
                }
            }
            let name = authz.identifier().to_string();
            let ch = authz.challenge(ChallengeType::Http01).ok_or_else(|| {
                AcmeError::Server(format!("no HTTP-01 challenge offered for {name}"))
            })?;
            // The token becomes a file name on the server: base64url only.
            if ch.token.is_empty()
                || !ch
                    .token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(AcmeError::Server(format!(
                    "the HTTP-01 token for {name} is not base64url: {:?}",
                    ch.token
                )));
            }
            challenges.push(Http01 {
                name,
                token: ch.token.clone(),
                key_authorization: ch.key_authorization().as_str().to_string(),
            });
        }
        Ok(PendingOrder { order, challenges })
    }
}

impl PendingOrder {
    /// Tells the ACME server the challenges are served, waits until the
    /// order is ready, finalises it with a new key and fetches the chain.
    pub async fn complete(mut self) -> Result<Issued, AcmeError> {
        let mut authzs = self.order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| server("authorization", e))?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let mut ch = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::Server("the HTTP-01 challenge went away".into()))?;
            ch.set_ready()
                .await
                .map_err(|e| server("challenge ready", e))?;
        }
        let status = self
            .order
            .poll_ready(&POLL)
            .await
            .map_err(|e| server("waiting for validation", e))?;
        if status != OrderStatus::Ready {
            // The server's reasons are on the authorisations.
            let mut why = Vec::new();
            let mut authzs = self.order.authorizations();
            while let Some(Ok(mut a)) = authzs.next().await {
                let Ok(state) = a.refresh().await else {
                    continue;
                };
                for c in &state.challenges {
                    if let Some(err) = &c.error {
                        why.push(format!("{}: {err}", state.identifier()));
                    }
                }
            }
            return Err(AcmeError::Server(format!(
                "the order is {status:?}, not ready: {}",
                if why.is_empty() {
                    "no reason given".to_string()
                } else {
                    why.join("; ")
                }
            )));
        }
        let key_pem = self
            .order
            .finalize()
            .await
            .map_err(|e| server("finalize", e))?;
        let chain_pem = self
            .order
            .poll_certificate(&POLL)
            .await
            .map_err(|e| server("fetching the certificate", e))?;
        Ok(Issued { chain_pem, key_pem })
    }
}

/// Writes `text` to `path` readable by its owner only, in a 0700 `dir`.
fn write_private(dir: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
