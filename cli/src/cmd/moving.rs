//! `ferrofab volume move VOLUME --to NODE [--force]`: reassigns a volume's
//! attachment to another workstation without a window for two writers.
//!
//! The CLI only asks: it changes the attachment's `spec.node`, and the
//! controller does the move, level-triggered, whoever asked (Apply,
//! Terraform and Puppet change the same field). The new node is not told
//! to connect before the storage node has reported the old node's host
//! revoked and disconnected. What this command adds is the check that the
//! old node is alive (a dead node may still be writing: only `--force`,
//! whose revocation on the storage node is the fence, proceeds) and
//! progress lines while the steps happen.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use ferrofab_proto::v1::{self, AttachmentPhase, ConditionStatus};

use super::Ctx;
use crate::client::{status_error, Admin};
use crate::output::{now_seconds, print, relative, timestamp};

/// How often the attachment is re-read while the move proceeds: the steps
/// take a report round each (a second or so), and this keeps the progress
/// lines prompt without loading the controller.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What `volume move` was asked.
pub struct MoveArgs {
    pub volume: String,
    pub to: String,
    pub force: bool,
    pub timeout: Duration,
}

pub async fn run(ctx: &Ctx, a: MoveArgs) -> anyhow::Result<()> {
    ferrofab_pki::validate_name(&a.volume)?;
    ferrofab_pki::validate_name(&a.to)?;
    let mut admin = ctx.admin().await?;
    let att = the_attachment(&mut admin, &a.volume).await?;
    let name = att
        .metadata
        .as_ref()
        .map_or(String::new(), |m| m.name.clone());
    let from = match plan(&att, &a.to, a.force) {
        Plan::AlreadyThere => {
            print(&format!(
                "volume {} is already attached to {} (attachment {name})\n",
                a.volume, a.to
            ))?;
            return Ok(());
        }
        Plan::Move { from } | Plan::ForcePending { from } => from,
    };
    check_alive(&mut admin, &from, a.force).await?;
    let storage = storage_node(&mut admin, &a.volume).await;
    // For a pending move this leaves spec.node as it is: only `force` is
    // news to the controller.
    let mut moved = att.clone();
    if let Some(spec) = moved.spec.as_mut() {
        spec.node = a.to.clone();
    }
    admin
        .update_attachment(v1::UpdateAttachmentRequest {
            attachment: Some(moved),
            force: a.force,
        })
        .await
        .map_err(|s| status_error(&format!("volume {:?}", a.volume), s))?;
    if a.force {
        print(&format!(
            "fencing {from}: revoking its host on storage node {storage} …\n"
        ))?;
    } else {
        print(&format!("detaching from {from} …\n"))?;
    }
    follow(&mut admin, &name, &from, &a, &storage).await
}

/// What `volume move` has to do for the attachment as found.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Already on the target and nothing pending: nothing to do.
    AlreadyThere,
    /// A new move away from `from`.
    Move { from: String },
    /// Already moved to the target but still waiting for `from` to
    /// disconnect, and `--force` given: the timeout message tells the
    /// operator to re-run with --force when `from` died, so this must
    /// send `force` (the fence) instead of saying "already attached".
    ForcePending { from: String },
}

fn plan(att: &v1::Attachment, to: &str, force: bool) -> Plan {
    let node = att.spec.as_ref().map_or("", |s| s.node.as_str());
    if node != to {
        return Plan::Move {
            from: node.to_string(),
        };
    }
    let st = att.status.clone().unwrap_or_default();
    if force && !st.moved_from_node.is_empty() && !st.moved_from_released {
        return Plan::ForcePending {
            from: st.moved_from_node,
        };
    }
    Plan::AlreadyThere
}

/// The one attachment of `volume`. Several (readers, clustered writers)
/// are moved one by one with `attachment update NAME --node NODE`.
async fn the_attachment(admin: &mut Admin, volume: &str) -> anyhow::Result<v1::Attachment> {
    let list = admin
        .list_attachments(v1::ListAttachmentsRequest::default())
        .await
        .map_err(|s| status_error("attachments", s))?
        .into_inner();
    let mut mine: Vec<v1::Attachment> = list
        .items
        .into_iter()
        .filter(|a| a.spec.as_ref().is_some_and(|s| s.volume == volume))
        .filter(|a| {
            a.metadata
                .as_ref()
                .is_none_or(|m| m.deletion_timestamp.is_none())
        })
        .collect();
    match mine.len() {
        0 => bail!(
            "volume {volume:?} is not attached; attach it with: ferrofab attachment create NAME --volume {volume} --node NODE"
        ),
        1 => Ok(mine.remove(0)),
        _ => {
            let names: Vec<String> = mine
                .iter()
                .map(|a| {
                    let n = a.metadata.as_ref().map_or("", |m| m.name.as_str());
                    let node = a.spec.as_ref().map_or("", |s| s.node.as_str());
                    format!("{n} on {node}")
                })
                .collect();
            bail!(
                "volume {volume:?} has {} attachments ({}); move one with: ferrofab attachment update NAME --node NODE",
                mine.len(),
                names.join(", ")
            )
        }
    }
}

