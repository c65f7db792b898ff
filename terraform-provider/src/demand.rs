//! The whole plan's demand on quotas and pinned pools. Terraform plans each
//! resource in its own PlanResourceChange call, so a per-volume dry run
//! passes twenty volumes that each fit but together exceed the tenant's
//! quota, and the apply then fails half-way. All those calls reach one
//! provider process, though: each planned create or grow is recorded here
//! under the volume's name (a resource planned twice replaces its record
//! instead of counting twice) and checked together with every other one
//! recorded so far.
//!
//! Usage is read from the controller before the list of existing volumes,
//! and a recorded volume that the list already shows (at its planned size)
//! adds nothing: a volume created between the two reads is then counted
//! zero times rather than twice, so the check can only err on the lenient
//! side, and the controller still enforces the quota at apply.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use ferrofab_types::size::format_size;

/// One planned create or grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub tenant: String,
    /// The explicit pool; None when the controller chooses by selector.
    pub pool: Option<String>,
    /// The size the plan gives the volume.
    pub bytes: u64,
}

/// Planned volumes by name, for the life of the provider process.
#[derive(Debug, Default)]
pub struct Demand {
    planned: Mutex<BTreeMap<String, Planned>>,
}

impl Demand {
    /// Records (or re-records) `name` and returns every record.
    pub fn record(&self, name: &str, p: Planned) -> BTreeMap<String, Planned> {
        let mut g = self.planned.lock().unwrap_or_else(PoisonError::into_inner);
        g.insert(name.to_owned(), p);
        g.clone()
    }

    /// Drops `name`: its plan no longer creates or grows it.
    pub fn forget(&self, name: &str) {
        let mut g = self.planned.lock().unwrap_or_else(PoisonError::into_inner);
        g.remove(name);
    }
}

/// The recorded volumes matching `keep` that the controller does not show
/// yet at their planned size, with what each adds.
pub fn pending(
    planned: &BTreeMap<String, Planned>,
    existing: &HashMap<String, u64>,
    keep: impl Fn(&Planned) -> bool,
) -> Vec<(String, u64, u32)> {
    planned
        .iter()
        .filter(|(_, p)| keep(p))
        .filter_map(|(name, p)| match existing.get(name) {
            None => Some((name.clone(), p.bytes, 1)),
            Some(&now) if p.bytes > now => Some((name.clone(), p.bytes - now, 0)),
            Some(_) => None,
        })
        .collect()
}

/// A limit and its current use, as the controller reports them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limit {
    /// Bytes allowed in all; None: unlimited.
    pub bytes: Option<u64>,
    /// Volumes allowed in all; None: unlimited.
    pub volumes: Option<u32>,
    pub used_bytes: u64,
    pub used_volumes: u32,
}

/// Why the pending volumes do not fit `limit` together (`what` names it,
/// e.g. `tenant "lab" quota`), or None if they do.
pub fn overrun(what: &str, limit: &Limit, pending: &[(String, u64, u32)]) -> Option<String> {
    let bytes: u64 = pending.iter().map(|p| p.1).fold(0, u64::saturating_add);
    let vols: u32 = pending.iter().map(|p| p.2).fold(0, u32::saturating_add);
    let list = || {
        pending
            .iter()
            .map(|(n, b, v)| {
                let verb = if *v == 1 { "new" } else { "grows by" };
                format!("{n} ({verb} {})", format_size(*b))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(q) = limit.bytes {
        if limit.used_bytes.saturating_add(bytes) > q {
            return Some(format!(
                "the volumes this plan creates or grows do not fit {what} together: {} used + {} planned > {} ({} too much). Planned: {}.",
                format_size(limit.used_bytes),
                format_size(bytes),
                format_size(q),
                format_size(limit.used_bytes.saturating_add(bytes) - q),
                list()
            ));
        }
    }
    if let Some(q) = limit.volumes {
        if limit.used_volumes.saturating_add(vols) > q {
            return Some(format!(
                "the volumes this plan creates do not fit {what} together: {} volumes exist + {} planned > {} allowed. Planned: {}.",
                limit.used_volumes,
                vols,
                q,
                list()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn p(tenant: &str, gib: u64) -> Planned {
        Planned {
            tenant: tenant.into(),
            pool: None,
            bytes: gib * GIB,
        }
    }

    #[test]
    fn the_volume_that_overruns_the_quota_names_the_others() {
        let d = Demand::default();
        let limit = Limit {
            bytes: Some(100 * GIB),
            volumes: Some(10),
            used_bytes: 40 * GIB,
            used_volumes: 4,
        };
        let none = HashMap::new();
        let mut last = None;
        for i in 1..=4 {
            let all = d.record(&format!("v-{i}"), p("lab", 20));
            let pend = pending(&all, &none, |x| x.tenant == "lab");
            last = overrun("tenant \"lab\" capacity quota", &limit, &pend);
            if i <= 3 {
                assert_eq!(last, None, "40 + {} GiB fits", 20 * i);
            }
        }
        let msg = last.expect("40 + 80 > 100");
        for n in [
            "v-1",
            "v-2",
            "v-3",
            "v-4",
            "40GiB used",
            "80GiB planned",
            "100GiB",
        ] {
            assert!(msg.contains(n), "{n} in {msg}");
        }
    }

    #[test]
    fn planning_a_resource_again_does_not_count_it_twice() {
        let d = Demand::default();
        let limit = Limit {
            bytes: Some(30 * GIB),
            ..Default::default()
        };
        for _ in 0..5 {
            let all = d.record("v-1", p("lab", 20));
            let pend = pending(&all, &HashMap::new(), |_| true);
            assert_eq!(overrun("q", &limit, &pend), None);
        }
        d.forget("v-1");
        let all = d.record("v-2", p("lab", 30));
        assert_eq!(
            overrun("q", &limit, &pending(&all, &HashMap::new(), |_| true)),
            None
        );
    }

    /// During apply every resource is planned again while others are
    /// being created: a volume the controller already shows is in `used`
    /// and must not count again.
    #[test]
    fn existing_volumes_count_once_and_grows_count_their_growth() {
        let d = Demand::default();
        d.record("a", p("lab", 10));
        let all = d.record("b", p("lab", 15));
        let existing: HashMap<String, u64> =
            [("a".to_string(), 10 * GIB), ("b".to_string(), 10 * GIB)].into();
        let pend = pending(&all, &existing, |_| true);
        assert_eq!(pend, vec![("b".to_string(), 5 * GIB, 0)]);
        let limit = Limit {
            bytes: Some(25 * GIB),
            volumes: Some(2),
            used_bytes: 20 * GIB,
            used_volumes: 2,
        };
        assert_eq!(
            overrun("q", &limit, &pend),
            None,
            "20 + 5 of 25 fits exactly"
        );
        let other: Vec<_> = pending(&all, &HashMap::new(), |x| x.tenant == "other");
        assert!(other.is_empty());
    }

    #[test]
    fn volume_count_quota() {
        let d = Demand::default();
        d.record("a", p("lab", 1));
        let all = d.record("b", p("lab", 1));
        let limit = Limit {
            volumes: Some(3),
            used_volumes: 2,
            ..Default::default()
        };
        let msg = overrun(
            "tenant \"lab\" volume quota",
            &limit,
            &pending(&all, &HashMap::new(), |_| true),
        )
        .expect("2 + 2 > 3");
        assert!(msg.contains("2 volumes exist + 2 planned > 3"), "{msg}");
    }
}
