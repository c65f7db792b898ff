//! get/list/create/update/delete (and volume resize) for every kind.

use std::time::SystemTime;

use anyhow::{anyhow, bail};
use ferrofab_proto::v1::{self, ObjectMeta};
use ferrofab_types::size::{format_size, parse_size};

use super::{token, Ctx};
use crate::args::{
    AttachmentCommand, AttachmentSpecArgs, BackingArg, CommonVerb, ExpiryActionArg, Format,
    LabelArgs, ModeArg, NodeCommand, NodeSpecArgs, PoolCommand, PoolSpecArgs, ReclaimArg, RoleArg,
    TenantCommand, TenantSpecArgs, VolumeCommand, VolumeSpecArgs,
};
use crate::client::status_error;
use crate::layout::{parse_address, parse_rfc3339};
use crate::output::print;
use crate::render::{render_list, render_one};
use crate::resource::{what, Object, Resource};

pub async fn node(ctx: &Ctx, cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Token(t) => token::run(ctx, t).await,
        NodeCommand::RotateKey { name } => token::rotate_key(ctx, &name).await,
        NodeCommand::Create { name, spec } => create(ctx, &name, |n| apply_node(n, &spec)).await,
        NodeCommand::Update { name, spec } => update(ctx, &name, |n| apply_node(n, &spec)).await,
        NodeCommand::Common(v) => common::<v1::Node>(ctx, v).await,
    }
}

pub async fn pool(ctx: &Ctx, cmd: PoolCommand) -> anyhow::Result<()> {
    match cmd {
        PoolCommand::Create { name, spec } => {
            require(&[
                ("--node", spec.node.is_some()),
                ("--path", spec.path.is_some()),
                ("--capacity", spec.capacity.is_some()),
            ])?;
            create(ctx, &name, |p| apply_pool(p, &spec)).await
        }
        PoolCommand::Update { name, spec } => update(ctx, &name, |p| apply_pool(p, &spec)).await,
        PoolCommand::Common(v) => common::<v1::Pool>(ctx, v).await,
    }
}

pub async fn volume(ctx: &Ctx, cmd: VolumeCommand) -> anyhow::Result<()> {
    match cmd {
        VolumeCommand::Create { name, spec } => {
            require(&[
                ("--tenant", spec.tenant.is_some()),
                ("--size", spec.size.is_some()),
            ])?;
            create(ctx, &name, |v| apply_volume(v, &spec)).await
        }
        VolumeCommand::Update { name, spec } => {
            update(ctx, &name, |v| apply_volume(v, &spec)).await
        }
        VolumeCommand::Resize { name, size } => {
            update(ctx, &name, |v: &mut v1::Volume| resize(v, &name, &size)).await
        }
        VolumeCommand::Extend { name, by } => {
            let now = crate::output::now_seconds();
            update(ctx, &name, |v: &mut v1::Volume| extend(v, by, now)).await
        }
        VolumeCommand::Move {
            name,
            to,
            force,
            timeout,
        } => {
            super::moving::run(
                ctx,
                super::moving::MoveArgs {
                    volume: name,
                    to,
                    force,
                    timeout,
                },
            )
            .await
        }
        VolumeCommand::Common(v) => common::<v1::Volume>(ctx, v).await,
    }
}

pub async fn attachment(ctx: &Ctx, cmd: AttachmentCommand) -> anyhow::Result<()> {
    match cmd {
        AttachmentCommand::Create { name, spec } => {
            require(&[
                ("--volume", spec.volume.is_some()),
                ("--node", spec.node.is_some()),
            ])?;
            create(ctx, &name, |a| apply_attachment(a, &spec)).await
        }
        AttachmentCommand::Update { name, spec } => {
            update(ctx, &name, |a| apply_attachment(a, &spec)).await
        }
        AttachmentCommand::Common(v) => common::<v1::Attachment>(ctx, v).await,
    }
}

