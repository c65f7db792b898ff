//! Helpers shared by the resources: durations, waiting for convergence,
//! and the small plan rules (unknown computed values, replacement paths).

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::{Code, Status};

use crate::diag::Diag;
use crate::value::Value;

/// Create/update/delete timeout of resources without a `timeouts` block
/// in their schema (tenants): what their retries are bounded by.
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(300);

/// How often apply re-reads an object it waits for.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// First wait before retrying a call that met a transient failure; each
/// retry doubles it up to [`RETRY_CAP`]. Named constants, not settings: the
/// resource's own `timeouts` block is the knob users turn (it bounds the
/// whole retry), and these only pace the attempts within it.
pub const RETRY_FIRST: Duration = Duration::from_millis(200);
/// Longest wait between two attempts (before jitter): a restarted
/// controller is noticed within this.
pub const RETRY_CAP: Duration = Duration::from_secs(3);

/// Whether a failed call may be tried again: the controller was not
/// reachable (restart, failover, connect error) or did not answer in time.
/// Every retried call is either idempotent (reads, updates to a full spec,
/// deletes) or made safe by its caller (a create that then meets "already
/// exists" compares the stored spec with its own).
pub fn is_transient(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted => true,
        // A controller shutting down cancels the calls in flight; our own
        // cancellation (Terraform stopping) drops the future instead.
        Code::Cancelled => true,
        // A connection reset mid-call surfaces as Unknown from hyper.
        Code::Unknown => {
            let m = s.message().to_ascii_lowercase();
            [
                "transport",
                "connect",
                "connection",
                "broken pipe",
                "h2 protocol",
            ]
            .iter()
            .any(|w| m.contains(w))
        }
        _ => false,
    }
}

/// The wait before attempt `n + 1` (n ≥ 1): `first × 2^(n-1)` capped at
/// `cap`, then jittered into [50 %, 100 %] so that ten resources retrying
/// together do not hit a restarted controller in one burst.
pub fn backoff(n: u32, first: Duration, cap: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let exp = first
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(cap);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(n);
    let frac = 0.5 + (h.finish() % 1000) as f64 / 2000.0;
    exp.mul_f64(frac)
}

/// The outcome of [`retry`]: the call's result, and whether an earlier
/// attempt failed transiently (its effect may have happened even though
/// its reply was lost, which the caller must take into account).
pub struct Retried<T> {
    pub result: Result<T, Status>,
    pub lost_reply: bool,
}

/// Calls `call` until it succeeds, fails for good, or `limit` has passed,
/// waiting [`backoff`] between attempts. The last transient error is
/// returned when the time is up.
pub async fn retry<T, F, Fut>(what: &str, limit: Duration, call: F) -> Retried<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    retry_paced(what, limit, RETRY_FIRST, RETRY_CAP, call).await
}

/// [`retry`] with explicit pacing (tests use milliseconds).
pub async fn retry_paced<T, F, Fut>(
    what: &str,
    limit: Duration,
    first: Duration,
    cap: Duration,
    mut call: F,
) -> Retried<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let start = Instant::now();
    let mut lost_reply = false;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = call().await;
        match &result {
            Err(s) if is_transient(s) => {
                let wait = backoff(attempt, first, cap);
                if start.elapsed() + wait >= limit {
                    return Retried { result, lost_reply };
                }
                tracing::warn!(call = what, attempt, error = %s.message(), wait_ms = wait.as_millis() as u64, "transient failure; retrying");
                lost_reply = true;
                tokio::time::sleep(wait).await;
            }
            _ => return Retried { result, lost_reply },
        }
    }
}

/// How long a read (refresh, or a plan-time check) keeps retrying while
/// the controller is unreachable: reads have no `timeouts` entry, and
/// during apply Terraform plans each resource again just before applying
/// it, so a plan-time read meets a controller restart as often as a create.
pub const READ_RETRY_LIMIT: Duration = Duration::from_secs(60);

/// A read with [`retry`] for up to [`READ_RETRY_LIMIT`].
pub async fn reading<T, F, Fut>(what: &str, call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    retry(what, READ_RETRY_LIMIT, call).await.result
}

