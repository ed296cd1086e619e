//! Fuzz target: the VM-ready callback as the panel receives it. Each input
//! is the query string (up to the first newline) and body of a POST to
//! `/api/v1/callback/vm-ready`, sent through the real callback router
//! (axum's query extraction, `provision::callback::vm_ready`, the error
//! type) over a scratch SQLite database. No answer may be a 5xx. Beside
//! it, the HMAC helpers: `verify` of any signature never panics, and
//! `verify` accepts what `sign` makes for any name and generation.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use keel_panel::provision::callback::{sign, verify, CallbackQuery};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

struct Panel {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

fn panel() -> &'static Panel {
    static PANEL: OnceLock<Panel> = OnceLock::new();
    PANEL.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let app = rt.block_on(async {
            let dir = keel_fuzz::scratch();
            let url = format!("sqlite://{}", dir.join("panel.db").display());
            let db = keel_panel::db::Db::open(&url)
                .await
                .expect("scratch database");
            let mut config =
                keel_panel::config::Config::load(None, std::iter::empty()).expect("defaults");
            config.data_dir = dir.to_path_buf();
            let state = keel_panel::http::AppState::new(db, config).expect("state");
            keel_panel::api::callback_router(state)
        });
        Panel { rt, app }
    })
}

const SECRET: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

fuzz_target!(|text: &str| {
    let (query, body) = text.split_once('\n').unwrap_or((text, ""));
    let p = panel();
    let uri = format!("/api/v1/callback/vm-ready?{query}");
    if let Ok(req) = Request::post(uri.as_str())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
    {
        let res =
            p.rt.block_on(p.app.clone().oneshot(req))
                .expect("infallible");
        assert!(
            !res.status().is_server_error() && res.status() != StatusCode::NOT_FOUND,
            "{uri:?} answered {}",
            res.status()
        );
    }
    // The query as the handler reads it, and the signature helpers.
    if let Ok(q) = serde_urlencoded::from_str::<CallbackQuery>(query) {
        let vm = q.vm.unwrap_or_default();
        let gen = q.gen.unwrap_or_default();
        let _ = verify(SECRET, &vm, gen, q.sig.as_deref().unwrap_or_default());
        assert!(verify(SECRET, &vm, gen, &sign(SECRET, &vm, gen)));
    }
});
