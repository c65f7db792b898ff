//! Helpers shared by the resources: durations, waiting for convergence,
//! and the small plan rules (unknown computed values, replacement paths).

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::{Code, Status};

use crate::diag::Diag;
use crate::value::Value;

/// How often apply re-reads an object it waits for.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

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
            Err(s) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded) => {
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
    D: FnOnce() -> DF,
    DF: Future<Output = Result<T, Status>>,
    G: FnMut() -> GF,
    GF: Future<Output = Result<String, Status>>,
{
    match delete().await {
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
    match ferrofab_nvmeof::units::parse_size(s) {
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
