//! The API latency metric (`ferrofab_controller_api_latency_seconds`,
//! label `method`) for every RPC, recorded by one tower layer around the
//! gRPC router instead of a timer in each handler: no RPC can forget it,
//! and the handlers stay adapters. The label is the [`Action`] the
//! request path names; paths that name no timed action record nothing, so
//! a client cannot grow the label set.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::{http, Service};

use crate::action::Action;
use crate::metrics::Metrics;

/// Wraps the gRPC router (`Server::builder().layer(..)`).
#[derive(Clone)]
pub struct TimingLayer {
    metrics: Arc<Metrics>,
}

impl TimingLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for TimingLayer {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Timed<S> {
        Timed {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The router with its calls timed.
#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// Records one call's latency when dropped: when the handler has answered,
/// or when the call was abandoned (the client went away), as before.
struct Timer {
    metrics: Arc<Metrics>,
    action: Action,
    start: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.metrics.observe_api(self.action, self.start.elapsed());
    }
}

impl<S, B> Service<http::Request<B>> for Timed<S>
where
    S: Service<http::Request<B>> + Clone,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timer = Action::timed_rpc(req.uri().path()).map(|action| Timer {
            metrics: self.metrics.clone(),
            action,
            start: Instant::now(),
        });
        // The clone is the one polled ready (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let fut = inner.call(req);
        Box::pin(async move {
            let _timer = timer;
            fut.await
        })
    }
}