/// What a create with retries came to.
pub enum Created<T> {
    /// The create call answered.
    New(T),
    /// An earlier attempt's reply was lost and the object now exists with
    /// the configured spec: it is ours, the caller reads it back.
    Ours,
}

/// Creates with [`retry`]. ALREADY_EXISTS after a lost reply is success
/// when `same_spec` (a read-back comparison) says the stored object is the
/// one configured; any other ALREADY_EXISTS becomes the diagnostic that
/// gives the `terraform import` command.
pub async fn create_with_retry<T, C, CF, S, SF>(
    type_name: &str,
    name: &str,
    limit: Duration,
    create: C,
    same_spec: S,
) -> Result<Created<T>, Diag>
where
    C: FnMut() -> CF,
    CF: Future<Output = Result<T, Status>>,
    S: FnOnce() -> SF,
    SF: Future<Output = Option<bool>>,
{
    let kind = type_name.trim_start_matches("ferrofab_");
    let what = format!("creating {kind} {name:?}");
    let r = retry(&what, limit, create).await;
    match r.result {
        Ok(t) => Ok(Created::New(t)),
        Err(s) if s.code() == Code::AlreadyExists => match (r.lost_reply, same_spec().await) {
            (true, Some(true)) => {
                tracing::info!(object = %name, kind, "create met already exists after a lost reply with the same spec: taken as created");
                Ok(Created::Ours)
            }
            (_, Some(false)) => Err(Diag::already_exists(
                type_name,
                name,
                &s,
                "It is not in this Terraform state, and its spec differs from this configuration.",
            )),
            _ => Err(Diag::already_exists(
                type_name,
                name,
                &s,
                "It is not in this Terraform state.",
            )),
        },
        Err(s) => Err(Diag::api(&what, &s)),
    }
}

/// Parses `90s`, `10m`, `1h`, `1h30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (use e.g. 30s, 10m, 1h30m)");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The `timeouts.<op>` duration or `default`.
pub fn timeout(state: &Value, op: &str, default: Duration) -> Duration {
    state
        .get("timeouts")
        .get(op)
        .as_str()
        .and_then(|s| parse_duration(s).ok())
        .unwrap_or(default)
}

/// Checks a `timeouts` block at validate time.
pub fn validate_timeouts(cfg: &Value, diags: &mut crate::diag::Diags) {
    if let Value::Object(m) = cfg.get("timeouts") {
        for (op, v) in m {
            if let Some(s) = v.as_str() {
                if let Err(e) = parse_duration(s) {
                    diags.attr_error(&["timeouts", op], "invalid timeout", e);
                }
            }
        }
    }
}

/// The outcome of one look at an object being waited for.
pub enum Poll<T> {
    Done(T),
    /// Not yet; the text says why (the status condition's reason).
    Pending(String),
    /// Will not converge; the text says why.
    Failed(String),
}

