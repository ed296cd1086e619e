//! placeholder
use axum::Router;
pub fn router() -> Router<crate::http::AppState> {
    Router::new()
}