/// Refuses to move away from a node that is not Ready unless forced: it may
/// be cut off from the controller and still writing.
async fn check_alive(admin: &mut Admin, node: &str, force: bool) -> anyhow::Result<()> {
    let n = match admin
        .get_node(v1::GetNodeRequest { name: node.into() })
        .await
    {
        Ok(n) => n.into_inner(),
        // A tenant may not read nodes: the controller's fence still holds,
        // the move just waits for the node's report.
        Err(s)
            if s.code() == tonic::Code::PermissionDenied || s.code() == tonic::Code::NotFound =>
        {
            return Ok(())
        }
        Err(s) => return Err(status_error(&format!("node {node:?}"), s)),
    };
    let st = n.status.unwrap_or_default();
    let down = st
        .conditions
        .iter()
        .any(|c| c.r#type == "Ready" && c.status == ConditionStatus::False as i32);
    if !down {
        return Ok(());
    }
    let seen = st.last_heartbeat.as_ref().map_or_else(
        || "never heard from".to_owned(),
        |t| {
            format!(
                "last heartbeat {}, {}",
                relative(t.seconds - now_seconds()),
                timestamp(t)
            )
        },
    );
    if force {
        print(&format!(
            "warning: {node} is not ready ({seen}); forcing: its host is revoked first\n"
        ))?;
        return Ok(());
    }
    bail!(
        "{node} is not ready ({seen}); it may still be writing. Re-run with --force to fence it: the storage node revokes its host first"
    )
}

async fn storage_node(admin: &mut Admin, volume: &str) -> String {
    admin
        .get_volume(v1::GetVolumeRequest {
            name: volume.into(),
        })
        .await
        .ok()
        .and_then(|v| v.into_inner().status)
        .map_or_else(|| "?".to_owned(), |s| s.node)
}

/// Prints each step as the attachment's status passes it, until attached
/// on the new node or the timeout.
async fn follow(
    admin: &mut Admin,
    name: &str,
    from: &str,
    a: &MoveArgs,
    storage: &str,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut released = a.force;
    let mut fenced = false;
    loop {
        let att = admin
            .get_attachment(v1::GetAttachmentRequest { name: name.into() })
            .await
            .map_err(|s| status_error(&format!("attachment {name:?}"), s))?
            .into_inner();
        let st = att.status.clone().unwrap_or_default();
        if !released && (st.moved_from_released || st.moved_from_node.is_empty()) {
            released = true;
            print(&format!(
                "{from} disconnected; revoking its host on storage node {storage} …\n"
            ))?;
        }
        if !fenced && st.moved_from_node.is_empty() {
            fenced = true;
            print(&format!(
                "host revoked on storage node {storage}; connecting {} …\n",
                a.to
            ))?;
        }
        if fenced && st.phase == AttachmentPhase::Attached as i32 {
            print(&format!(
                "attached on {} ({})\n",
                a.to,
                if st.device_path.is_empty() {
                    "-"
                } else {
                    &st.device_path
                }
            ))?;
            return Ok(());
        }
        if start.elapsed() >= a.timeout {
            return Err(anyhow!(
                "volume {:?} not attached on {} after {}s: {}; the move goes on (watch it with: ferrofab wait attachment/{name})",
                a.volume,
                a.to,
                a.timeout.as_secs(),
                waiting_for(&st, from)
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What the move is still waiting for, in words.
fn waiting_for(st: &v1::AttachmentStatus, from: &str) -> String {
    if !st.moved_from_node.is_empty() && !st.moved_from_released {
        format!("{from} has not reported the disconnect (if it is down, re-run with --force)")
    } else if !st.moved_from_node.is_empty() {
        "the storage node has not reported the old host revoked".into()
    } else {
        st.conditions
            .iter()
            .find(|c| c.r#type == "Connected")
            .map_or_else(|| "not connected yet".into(), |c| c.message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(node: &str, moved_from: &str, released: bool) -> v1::Attachment {
        v1::Attachment {
            spec: Some(v1::AttachmentSpec {
                node: node.into(),
                ..Default::default()
            }),
            status: Some(v1::AttachmentStatus {
                moved_from_node: moved_from.into(),
                moved_from_released: released,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn rerun_with_force_forces_a_pending_move() {
        let pending = att("ws2", "ws1", false);
        assert_eq!(
            plan(&pending, "ws2", true),
            Plan::ForcePending { from: "ws1".into() }
        );
        // Without --force, or once released or done: nothing to send.
        assert_eq!(plan(&pending, "ws2", false), Plan::AlreadyThere);
        assert_eq!(
            plan(&att("ws2", "ws1", true), "ws2", true),
            Plan::AlreadyThere
        );
        assert_eq!(
            plan(&att("ws2", "", false), "ws2", true),
            Plan::AlreadyThere
        );
        assert_eq!(
            plan(&att("ws1", "", false), "ws2", false),
            Plan::Move { from: "ws1".into() }
        );
    }
}