pub async fn tenant(ctx: &Ctx, cmd: TenantCommand) -> anyhow::Result<()> {
    match cmd {
        TenantCommand::Create { name, spec } => {
            if !spec.add_nodes.is_empty() || !spec.remove_nodes.is_empty() {
                bail!("--add-node/--remove-node change an existing tenant; use --allowed-node with create");
            }
            create(ctx, &name, |t| apply_tenant(t, &spec)).await
        }
        TenantCommand::Update { name, spec } => {
            update(ctx, &name, |t| apply_tenant(t, &spec)).await
        }
        TenantCommand::Common(v) => common::<v1::Tenant>(ctx, v).await,
    }
}

/// Required flags of `create`, checked here rather than by clap because
/// `update` shares the same flag structs with everything optional.
fn require(flags: &[(&str, bool)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = flags
        .iter()
        .filter(|(_, given)| !given)
        .map(|(f, _)| *f)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        bail!("missing required option(s): {}", missing.join(", "))
    }
}

async fn common<R: Resource>(ctx: &Ctx, verb: CommonVerb) -> anyhow::Result<()> {
    let mut admin = ctx.admin().await?;
    let text = match verb {
        CommonVerb::Get { name } => {
            let obj = R::get(&mut admin, &name)
                .await
                .map_err(|s| status_error(&what::<R>(&name), s))?;
            render_one(&obj, ctx.output)
        }
        CommonVerb::List { selector } => {
            let items = R::list(&mut admin, selector.as_deref().unwrap_or(""))
                .await
                .map_err(|s| status_error(&format!("listing {}s", R::NOUN), s))?;
            render_list(&items, ctx.output)
        }
        CommonVerb::Delete {
            name,
            resource_version,
        } => {
            let obj = R::delete(&mut admin, &name, resource_version.unwrap_or(0))
                .await
                .map_err(|s| status_error(&what::<R>(&name), s))?;
            done::<R>(ctx, &obj, &name, deleted_word(&obj))
        }
    };
    print(&text)?;
    Ok(())
}

/// "deleted", or "deleting" while finalizers hold the object.
fn deleted_word<R: Resource>(obj: &R) -> &'static str {
    if obj.meta().is_some_and(|m| !m.finalizers.is_empty()) {
        "deleting"
    } else {
        "deleted"
    }
}

/// Table mode prints `volume/NAME created`; JSON/YAML print the object.
fn done<R: Resource>(ctx: &Ctx, obj: &R, name: &str, verb: &str) -> String {
    match ctx.output {
        Format::Table | Format::Wide => format!("{}/{name} {verb}\n", R::NOUN),
        Format::Name => format!("{}/{name}\n", R::NOUN),
        f => render_one(obj, f),
    }
}

async fn create<R: Resource + Default>(
    ctx: &Ctx,
    name: &str,
    fill: impl FnOnce(&mut R) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    ferrofab_pki::validate_name(name)?;
    let mut obj = R::default();
    obj.meta_mut().name = name.to_owned();
    fill(&mut obj).map_err(|e| anyhow!("{}: {e}", what::<R>(name)))?;
    let mut admin = ctx.admin().await?;
    let created = R::create(&mut admin, obj)
        .await
        .map_err(|s| status_error(&what::<R>(name), s))?;
    print(&done(ctx, &created, name, "created"))?;
    Ok(())
}

/// How often `update` re-reads and retries after a concurrent change. A
/// named constant rather than a flag: the changes are deltas on what was
/// read (add a node, grow to a size), so a retry is always the intended
/// change, and a handful covers any realistic contention.
const UPDATE_RETRIES: usize = 5;

/// Read-modify-write, conditional on the resource version read, so a
/// concurrent change is never silently overwritten: on a conflict
/// (ABORTED) the object is read again and the change re-applied to it.
async fn update<R: Resource>(
    ctx: &Ctx,
    name: &str,
    mut modify: impl FnMut(&mut R) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut admin = ctx.admin().await?;
    let w = what::<R>(name);
    let mut attempt = 0;
    loop {
        let mut obj = R::get(&mut admin, name)
            .await
            .map_err(|s| status_error(&w, s))?;
        let before = obj.clone();
        modify(&mut obj).map_err(|e| anyhow!("{w}: {e}"))?;
        if same_spec(&before, &obj) {
            print(&done(ctx, &obj, name, "unchanged"))?;
            return Ok(());
        }
        match R::update(&mut admin, obj).await {
            Ok(updated) => {
                print(&done(ctx, &updated, name, "updated"))?;
                return Ok(());
            }
            Err(s) if s.code() == tonic::Code::Aborted && attempt < UPDATE_RETRIES => {
                attempt += 1;
                tracing::debug!(%w, attempt, "changed concurrently; reading it again");
            }
            Err(s) => return Err(status_error(&w, s)),
        }
    }
}

