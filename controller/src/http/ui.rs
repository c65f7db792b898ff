//! placeholder
use axum::Router;
use super::Http;
pub fn routes() -> Router<Http> {
    Router::new()
}