/// Calls `look` until it is done, failed or `limit` has passed. The time
/// spent is logged so the benchmark can report the share spent waiting.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut look: F) -> Result<T, Diag>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, Status>>,
{
    let start = Instant::now();
    let mut last: String;
    loop {
        match look().await {
            Ok(Poll::Done(t)) => {
                let waited_ms = start.elapsed().as_millis() as u64;
                tracing::info!(target: "ferrofab_wait", object = what, waited_ms, "converged");
                record_wait(waited_ms);
                return Ok(t);
            }
            Ok(Poll::Pending(why)) => last = why,
            Ok(Poll::Failed(why)) => {
                return Err(Diag::new(format!("{what} failed"), why));
            }
            // Transient controller trouble does not end the wait.
            Err(s) if is_transient(&s) => {
                last = format!("controller unavailable: {}", s.message());
            }
            Err(s) => return Err(Diag::api(what, &s)),
        }
        if start.elapsed() >= limit {
            return Err(Diag::new(
                format!("timed out waiting for {what}"),
                format!("after {limit:?}, last status: {last}"),
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Deletes an object and waits until reading it says NotFound (its
/// finalizers have run). `delete` NotFound counts as done; `exists` returns
/// why the object is still there.
pub async fn delete_and_wait<T, D, DF, G, GF>(
    what: &str,
    limit: Duration,
    delete: D,
    mut exists: G,
) -> Result<(), Diag>
where
    D: FnMut() -> DF,
    DF: Future<Output = Result<T, Status>>,
    G: FnMut() -> GF,
    GF: Future<Output = Result<String, Status>>,
{
    // NotFound is success whether the object was never there or an
    // earlier attempt deleted it and its reply was lost.
    match retry(&format!("deleting {what}"), limit, delete)
        .await
        .result
    {
        Ok(_) => {}
        Err(s) if is_not_found(&s) => return Ok(()),
        Err(s) => return Err(Diag::api(&format!("deleting {what}"), &s)),
    }
    wait_until(&format!("{what} to be deleted"), limit, || {
        let look = exists();
        async move {
            match look.await {
                Ok(why) => Ok(Poll::Pending(why)),
                Err(s) if is_not_found(&s) => Ok(Poll::Done(())),
                Err(s) => Err(s),
            }
        }
    })
    .await
}

/// Appends the wait to `FERROFAB_TF_WAIT_LOG` when set: the benchmark sums
/// these to report how much of an apply is spent waiting for convergence.
fn record_wait(ms: u64) {
    let Ok(path) = std::env::var("FERROFAB_TF_WAIT_LOG") else {
        return;
    };
    use std::io::Write;
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: several provider processes append at once,
        // and write_fmt would split the line into several writes.
        let _ = f.write_all(format!("{now} {ms}\n").as_bytes());
    }
}

/// The reason of the first condition that is not True, for wait messages.
pub fn pending_reason(conds: &[ferrofab_proto::v1::Condition]) -> String {
    conds
        .iter()
        .find(|c| c.status != ferrofab_proto::v1::ConditionStatus::True as i32)
        .map(|c| format!("{}: {} ({})", c.r#type, c.reason, c.message))
        .unwrap_or_else(|| "no condition reported yet".into())
}

/// Attributes whose planned value differs from the prior one.
pub fn changed<'a>(prior: &Value, planned: &Value, attrs: &[&'a str]) -> Vec<&'a str> {
    attrs
        .iter()
        .copied()
        .filter(|a| prior.get(a) != planned.get(a))
        .collect()
}

/// Sets computed attributes to unknown (create or replace), except those
/// the caller then fills in because they are known at plan time.
pub fn unknown_computed(planned: &mut Value, computed: &[&str]) {
    for a in computed {
        planned.set(a, Value::Unknown);
    }
}

/// Labels as state: the API has no difference between none and empty, so
/// follow what the configuration (prior state) said.
pub fn labels_state(api: &std::collections::HashMap<String, String>, prior: &Value) -> Value {
    if api.is_empty() && matches!(prior.get("labels"), Value::Map(m) if m.is_empty()) {
        return Value::Map(Default::default());
    }
    Value::labels(api)
}

/// A non-empty string or null.
pub fn opt_str(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::str(s)
    }
}

/// Whether a gRPC error means the object does not exist.
pub fn is_not_found(s: &Status) -> bool {
    s.code() == Code::NotFound
}

/// Checks a name attribute the way the controller will (DNS-label-like).
pub fn validate_name_attr(cfg: &Value, attr: &str, diags: &mut crate::diag::Diags) {
    if let Some(n) = cfg.get(attr).as_str() {
        if let Err(e) = ferrofab_pki::validate_name(n) {
            diags.attr_error(&[attr], format!("invalid {attr}"), e.to_string());
        }
    }
}

/// Checks a size attribute ("100GiB"); returns its bytes when known and valid.
pub fn validate_size_attr(cfg: &Value, attr: &str, diags: &mut crate::diag::Diags) -> Option<u64> {
    let s = cfg.get(attr).as_str()?;
    match ferrofab_types::size::parse_size(s) {
        Ok(0) => {
            diags.attr_error(
                &[attr],
                format!("invalid {attr}"),
                "must be greater than zero",
            );
            None
        }
        Ok(n) => Some(n),
        Err(e) => {
            diags.attr_error(
                &[attr],
                format!("invalid {attr}"),
                // The parser's message quotes the input and lists the units.
                e.to_string(),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU32, Ordering};

    const MS: Duration = Duration::from_millis(1);

    /// A fake transport: the first `fail` calls fail with `status`.
    async fn flaky(calls: &AtomicU32, fail: u32, status: Status) -> Result<u32, Status> {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= fail {
            Err(status)
        } else {
            Ok(n)
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_the_call_succeeds() {
        let calls = AtomicU32::new(0);
        let r = retry_paced("t", Duration::from_secs(5), MS, 4 * MS, || {
            flaky(&calls, 3, Status::unavailable("tcp connect error"))
        })
        .await;
        assert_eq!(r.result.ok(), Some(4));
        assert!(r.lost_reply, "the caller learns that a reply may be lost");
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let r = retry_paced("t", Duration::from_secs(5), MS, 4 * MS, || {
            flaky(&calls, 3, Status::resource_exhausted("quota"))
        })
        .await;
        assert_eq!(
            r.result.err().map(|s| s.code()),
            Some(Code::ResourceExhausted)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!r.lost_reply);
    }

    #[tokio::test]
    async fn retries_end_at_the_timeout_with_the_last_error() {
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let r = retry_paced("t", 60 * MS, MS, 8 * MS, || {
            flaky(&calls, u32::MAX, Status::unavailable("down"))
        })
        .await;
        assert_eq!(r.result.err().map(|s| s.code()), Some(Code::Unavailable));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(calls.load(Ordering::SeqCst) > 3, "several attempts");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let first = Duration::from_millis(200);
        let cap = Duration::from_secs(3);
        for n in 1..40 {
            let full = first.saturating_mul(1 << (n - 1).min(16)).min(cap);
            let b = backoff(n, first, cap);
            assert!(b <= full && b >= full / 2, "attempt {n}: {b:?} vs {full:?}");
        }
        assert!(backoff(30, first, cap) <= cap);
        assert!(is_transient(&Status::unknown("transport error")));
        assert!(is_transient(&Status::cancelled("operation was canceled")));
        assert!(!is_transient(&Status::already_exists("x")));
    }

    #[tokio::test]
    async fn delete_after_a_lost_reply_meeting_not_found_is_done() {
        let calls = AtomicU32::new(0);
        let r = delete_and_wait(
            "volume \"v\"",
            Duration::from_secs(5),
            || async {
                // First attempt: the delete happened, the reply was lost.
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    Err::<(), _>(Status::unavailable("connection reset"))
                } else {
                    Err(Status::not_found("volume \"v\" not found"))
                }
            },
            || async { Ok("still there".to_string()) },
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_create_whose_reply_was_lost_and_that_meets_its_own_object_succeeds() {
        let calls = AtomicU32::new(0);
        let create = || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err::<(), _>(Status::unavailable("connection reset"))
            } else {
                Err(Status::already_exists("volume \"v\" already exists"))
            }
        };
        let r = create_with_retry(
            "ferrofab_volume",
            "v",
            Duration::from_secs(5),
            create,
            || async { Some(true) },
        )
        .await;
        assert!(matches!(r, Ok(Created::Ours)));
        // The same answer without a lost reply is somebody else's object.
        let r = create_with_retry(
            "ferrofab_volume",
            "v",
            Duration::from_secs(5),
            || async { Err::<(), _>(Status::already_exists("exists")) },
            || async { Some(true) },
        )
        .await;
        let d = r.err().expect("orphan");
        assert!(
            d.detail
                .contains("terraform import ferrofab_volume.<name> v"),
            "{}",
            d.detail
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn sizes_are_checked_with_the_attribute_path() {
        let mut cfg = Value::object();
        cfg.set("size", Value::str("12 parsecs"));
        let mut d = crate::diag::Diags::default();
        assert_eq!(validate_size_attr(&cfg, "size", &mut d), None);
        assert!(d.has_errors());
        cfg.set("size", Value::str("1GiB"));
        let mut d = crate::diag::Diags::default();
        assert_eq!(validate_size_attr(&cfg, "size", &mut d), Some(1 << 30));
        assert!(!d.has_errors());
    }
}
