//! A gRPC channel over a list of controller replicas that fails over.
//!
//! Every replica serves the admin API, so a client only needs one that
//! answers. [`Failover`] sends each call to the current replica and, when
//! that replica is gone (the connection cannot be made, the call breaks,
//! or the replica answers UNAVAILABLE), makes the next one in the list
//! current, so the caller's next call (or its own retry) goes there.
//!
//! Within one call it re-sends the request to the next replica only when
//! that cannot apply a change twice:
//! * the connection could not be made, so the request never left; or
//! * the method only reads (`Get*`, `List*`, `Watch*`).
//!
//! Otherwise (a create whose connection broke mid-call, an UNAVAILABLE
//! answer to a write) the outcome is unknown and the error goes back to
//! the caller, which knows how to find out (the Terraform provider reads
//! the object back by name; see its `create_with_retry`). Each replica is
//! tried at most once per call; pacing between rounds is the caller's.
//! When every replica failed, the error names each one with its reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http_body_util::{BodyExt, Full};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::transport::Channel;
use tonic::{Code, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One replica: its URL (for messages) and its channel (connected lazily
/// unless it was the one probed at start).
#[derive(Clone)]
pub struct Replica {
    pub url: String,
    pub channel: Channel,
}

struct Inner {
    replicas: Vec<Replica>,
    current: AtomicUsize,
    /// Per replica, why its last call failed (cleared when it answers):
    /// what the "every replica failed" error reports.
    failures: Mutex<Vec<Option<String>>>,
    /// Counts of failovers, for logs and tests.
    failovers: AtomicUsize,
}

/// The channel behind [`crate::client::Admin`]: cheap to clone, all clones
/// share which replica is current.
#[derive(Clone)]
pub struct Failover {
    inner: Arc<Inner>,
}

/// How one attempt on one replica ended.
enum Outcome {
    /// An answer to pass back (possibly a gRPC error other than UNAVAILABLE).
    Answer(http::Response<Body>),
    /// The replica answered UNAVAILABLE: it is up but cannot serve (shutting
    /// down, cut off from its store). Kept to return if no replica does better.
    Unavailable(http::Response<Body>, String),
    /// No connection could be made: the request was not sent.
    NotSent(BoxError, String),
    /// The call broke after it may have reached the replica.
    Broken(BoxError, String),
}

impl Failover {
    /// `start` is the index of the replica to use first (the one the
    /// caller found reachable). `replicas` must not be empty.
    pub fn new(replicas: Vec<Replica>, start: usize) -> Failover {
        let n = replicas.len();
        Failover {
            inner: Arc::new(Inner {
                current: AtomicUsize::new(if n == 0 { 0 } else { start % n }),
                failures: Mutex::new(vec![None; n]),
                replicas,
                failovers: AtomicUsize::new(0),
            }),
        }
    }

    /// The URL calls go to now.
    pub fn current_url(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed);
        self.inner.replicas.get(i).map_or("", |r| r.url.as_str())
    }

    /// How many times a failure moved calls to another replica.
    pub fn failovers(&self) -> usize {
        self.inner.failovers.load(Ordering::Relaxed)
    }
}

impl Inner {
    /// Records that replica `i` failed and, if it is still the current one,
    /// moves to the next (a concurrent call may already have moved on:
    /// only one of them advances, so replicas are not skipped).
    fn failed(&self, i: usize, why: &str) {
        if let Ok(mut f) = self.failures.lock() {
            if let Some(slot) = f.get_mut(i) {
                *slot = Some(why.to_owned());
            }
        }
        let n = self.replicas.len();
        let next = (i + 1) % n;
        if n > 1
            && self
                .current
                .compare_exchange(i, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.failovers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(from = %self.replicas[i].url, to = %self.replicas[next].url, error = %why,
                "controller replica failed; failing over");
        }
    }

    fn answered(&self, i: usize) {
        if let Ok(mut f) = self.failures.lock() {
            if let Some(slot) = f.get_mut(i) {
                *slot = None;
            }
        }
    }

    /// "every controller endpoint failed: URL: why; URL: why".
    fn all_failed(&self, code: Code) -> Status {
        let f = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        let each: Vec<String> = self
            .replicas
            .iter()
            .zip(f)
            .map(|(r, why)| format!("{}: {}", r.url, why.as_deref().unwrap_or("not tried")))
            .collect();
        Status::new(
            code,
            format!("every controller endpoint failed ({})", each.join("; ")),
        )
    }
}

/// Whether `path` (`/ferrofab.v1.AdminService/GetVolume`) names a method
/// that changes nothing, so sending it twice is harmless.
pub fn is_read_method(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    ["Get", "List", "Watch"]
        .iter()
        .any(|p| method.starts_with(p))
}

/// The order in which the client named `key` (an agent's node name) tries
/// `n` controller replicas: a permutation of `0..n` that depends only on
/// `key` and `n`.
///
/// Why: with "first that answers, in list order", every agent of a fleet
/// with the same endpoint list connects to the same replica, and when it
/// dies they all move to the same next one (the `ha` bench saw 1,000 of
/// 1,000 land on one replica). A per-client permutation spreads the fleet
/// evenly over the replicas and, after a loss, evenly over the survivors,
/// while each client still keeps one stable preference (so a restart
/// returns it to the same replica, and operators can predict it). The hash
/// is FNV-1a and the shuffle a seeded Fisher-Yates, both written out here
/// because std's hasher may change between Rust releases.
pub fn spread_order(key: &str, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = fnv1a64(key.as_bytes());
    for i in (1..n).rev() {
        state = splitmix64(state);
        // `i + 1` is small (the number of replicas), so the modulo bias
        // over a 64-bit value is negligible.
        let j = (state % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One step of SplitMix64: decorrelates the successive draws of the
/// shuffle from the (similar) hashes of similar node names.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether tonic's error chain says no connection could be made.
fn connect_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The grpc-status of a trailers-only answer (how servers send errors),
/// with its message percent-decoded as tonic does for the caller, so a
/// failover diagnostic reads "store unavailable: …", not "store%20…".
fn header_status(resp: &http::Response<Body>) -> Option<(Code, String)> {
    let status = Status::from_header_map(resp.headers())?;
    Some((status.code(), status.message().to_owned()))
}

async fn attempt(replica: &Replica, req: http::Request<Body>) -> Outcome {
    let mut ch = replica.channel.clone();
    let sent = async {
        std::future::poll_fn(|cx| ch.poll_ready(cx)).await?;
        ch.call(req).await
    }
    .await;
    match sent {
        Ok(resp) => match header_status(&resp) {
            Some((Code::Unavailable, msg)) => {
                let why = format!("answered UNAVAILABLE: {msg}");
                Outcome::Unavailable(resp, why)
            }
            _ => Outcome::Answer(resp),
        },
        Err(e) => {
            let why = crate::client::flatten_source(&e);
            if connect_failed(&e) {
                Outcome::NotSent(Box::new(e), why)
            } else {
                Outcome::Broken(Box::new(e), why)
            }
        }
    }
}

/// Rebuilds a request from its parts and the buffered body.
fn rebuild(parts: &http::request::Parts, body: &tonic::codegen::Bytes) -> http::Request<Body> {
    let mut req = http::Request::new(Body::new(Full::new(body.clone())));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    *req.extensions_mut() = parts.extensions.clone();
    req
}

async fn call(
    inner: Arc<Inner>,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, BoxError> {
    let (parts, body) = req.into_parts();
    // Every admin request is unary and bounded by the client's encoding
    // limit, so it can be held to be sent again.
    let body = body.collect().await?.to_bytes();
    let read = is_read_method(parts.uri.path());
    let n = inner.replicas.len();
    let mut last_unavailable = None;
    for _ in 0..n {
        let i = inner.current.load(Ordering::Acquire) % n;
        let replica = &inner.replicas[i];
        match attempt(replica, rebuild(&parts, &body)).await {
            Outcome::Answer(resp) => {
                inner.answered(i);
                return Ok(resp);
            }
            Outcome::Unavailable(resp, why) => {
                inner.failed(i, &why);
                if !read {
                    // A write the replica gave up on may still commit in
                    // the store: the caller decides whether to retry.
                    return Ok(resp);
                }
                last_unavailable = Some(resp);
            }
            Outcome::NotSent(e, why) => {
                inner.failed(i, &why);
                if n == 1 {
                    return Err(e);
                }
            }
            Outcome::Broken(e, why) => {
                inner.failed(i, &why);
                if !read || n == 1 {
                    return Err(e);
                }
            }
        }
    }
    // Every replica was tried once for this call.
    match last_unavailable {
        Some(resp) => Ok(resp),
        None => Err(Box::new(inner.all_failed(Code::Unavailable))),
    }
}

impl Service<http::Request<Body>> for Failover {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is awaited per replica inside `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(call(self.inner.clone(), req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use crate::client::connect;
    use crate::v1::{CreateVolumeRequest, GetVolumeRequest, Volume};

    #[test]
    fn spread_order_is_a_stable_permutation() {
        for n in 0..6 {
            let mut o = spread_order("ws-17", n);
            assert_eq!(o, spread_order("ws-17", n), "same key, same order");
            o.sort_unstable();
            assert_eq!(o, (0..n).collect::<Vec<_>>());
        }
        // Pinned: the order must not change between builds, or a fleet
        // would reshuffle over the replicas on upgrade.
        let pinned: Vec<Vec<usize>> = ["ws-1", "ws-2", "storage-1", "storage-2"]
            .iter()
            .map(|k| spread_order(k, 3))
            .collect();
        assert_eq!(
            pinned,
            vec![vec![1, 2, 0], vec![0, 1, 2], vec![0, 1, 2], vec![1, 2, 0]]
        );
        assert_eq!(spread_order("", 1), vec![0]);
    }

    #[test]
    fn spread_order_spreads_a_fleet_and_its_failover() {
        let n = 3;
        let mut first = [0usize; 3];
        let mut after_r0_dies = [0usize; 3];
        for i in 0..999 {
            let o = spread_order(&format!("w{i}"), n);
            first[o[0]] += 1;
            let survivor = o.iter().copied().find(|&r| r != 0).unwrap_or(0);
            after_r0_dies[survivor] += 1;
        }
        for (r, c) in first.iter().enumerate() {
            assert!(
                (250..=420).contains(c),
                "replica {r} first for {c} of 999: {first:?}"
            );
        }
        assert_eq!(after_r0_dies[0], 0);
        for c in &after_r0_dies[1..] {
            assert!((400..=600).contains(c), "{after_r0_dies:?}");
        }
    }

    #[test]
    fn an_error_answer_is_read_with_its_message_decoded() {
        let resp = Status::new(Code::Unavailable, "store unavailable: etcd has no quorum")
            .into_http::<Body>();
        assert_eq!(
            header_status(&resp),
            Some((
                Code::Unavailable,
                "store unavailable: etcd has no quorum".to_owned()
            ))
        );
        let ok = http::Response::new(Body::empty());
        assert_eq!(header_status(&ok), None);
    }

    #[test]
    fn read_methods() {
        assert!(is_read_method("/ferrofab.v1.AdminService/GetVolume"));
        assert!(is_read_method("/ferrofab.v1.AdminService/ListPools"));
        assert!(is_read_method("/ferrofab.v1.AdminService/WatchVolumes"));
        assert!(!is_read_method("/ferrofab.v1.AdminService/CreateVolume"));
        assert!(!is_read_method("/ferrofab.v1.AdminService/DeleteVolume"));
        assert!(!is_read_method("/ferrofab.v1.AdminService/Apply"));
    }

    /// A stand-in replica: answers every admin call with one status whose
    /// message names the replica, so a test sees who answered.
    #[derive(Clone)]
    struct Fake {
        code: Code,
        name: &'static str,
    }

    impl tonic::server::NamedService for Fake {
        const NAME: &'static str = "ferrofab.v1.AdminService";
    }

    impl Service<http::Request<Body>> for Fake {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _req: http::Request<Body>) -> Self::Future {
            std::future::ready(Ok(Status::new(self.code, self.name).into_http()))
        }
    }

    /// Serves `fake` on a loopback port until the sender is dropped or fired.
    async fn serve(fake: Fake) -> (String, oneshot::Sender<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(fake)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(l),
                    async {
                        let _ = rx.await;
                    },
                ),
        );
        (url, tx)
    }

    /// A fake replica answering `code` with message `name`.
    async fn replica(code: Code, name: &'static str) -> (String, oneshot::Sender<()>) {
        serve(Fake { code, name }).await
    }

    /// A URL nothing listens on, and the socket that keeps it so: bound
    /// but not listening, so connections are refused and no concurrent
    /// test's server can be given the port.
    fn closed_port() -> (String, tokio::net::TcpSocket) {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        (format!("http://{}", sock.local_addr().unwrap()), sock)
    }

    fn answered_by(r: Result<tonic::Response<Volume>, Status>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(s) => format!("{:?} {}", s.code(), s.message()),
        }
    }

    fn get() -> GetVolumeRequest {
        GetVolumeRequest { name: "v".into() }
    }

    fn create() -> CreateVolumeRequest {
        CreateVolumeRequest::default()
    }

    #[tokio::test]
    async fn a_replica_that_goes_away_is_replaced_by_the_next_within_the_call() {
        let (a, stop_a) = replica(Code::NotFound, "a").await;
        let (b, _keep_b) = replica(Code::NotFound, "b").await;
        let mut admin = connect(&[a, b.clone()], None, Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(answered_by(admin.get_volume(get()).await), "NotFound a");
        drop(stop_a);
        // The server closes its connections once it has stopped.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A write is re-sent too: the connection to `a` could not be made,
        // so `a` never saw it.
        assert_eq!(
            answered_by(admin.create_volume(create()).await),
            "NotFound b"
        );
        assert_eq!(answered_by(admin.get_volume(get()).await), "NotFound b");
    }

    #[tokio::test]
    async fn the_first_reachable_endpoint_is_used_and_the_dead_one_is_kept() {
        let (dead, _dead) = closed_port();
        let (b, _keep_b) = replica(Code::NotFound, "b").await;
        let mut admin = connect(&[dead, b], None, None).await.unwrap();
        assert_eq!(answered_by(admin.get_volume(get()).await), "NotFound b");
    }

    #[tokio::test]
    async fn unavailable_moves_on_reads_retry_and_writes_return_it() {
        let (a, _ka) = replica(Code::Unavailable, "a: store has no quorum").await;
        let (b, _kb) = replica(Code::NotFound, "b").await;
        let mut admin = connect(&[a.clone(), b.clone()], None, None).await.unwrap();
        // A write: its outcome on `a` is the server's word, passed back
        // unchanged (the caller decides), but the next call goes to `b`.
        assert_eq!(
            answered_by(admin.create_volume(create()).await),
            "Unavailable a: store has no quorum"
        );
        assert_eq!(
            answered_by(admin.create_volume(create()).await),
            "NotFound b"
        );
        // A read meeting UNAVAILABLE is re-sent at once.
        let mut admin = connect(&[a, b], None, None).await.unwrap();
        assert_eq!(answered_by(admin.get_volume(get()).await), "NotFound b");
    }

    #[tokio::test]
    async fn when_every_replica_fails_the_error_names_each() {
        let (a, stop_a) = replica(Code::NotFound, "a").await;
        let (b, _b) = closed_port();
        let (c, _c) = closed_port();
        let mut admin = connect(&[a.clone(), b.clone(), c.clone()], None, None)
            .await
            .unwrap();
        let _ = stop_a.send(());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let err = admin.get_volume(get()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        let m = err.message();
        assert!(m.starts_with("every controller endpoint failed"), "{m}");
        for url in [&a, &b, &c] {
            assert!(m.contains(url.as_str()), "{url} missing in {m}");
        }
        assert!(m.contains("onnect"), "the reason is given: {m}");
        // Nothing reachable at the start is a connect error naming all.
        let e = connect(&[b.clone(), c.clone()], None, None)
            .await
            .err()
            .unwrap();
        let text = e.to_string();
        assert!(text.contains(&b) && text.contains(&c), "{text}");
    }

    #[tokio::test]
    async fn concurrent_failures_advance_once() {
        let (dead, _dead) = closed_port();
        let (b, _kb) = replica(Code::NotFound, "b").await;
        let (c, _kc) = replica(Code::NotFound, "c").await;
        let chan = |u: &str| {
            tonic::transport::Endpoint::from_shared(u.to_owned())
                .unwrap()
                .connect_lazy()
        };
        let f = Failover::new(
            vec![
                Replica {
                    url: dead.clone(),
                    channel: chan(&dead),
                },
                Replica {
                    url: b.clone(),
                    channel: chan(&b),
                },
                Replica {
                    url: c.clone(),
                    channel: chan(&c),
                },
            ],
            0,
        );
        let admin = crate::v1::admin_service_client::AdminServiceClient::new(f.clone());
        let calls = (0..8).map(|_| {
            let mut a = admin.clone();
            async move { answered_by(a.get_volume(get()).await) }
        });
        let answers = futures_join(calls).await;
        assert!(answers.iter().all(|x| x == "NotFound b"), "{answers:?}");
        assert_eq!(f.current_url(), b);
        assert_eq!(f.failovers(), 1);
    }

    async fn futures_join<F: Future<Output = String> + Send + 'static>(
        fs: impl Iterator<Item = F>,
    ) -> Vec<String> {
        let handles: Vec<_> = fs.map(tokio::spawn).collect();
        let mut out = vec![];
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
