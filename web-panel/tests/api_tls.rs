//! The panel serving TLS itself (rustls): a self-signed certificate made
//! with the openssl command, a login over https, and the session cookie
//! marked `Secure`.

use std::process::Command;

use keel_panel::auth;
use keel_panel::config::Config;
use keel_panel::db::Db;
use keel_panel::domain::Principal;
use keel_panel::http::AppState;
use keel_panel::server;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_login_sets_a_secure_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut config = Config::default();
    config.auth.argon2_memory_kib = 256;
    config.auth.argon2_iterations = 1;
    config.tls.cert_file = cert.display().to_string();
    config.tls.key_file = key.display().to_string();
    let url = format!("sqlite://{}", dir.path().join("panel.db").display());
    let db = Db::open(&url).await.unwrap();
    let state = AppState::new(db, config.clone()).unwrap();
    auth::create_user(
        &state.db,
        &state.passwords,
        &Principal::system(),
        "alice",
        None,
        Some("alice-password".into()),
        false,
    )
    .await
    .unwrap();
    let tls = server::tls_config(&config.tls.cert_file, &config.tls.key_file).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve_tls(state, listener, tls, shutdown.clone()));

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = client
        .post(format!("https://localhost:{port}/api/v1/auth/login"))
        .json(&serde_json::json!({"name": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    // Plain HTTP on the TLS port does not get an answer.
    assert!(reqwest::get(format!("http://127.0.0.1:{port}/api/v1/me"))
        .await
        .is_err());
    shutdown.cancel();

    let err = server::tls_config("/nonexistent/cert.pem", &config.tls.key_file).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}
