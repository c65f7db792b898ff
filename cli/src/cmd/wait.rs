//! `ferrofab wait`: poll objects until they are Ready, with a one-line
//! progress display on a terminal and plain log lines otherwise.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use ferrofab_proto::v1;
use tonic::Code;

use super::Ctx;
use crate::args::WaitArgs;
use crate::client::{status_error, Admin};
use crate::layout;
use crate::resource::{readiness, what, Readiness, Resource};

/// How often objects are re-read. Polling (rather than Watch) keeps wait
/// correct across controller restarts and fail-overs without resume logic;
/// a second is well below the time anything in ferrofab takes to converge.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The kinds `wait` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Node,
    Pool,
    Volume,
    Attachment,
    Tenant,
}

/// One object to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    kind: Kind,
    name: String,
}

impl Target {
    /// From a kind word (singular, plural or short alias) and a name.
    pub fn new(kind: &str, name: String) -> anyhow::Result<Self> {
        let kind = match kind {
            "node" | "nodes" => Kind::Node,
            "pool" | "pools" => Kind::Pool,
            "volume" | "volumes" | "vol" => Kind::Volume,
            "attachment" | "attachments" | "att" => Kind::Attachment,
            "tenant" | "tenants" => Kind::Tenant,
            other => bail!("unknown kind {other:?} (use node, pool, volume, attachment or tenant)"),
        };
        ferrofab_pki::validate_name(&name)?;
        Ok(Self { kind, name })
    }

    /// Parses `KIND/NAME`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let (kind, name) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("{s:?}: expected KIND/NAME, e.g. volume/scratch-1"))?;
        Self::new(kind, name.to_owned()).with_context(|| s.to_owned())
    }

    fn label(&self) -> String {
        let kind = match self.kind {
            Kind::Node => "node",
            Kind::Pool => "pool",
            Kind::Volume => "volume",
            Kind::Attachment => "attachment",
            Kind::Tenant => "tenant",
        };
        format!("{kind}/{}", self.name)
    }

    async fn check(&self, admin: &mut Admin) -> anyhow::Result<Readiness> {
        match self.kind {
            Kind::Node => check::<v1::Node>(admin, &self.name).await,
            Kind::Pool => check::<v1::Pool>(admin, &self.name).await,
            Kind::Volume => match check::<v1::Volume>(admin, &self.name).await? {
                Readiness::Ready => exposed_at_size(admin, &self.name).await,
                other => Ok(other),
            },
            Kind::Attachment => check::<v1::Attachment>(admin, &self.name).await,
            Kind::Tenant => check::<v1::Tenant>(admin, &self.name).await,
        }
    }
}

/// Not-found counts as pending: `wait` is often started right after a
/// create that the controller is still processing.
async fn check<R: Resource>(admin: &mut Admin, name: &str) -> anyhow::Result<Readiness> {
    match R::get(admin, name).await {
        Ok(obj) => Ok(readiness(&obj)),
        Err(s) if s.code() == Code::NotFound => {
            Ok(Readiness::Pending("does not exist (yet)".into()))
        }
        Err(s) => Err(status_error(&what::<R>(name), s)),
    }
}

/// A Ready volume is also waited for on its workstations: the storage node
/// serves a grow before the workstations learn of it (an asynchronous
/// event, then their next report), and whoever waits after a resize wants
/// the researcher's file at the new size. Attachments that are not
/// connected, and workstations that report no size (0: the kernel driver),
/// are not waited for.
async fn exposed_at_size(admin: &mut Admin, volume: &str) -> anyhow::Result<Readiness> {
    let size = match v1::Volume::get(admin, volume).await {
        Ok(v) => v.status.map_or(0, |s| s.size_bytes),
        Err(s) => return Err(status_error(&what::<v1::Volume>(volume), s)),
    };
    let attachments = v1::Attachment::list(admin, "")
        .await
        .map_err(|s| status_error("attachments", s))?;
    Ok(exposure_readiness(volume, size, &attachments))
}

/// Pending while an attached workstation reports exposing `volume` below
/// `size` bytes.
fn exposure_readiness(volume: &str, size: u64, attachments: &[v1::Attachment]) -> Readiness {
    let lagging: Vec<String> = attachments
        .iter()
        .filter(|a| a.spec.as_ref().is_some_and(|s| s.volume == volume))
        .filter_map(|a| {
            let st = a.status.as_ref()?;
            let attached = st.phase == v1::AttachmentPhase::Attached as i32;
            (attached && st.size_bytes != 0 && st.size_bytes < size).then(|| {
                let node = a.spec.as_ref().map_or("", |s| s.node.as_str());
                format!(
                    "{node} still exposes {}",
                    crate::output::human_size(st.size_bytes)
                )
            })
        })
        .collect();
    if lagging.is_empty() {
        Readiness::Ready
    } else {
        Readiness::Pending(lagging.join(", "))
    }
}

