//! What the web layer shares, below the handlers: the state every handler
//! reaches (`state.rs`), the one error type (`error.rs`), and who is calling
//! (`caller.rs`: the authentication middleware, the `Auth` and `Peer`
//! extractors, cookies and the constant-time compare). `api` (JSON) and
//! `ui` (pages) import these; `crate::server` assembles the router on top
//! of all three. Only this layer (with `api`, `ui` and `server`) knows HTTP.

pub mod caller;
pub mod error;
pub mod guard;
pub mod state;

pub use caller::{authenticate, constant_eq, cookie, Auth, Peer, Via, CSRF_HEADER};
pub use error::ApiError;
pub use state::{AppState, SESSION_COOKIE};