fn same_spec<R: Resource>(a: &R, b: &R) -> bool {
    a.meta() == b.meta() && a.spec_status().0 == b.spec_status().0
}

fn apply_labels(meta: &mut ObjectMeta, l: &LabelArgs) {
    for k in &l.remove_labels {
        meta.labels.remove(k);
    }
    for (k, v) in &l.labels {
        meta.labels.insert(k.clone(), v.clone());
    }
}

fn apply_node(n: &mut v1::Node, a: &NodeSpecArgs) -> anyhow::Result<()> {
    apply_labels(n.meta_mut(), &a.labels);
    let spec = n.spec.get_or_insert_with(Default::default);
    if !a.roles.is_empty() {
        spec.roles = a
            .roles
            .iter()
            .map(|r| match r {
                RoleArg::Storage => v1::NodeRole::Storage as i32,
                RoleArg::Workstation => v1::NodeRole::Workstation as i32,
            })
            .collect();
    }
    if !a.addresses.is_empty() {
        spec.data_addresses = a
            .addresses
            .iter()
            .map(|s| parse_address(s).map_err(|e| anyhow!("--address: {e}")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(nqn) = &a.host_nqn {
        spec.host_nqn = nqn.clone();
    }
    Ok(())
}

fn apply_pool(p: &mut v1::Pool, a: &PoolSpecArgs) -> anyhow::Result<()> {
    apply_labels(p.meta_mut(), &a.labels);
    let spec = p.spec.get_or_insert_with(Default::default);
    if let Some(n) = &a.node {
        ferrofab_pki::validate_name(n)?;
        spec.node = n.clone();
    }
    let backing = spec.backing.get_or_insert_with(|| v1::PoolBacking {
        kind: v1::BackingKind::Directory as i32,
        path: String::new(),
    });
    if let Some(k) = a.backing {
        backing.kind = match k {
            BackingArg::Directory => v1::BackingKind::Directory,
            BackingArg::BlockDevice => v1::BackingKind::BlockDevice,
        } as i32;
    }
    if let Some(path) = &a.path {
        if !path.starts_with('/') {
            bail!("--path must be absolute");
        }
        backing.path = path.clone();
    }
    if let Some(c) = &a.capacity {
        spec.capacity = c.clone();
    }
    if let Some(r) = a.overcommit {
        if !(r.is_finite() && r >= 1.0) {
            bail!("--overcommit must be at least 1.0");
        }
        spec.overcommit_ratio = r;
    }
    if let Some(l) = a.namespace_limit {
        spec.namespace_limit = l;
    }
    if let Some(r) = a.reclaim {
        spec.reclaim_policy = match r {
            ReclaimArg::Delete => v1::ReclaimPolicy::Delete,
            ReclaimArg::Retain => v1::ReclaimPolicy::Retain,
        } as i32;
    }
    Ok(())
}

fn apply_volume(v: &mut v1::Volume, a: &VolumeSpecArgs) -> anyhow::Result<()> {
    apply_labels(v.meta_mut(), &a.labels);
    let spec = v.spec.get_or_insert_with(Default::default);
    if let Some(t) = &a.tenant {
        ferrofab_pki::validate_name(t)?;
        spec.tenant = t.clone();
    }
    if let Some(s) = &a.size {
        spec.size = s.clone();
    }
    if let Some(b) = a.block_size {
        if b != 512 && b != 4096 {
            bail!("--block-size must be 512 or 4096");
        }
        spec.block_size = b;
    }
    if let Some(p) = &a.pool {
        spec.pool = p.clone();
        spec.pool_selector = None;
    }
    if !a.pool_selector.is_empty() {
        spec.pool.clear();
        spec.pool_selector = Some(v1::LabelSelector {
            match_labels: a.pool_selector.iter().cloned().collect(),
        });
    }
    if let Some(t) = &a.expires_at {
        spec.expires_at = Some(parse_rfc3339(t).map_err(|e| anyhow!("--expires-at: {e}"))?);
    }
    if let Some(d) = a.expires_in {
        let at = SystemTime::now() + d;
        spec.expires_at = Some(prost_types::Timestamp {
            seconds: ferrofab_pki::validity::unix_seconds(at),
            nanos: 0,
        });
    }
    if let Some(x) = a.expiry_action {
        spec.expiry_action = match x {
            ExpiryActionArg::Retain => v1::ExpiryAction::Retain,
            ExpiryActionArg::Delete => v1::ExpiryAction::Delete,
        } as i32;
    }
    Ok(())
}

/// Volumes only grow; refusing a shrink here gives a clearer message than
/// the controller's FAILED_PRECONDITION and saves a round trip.
fn resize(v: &mut v1::Volume, name: &str, new: &str) -> anyhow::Result<()> {
    let spec = v.spec.get_or_insert_with(Default::default);
    let new_bytes = parse_size(new)?;
    if let Ok(old_bytes) = parse_size(&spec.size) {
        if new_bytes < old_bytes {
            bail!(
                "cannot shrink from {} to {} (volumes only grow)",
                format_size(old_bytes),
                format_size(new_bytes)
            );
        }
        if new_bytes == old_bytes {
            tracing::info!(volume = name, "already {}", format_size(old_bytes));
            return Ok(());
        }
    }
    spec.size = new.to_owned();
    Ok(())
}

fn apply_attachment(at: &mut v1::Attachment, a: &AttachmentSpecArgs) -> anyhow::Result<()> {
    apply_labels(at.meta_mut(), &a.labels);
    let spec = at.spec.get_or_insert_with(Default::default);
    if let Some(v) = &a.volume {
        ferrofab_pki::validate_name(v)?;
        spec.volume = v.clone();
    }
    if let Some(n) = &a.node {
        ferrofab_pki::validate_name(n)?;
        spec.node = n.clone();
    }
    if let Some(m) = a.mode {
        spec.mode = match m {
            ModeArg::ReadWrite => v1::AccessMode::ReadWrite,
            ModeArg::ReadOnly => v1::AccessMode::ReadOnly,
            ModeArg::ReadWriteMany => v1::AccessMode::ReadWriteMany,
        } as i32;
    }
    Ok(())
}

fn apply_tenant(t: &mut v1::Tenant, a: &TenantSpecArgs) -> anyhow::Result<()> {
    apply_labels(t.meta_mut(), &a.labels);
    let spec = t.spec.get_or_insert_with(Default::default);
    if let Some(q) = &a.capacity_quota {
        spec.capacity_quota = match q.as_str() {
            "none" | "unlimited" => String::new(),
            size => {
                parse_size(size).map_err(|e| anyhow!("--capacity-quota: {e}"))?;
                size.trim().to_owned()
            }
        };
    }
    if let Some(n) = a.volume_quota {
        spec.volume_quota = n;
    }
    if !a.allowed_nodes.is_empty() {
        for n in &a.allowed_nodes {
            ferrofab_pki::validate_name(n)?;
        }
        spec.allowed_nodes = a.allowed_nodes.clone();
    }
    for n in &a.add_nodes {
        ferrofab_pki::validate_name(n).map_err(|e| anyhow!("--add-node: {e}"))?;
        if !spec.allowed_nodes.contains(n) {
            spec.allowed_nodes.push(n.clone());
        }
    }
    for n in &a.remove_nodes {
        ferrofab_pki::validate_name(n).map_err(|e| anyhow!("--remove-node: {e}"))?;
        spec.allowed_nodes.retain(|x| x != n);
    }
    Ok(())
}

/// Moves an expiry later by `by`. A volume without an expiry has nothing
/// to extend: it never expires, and giving it one is `update --expires-in`.
/// An expiry already past (a retained volume) counts from `now`: reviving
/// a volume that expired five days ago `--by 7d` gives it seven more days,
/// not two.
fn extend(v: &mut v1::Volume, by: std::time::Duration, now: i64) -> anyhow::Result<()> {
    let spec = v.spec.get_or_insert_with(Default::default);
    let Some(at) = spec.expires_at.as_mut() else {
        bail!(
            "has no expiry to extend (it never expires; set one with `volume update --expires-in`)"
        );
    };
    let by = i64::try_from(by.as_secs()).map_err(|_| anyhow!("--by is too long"))?;
    at.seconds = at
        .seconds
        .max(now)
        .checked_add(by)
        .ok_or_else(|| anyhow!("--by is too long"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_counts_from_now_once_expired() {
        let mut v = vol("1GiB");
        v.spec.as_mut().unwrap().expires_at = Some(prost_types::Timestamp {
            seconds: 1_000,
            nanos: 0,
        });
        let week = std::time::Duration::from_secs(7 * 86_400);
        // Not yet expired: moved later by the amount.
        extend(&mut v, week, 500).expect("extend");
        assert_eq!(
            v.spec.as_ref().unwrap().expires_at.unwrap().seconds,
            1_000 + 7 * 86_400
        );
        // Expired (retained): a week from now.
        let now = 1_000 + 10 * 86_400;
        extend(&mut v, week, now).expect("extend");
        assert_eq!(
            v.spec.as_ref().unwrap().expires_at.unwrap().seconds,
            now + 7 * 86_400
        );
    }

    fn vol(size: &str) -> v1::Volume {
        v1::Volume {
            spec: Some(v1::VolumeSpec {
                size: size.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn resize_only_grows() {
        let mut v = vol("100GiB");
        resize(&mut v, "v", "200GiB").unwrap();
        assert_eq!(v.spec.as_ref().unwrap().size, "200GiB");
        let e = resize(&mut v, "v", "1GiB").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot shrink from 200GiB to 1GiB (volumes only grow)"
        );
    }

    #[test]
    fn volume_pool_and_selector_replace_each_other() {
        let mut v = vol("1GiB");
        let mut a = VolumeSpecArgs {
            pool: Some("p".into()),
            ..Default::default()
        };
        apply_volume(&mut v, &a).unwrap();
        assert_eq!(v.spec.as_ref().unwrap().pool, "p");
        a.pool = None;
        a.pool_selector = vec![("tier".into(), "nvme".into())];
        apply_volume(&mut v, &a).unwrap();
        let s = v.spec.as_ref().unwrap();
        assert!(s.pool.is_empty());
        assert_eq!(
            s.pool_selector.as_ref().unwrap().match_labels["tier"],
            "nvme"
        );
    }

    #[test]
    fn labels_set_and_remove() {
        let mut t = v1::Tenant::default();
        let l = LabelArgs {
            labels: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            remove_labels: vec![],
        };
        apply_labels(t.meta_mut(), &l);
        let l = LabelArgs {
            labels: vec![],
            remove_labels: vec!["a".into()],
        };
        apply_labels(t.meta_mut(), &l);
        assert_eq!(t.meta().unwrap().labels.len(), 1);
    }

    #[test]
    fn tenant_quota_unlimited_and_validation() {
        let mut t = v1::Tenant::default();
        let mut a = TenantSpecArgs {
            capacity_quota: Some("4TiB".into()),
            ..Default::default()
        };
        apply_tenant(&mut t, &a).unwrap();
        assert_eq!(t.spec.as_ref().unwrap().capacity_quota, "4TiB");
        a.capacity_quota = Some("none".into());
        apply_tenant(&mut t, &a).unwrap();
        assert_eq!(t.spec.as_ref().unwrap().capacity_quota, "");
        a.capacity_quota = Some("lots".into());
        assert!(apply_tenant(&mut t, &a).is_err());
    }

    #[test]
    fn required_flags_listed() {
        let e = require(&[("--tenant", false), ("--size", true), ("--x", false)]).unwrap_err();
        assert_eq!(e.to_string(), "missing required option(s): --tenant, --x");
    }
}
