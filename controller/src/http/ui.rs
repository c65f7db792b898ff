//! placeholder
use super::Http;
use axum::Router;
pub fn routes() -> Router<Http> {
    Router::new()
}