pub async fn run(ctx: &Ctx, a: WaitArgs) -> anyhow::Result<()> {
    let mut targets = a
        .objects
        .iter()
        .map(|s| Target::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(file) = &a.file {
        let what = file.display().to_string();
        let text = std::fs::read_to_string(file).with_context(|| what.clone())?;
        let l = layout::parse(&text).with_context(|| what.clone())?;
        for (kind, name) in layout::object_refs(&l) {
            targets.push(Target::new(kind, name)?);
        }
    }
    let mut admin = ctx.admin().await?;
    wait_for(&mut admin, &targets, a.timeout).await
}

/// Waits until every target is Ready, one fails, or `timeout` passes.
pub async fn wait_for(
    admin: &mut Admin,
    targets: &[Target],
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut progress = Progress::new(targets.len());
    let mut pending: Vec<(Target, String)> = targets
        .iter()
        .map(|t| (t.clone(), "not checked yet".to_owned()))
        .collect();
    loop {
        let mut still = Vec::new();
        for (t, _) in pending {
            match t.check(admin).await? {
                Readiness::Ready => progress.ready(&t.label()),
                Readiness::Pending(why) => still.push((t, why)),
                Readiness::Failed(why) => {
                    progress.finish();
                    bail!("{}: failed: {why}", t.label());
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            progress.finish();
            return Ok(());
        }
        if start.elapsed() >= timeout {
            progress.finish();
            bail!(
                "timed out after {} waiting for {}",
                ferrofab_pki::format_duration(timeout),
                describe_pending(&pending)
            );
        }
        progress.update(&pending);
        tokio::time::sleep(POLL_INTERVAL.min(timeout.saturating_sub(start.elapsed()))).await;
    }
}

/// `volume/a (phase placed), pool/b (...)`, capped so the error stays one
/// readable line.
fn describe_pending(pending: &[(Target, String)]) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = pending
        .iter()
        .take(SHOWN)
        .map(|(t, why)| format!("{} ({why})", t.label()))
        .collect();
    if pending.len() > SHOWN {
        parts.push(format!("and {} more", pending.len() - SHOWN));
    }
    parts.join(", ")
}

/// Terminal: a single self-rewriting status line. Otherwise: a line per
/// object that becomes ready, which reads well in CI logs.
struct Progress {
    total: usize,
    done: usize,
    tty: bool,
    frame: usize,
    drawn: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            frame: 0,
            drawn: false,
        }
    }

    fn ready(&mut self, label: &str) {
        self.done += 1;
        if self.tty {
            self.clear();
        }
        eprintln!("{label} ready");
    }

    fn update(&mut self, pending: &[(Target, String)]) {
        if !self.tty {
            return;
        }
        const SPINNER: [char; 4] = ['|', '/', '-', '\\'];
        self.frame = (self.frame + 1) % SPINNER.len();
        let (t, why) = &pending[0];
        let mut line = format!(
            "{} {}/{} ready; waiting for {}: {why}",
            SPINNER[self.frame],
            self.done,
            self.total,
            t.label()
        );
        line.truncate(line.char_indices().nth(100).map_or(line.len(), |(i, _)| i));
        eprint!("\r\x1b[2K{line}");
        std::io::stderr().flush().ok();
        self.drawn = true;
    }

    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }

    fn finish(&mut self) {
        if self.tty {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(Target::parse("vol/a").unwrap().label(), "volume/a");
        assert_eq!(
            Target::parse("attachments/x-1").unwrap().kind,
            Kind::Attachment
        );
        assert!(Target::parse("volume").is_err());
        assert!(Target::parse("disk/a").is_err());
        assert!(Target::parse("volume/A").is_err());
    }

    fn attachment(
        volume: &str,
        node: &str,
        phase: v1::AttachmentPhase,
        size: u64,
    ) -> v1::Attachment {
        v1::Attachment {
            spec: Some(v1::AttachmentSpec {
                volume: volume.into(),
                node: node.into(),
                ..Default::default()
            }),
            status: Some(v1::AttachmentStatus {
                phase: phase as i32,
                size_bytes: size,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_grown_volume_waits_for_its_attached_workstations() {
        use v1::AttachmentPhase::{Attached, Connecting};
        let gib = 1u64 << 30;
        let lagging = [
            attachment("v", "ws1", Attached, gib),
            attachment("v", "ws2", Attached, 2 * gib),
        ];
        match exposure_readiness("v", 2 * gib, &lagging) {
            Readiness::Pending(why) => assert_eq!(why, "ws1 still exposes 1GiB"),
            other => panic!("{other:?}"),
        }
        // Caught up, not connected, other volumes, no size reported (the
        // kernel driver): nothing to wait for.
        let fine = [
            attachment("v", "ws1", Attached, 2 * gib),
            attachment("v", "ws2", Connecting, gib),
            attachment("w", "ws3", Attached, gib),
            attachment("v", "ws4", Attached, 0),
        ];
        assert!(matches!(
            exposure_readiness("v", 2 * gib, &fine),
            Readiness::Ready
        ));
    }

    #[test]
    fn pending_description_is_capped() {
        let p: Vec<(Target, String)> = (0..5)
            .map(|i| {
                (
                    Target::new("volume", format!("v{i}")).unwrap(),
                    "pending".into(),
                )
            })
            .collect();
        assert_eq!(
            describe_pending(&p),
            "volume/v0 (pending), volume/v1 (pending), volume/v2 (pending), and 2 more"
        );
    }
}
