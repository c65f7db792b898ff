//! The control plane as etcd sees it, for `ferrofab status`: the registered
//! replicas, the leader, and each configured etcd member's health (asked
//! one by one, so an unreachable member shows as such instead of hiding
//! behind the others).

use etcd_client::GetOptions;

use super::*;
use crate::leader::{ClusterView, MemberView, ReplicaView};

pub(super) async fn view(
    client: Client,
    prefix: &str,
    endpoints: Vec<String>,
    connect: ConnectOptions,
    timeout: Duration,
) -> Result<ClusterView, StoreError> {
    let (leader_key, replicas) = super::elect::control_keys(prefix);
    let mut kv = client.kv_client();
    let leader = kv
        .get(leader_key, None)
        .await
        .map_err(io)?
        .kvs()
        .first()
        .map(|k| String::from_utf8_lossy(k.value()).into_owned());
    let opts = GetOptions::new().with_prefix();
    let resp = kv.get(replicas.clone(), Some(opts)).await.map_err(io)?;
    let replicas = resp
        .kvs()
        .iter()
        .map(|k| {
            let name = String::from_utf8_lossy(k.key())
                .trim_start_matches(replicas.as_str())
                .to_string();
            ReplicaView {
                leader: leader.as_deref() == Some(name.as_str()),
                endpoint: String::from_utf8_lossy(k.value()).into_owned(),
                name,
            }
        })
        .collect();
    // Each member on its own connection, bounded by a share of the
    // request timeout so one dead member cannot stall the whole answer.
    let each = timeout / u32::try_from(endpoints.len().max(2)).unwrap_or(2);
    let mut members = Vec::new();
    for ep in endpoints {
        members.push(member(ep, connect.clone(), each).await);
    }
    Ok(ClusterView {
        replicas,
        leader,
        members,
    })
}

async fn member(endpoint: String, connect: ConnectOptions, timeout: Duration) -> MemberView {
    let probe = async {
        let mut c = Client::connect([endpoint.clone()], Some(connect))
            .await
            .map_err(|e| e.to_string())?;
        let s = c.status().await.map_err(|e| e.to_string())?;
        let id = s.header().map_or(0, |h| h.member_id());
        Ok::<_, String>(s.leader() == id && id != 0)
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(leader)) => MemberView {
            endpoint,
            health: "ok".into(),
            leader,
        },
        Ok(Err(e)) => MemberView {
            endpoint,
            health: e,
            leader: false,
        },
        Err(_) => MemberView {
            endpoint,
            health: format!("no answer within {} ms", timeout.as_millis()),
            leader: false,
        },
    }
}
