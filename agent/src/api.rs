//! The agent's answers to local API requests. Attach and detach go to the
//! controller under the node's own identity (`node:NAME` may create and
//! delete attachments for itself) and then wait for the local data path,
//! so "attach returned" means "the file exists and takes I/O".

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrofab_proto::v1::{
    AccessMode, Attachment, AttachmentSpec, CreateAttachmentRequest, DeleteAttachmentRequest,
    GetAttachmentRequest, ObjectMeta,
};
use serde_json::json;
use tonic::Code;

use crate::client::ControllerClient;
use crate::error::AgentError;
use crate::local_api::{clamp_timeout, deadline_after, ApiError, ErrorCode, Handler, Request};
use crate::shared::Shared;
use crate::status::LocalAttachment;

const POLL: Duration = Duration::from_millis(200);

/// Serves the local API for one agent.
pub(crate) struct AgentApi {
    shared: Arc<Shared>,
    client: ControllerClient,
}

impl AgentApi {
    pub(crate) fn new(shared: Arc<Shared>, client: ControllerClient) -> Self {
        AgentApi { shared, client }
    }
}

impl Handler for AgentApi {
    async fn handle(&self, req: Request) -> Result<serde_json::Value, ApiError> {
        match req {
            Request::Status => to_json(&self.shared.local_status()),
            Request::Attachments => {
                let list = self.live_attachments().await;
                Ok(json!({"schema_version": 1, "node": self.shared.cfg.node, "attachments": list}))
            }
            Request::Attach {
                volume,
                read_only,
                access_mode,
                timeout_seconds,
            } => {
                let mode = requested_mode(read_only, access_mode.as_deref())?;
                self.attach(&volume, mode, clamp_timeout(timeout_seconds))
                    .await
            }
            Request::Detach {
                volume,
                timeout_seconds,
            } => self.detach(&volume, clamp_timeout(timeout_seconds)).await,
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// The attachment name a node uses for a volume it attaches itself:
/// deterministic, so a repeated `attach` finds the same object.
pub fn attachment_name(volume: &str, node: &str) -> String {
    let name = format!("{volume}-{node}");
    if name.len() <= 63 {
        return name;
    }
    // FNV-1a keeps long names unique and still deterministic.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let head: String = volume.chars().take(46).collect();
    format!("{}-{:016x}", head.trim_end_matches('-'), h)
}

fn controller_error(e: AgentError) -> ApiError {
    ApiError::new(ErrorCode::ControllerUnreachable, e.to_string())
}

fn refused(rpc: &str, s: &tonic::Status) -> ApiError {
    ApiError::new(
        ErrorCode::ControllerRefused,
        format!("controller refused {rpc}: {}", s.message()),
    )
}

impl AgentApi {
    fn require_workstation(&self) -> Result<(), ApiError> {
        if self.shared.hostnqn.is_none() {
            return Err(ApiError::new(
                ErrorCode::NotWorkstation,
                format!(
                    "node {} does not have the workstation role",
                    self.shared.cfg.node
                ),
            ));
        }
        Ok(())
    }

    async fn live_attachments(&self) -> Vec<LocalAttachment> {
        let s = self.shared.clone();
        let mut list = tokio::task::spawn_blocking(move || s.local_attachments())
            .await
            .unwrap_or_default();
        // The access mode comes from the desired state (the data path only
        // knows whether it may write).
        let ds = self.shared.desired();
        for a in &mut list {
            let conn = ds.connections.iter().find(|c| c.attachment == a.attachment);
            a.access_mode = match conn {
                Some(c) => mode_word(c.access_mode, c.read_only).into(),
                None if a.read_only => "read-only".into(),
                None => "read-write".into(),
            };
        }
        list
    }

    async fn attach(
        &self,
        volume: &str,
        mode: AccessMode,
        timeout: Duration,
    ) -> Result<serde_json::Value, ApiError> {
        // First: the wait covers the controller calls too, and a
        // peer-given timeout is never added to an Instant unchecked.
        let deadline = deadline_after(timeout);
        self.require_workstation()?;
        ferrofab_pki::validate_name(volume)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("volume: {e}")))?;
        let name = self.ensure_attachment(volume, mode).await?;
        self.shared.trigger.notify_one();
        loop {
            let live = self.live_attachments().await;
            if let Some(a) = live
                .iter()
                .find(|a| a.attachment == name && a.state == crate::status::STATE_LIVE)
            {
                if std::fs::metadata(&a.path).is_ok() {
                    return to_json(&json!({
                        "schema_version": 1,
                        "attachment": a.attachment,
                        "volume": a.volume,
                        "path": a.path,
                        "read_only": a.read_only,
                        "access_mode": mode_word(mode as i32, a.read_only),
                        "size_bytes": a.size_bytes,
                    }));
                }
            }
            if Instant::now() >= deadline {
                return Err(self.attach_timeout(&name, timeout).await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Finds this node's attachment of `volume` or creates it.
    async fn ensure_attachment(
        &self,
        volume: &str,
        wanted: AccessMode,
    ) -> Result<String, ApiError> {
        let node = self.shared.cfg.node.clone();
        let mode = wanted as i32;
        let name = self
            .shared
            .desired()
            .connections
            .iter()
            .find(|c| c.volume == volume)
            .map(|c| c.attachment.clone())
            .unwrap_or_else(|| attachment_name(volume, &node));
        let mut admin = self.client.admin().await.map_err(controller_error)?;
        let att = Attachment {
            metadata: Some(ObjectMeta {
                name: name.clone(),
                ..Default::default()
            }),
            spec: Some(AttachmentSpec {
                volume: volume.into(),
                node: node.clone(),
                mode,
            }),
            status: None,
        };
        match admin
            .create_attachment(CreateAttachmentRequest {
                attachment: Some(att),
            })
            .await
        {
            Ok(_) => Ok(name),
            Err(s) if s.code() == Code::AlreadyExists => {
                let cur = admin
                    .get_attachment(GetAttachmentRequest { name: name.clone() })
                    .await
                    .map_err(|s| refused("GetAttachment", &s))?
                    .into_inner();
                let spec = cur.spec.unwrap_or_default();
                let cur_mode = mode_word(spec.mode, false);
                if spec.volume != volume || spec.node != node || cur_mode != mode_word(mode, false)
                {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!(
                            "attachment {name} exists for volume {} on {} ({cur_mode}); detach it first",
                            spec.volume, spec.node,
                        ),
                    ));
                }
                Ok(name)
            }
            Err(s) => Err(refused("CreateAttachment", &s)),
        }
    }

    /// A timeout error carrying the controller's view (phase, conditions).
    async fn attach_timeout(&self, name: &str, timeout: Duration) -> ApiError {
        let mut why = String::from("no status from the controller");
        if let Ok(mut admin) = self.client.admin().await {
            if let Ok(a) = admin
                .get_attachment(GetAttachmentRequest { name: name.into() })
                .await
            {
                let st = a.into_inner().status.unwrap_or_default();
                let conds: Vec<String> = st
                    .conditions
                    .iter()
                    .map(|c| format!("{} {}: {}", c.r#type, c.reason, c.message))
                    .collect();
                why = format!("phase {}; {}", st.phase, conds.join("; "));
            }
        }
        let local = self
            .shared
            .last_report()
            .connections
            .iter()
            .find(|c| c.attachment == name)
            .and_then(|c| c.conditions.first())
            .map(|c| format!("; locally: {}: {}", c.reason, c.message))
            .unwrap_or_default();
        ApiError::new(
            ErrorCode::Timeout,
            format!(
                "attachment {name} not ready after {}s: {why}{local}",
                timeout.as_secs()
            ),
        )
    }

    async fn detach(&self, volume: &str, timeout: Duration) -> Result<serde_json::Value, ApiError> {
        let deadline = deadline_after(timeout);
        self.require_workstation()?;
        ferrofab_pki::validate_name(volume)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("volume: {e}")))?;
        let mut names: Vec<String> = self
            .shared
            .desired()
            .connections
            .iter()
            .filter(|c| c.volume == volume)
            .map(|c| c.attachment.clone())
            .chain(
                self.live_attachments()
                    .await
                    .into_iter()
                    .filter(|a| a.volume == volume)
                    .map(|a| a.attachment),
            )
            .collect();
        names.push(attachment_name(volume, &self.shared.cfg.node));
        names.sort();
        names.dedup();
        let mut admin = self.client.admin().await.map_err(controller_error)?;
        let mut deleted = Vec::new();
        for n in &names {
            match admin
                .delete_attachment(DeleteAttachmentRequest {
                    name: n.clone(),
                    resource_version: 0,
                })
                .await
            {
                Ok(_) => deleted.push(n.clone()),
                Err(s) if s.code() == Code::NotFound => {}
                Err(s) => return Err(refused("DeleteAttachment", &s)),
            }
        }
        loop {
            let live = self.live_attachments().await;
            if !live.iter().any(|a| a.volume == volume) {
                return to_json(&json!({
                    "schema_version": 1,
                    "volume": volume,
                    "detached": deleted,
                }));
            }
            if Instant::now() >= deadline {
                return Err(ApiError::new(
                    ErrorCode::Timeout,
                    format!(
                        "volume {volume} still attached locally after {}s (is the controller reachable?)",
                        timeout.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// An access mode as the local API and its callers spell it; `read_only`
/// decides for an UNSPECIFIED (or unknown) mode.
fn mode_word(mode: i32, read_only: bool) -> &'static str {
    match AccessMode::try_from(mode) {
        Ok(AccessMode::ReadOnly) => "read-only",
        Ok(AccessMode::ReadWriteMany) => "read-write-many",
        Ok(AccessMode::ReadWrite) => "read-write",
        _ if read_only => "read-only",
        _ => "read-write",
    }
}

/// The mode an attach asks for: `access_mode` when given (it wins), else
/// `read_only`.
fn requested_mode(read_only: bool, access_mode: Option<&str>) -> Result<AccessMode, ApiError> {
    match access_mode {
        None if read_only => Ok(AccessMode::ReadOnly),
        None => Ok(AccessMode::ReadWrite),
        Some("read-write" | "rw") if !read_only => Ok(AccessMode::ReadWrite),
        Some("read-only" | "ro") => Ok(AccessMode::ReadOnly),
        Some("read-write-many" | "rwx") if !read_only => Ok(AccessMode::ReadWriteMany),
        Some(m) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("access_mode {m:?}: use read-write, read-only or read-write-many (and read_only only with read-only)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_mode_words() {
        assert_eq!(requested_mode(false, None).unwrap(), AccessMode::ReadWrite);
        assert_eq!(requested_mode(true, None).unwrap(), AccessMode::ReadOnly);
        assert_eq!(
            requested_mode(false, Some("rwx")).unwrap(),
            AccessMode::ReadWriteMany
        );
        assert_eq!(
            requested_mode(true, Some("read-only")).unwrap(),
            AccessMode::ReadOnly
        );
        assert!(requested_mode(true, Some("read-write")).is_err());
        assert!(requested_mode(false, Some("write-only")).is_err());
        assert_eq!(
            mode_word(AccessMode::ReadWriteMany as i32, false),
            "read-write-many"
        );
        assert_eq!(mode_word(0, true), "read-only");
    }

    #[test]
    fn attachment_names_are_valid_and_deterministic() {
        assert_eq!(attachment_name("scratch", "ws1"), "scratch-ws1");
        let long = "v".repeat(60);
        let a = attachment_name(&long, "workstation-7");
        assert!(a.len() <= 63, "{a}");
        assert_eq!(a, attachment_name(&long, "workstation-7"));
        assert_ne!(a, attachment_name(&long, "workstation-8"));
        ferrofab_pki::validate_name(&a).unwrap();
    }

    /// An agent API over a node certificate of a throwaway CA; `roles` as
    /// given. No controller runs: calls that need one fail fast.
    fn api(dir: &std::path::Path, roles: Vec<crate::config::Role>) -> AgentApi {
        let pki = dir.join("pki");
        ferrofab_pki::init(&pki, &ferrofab_pki::InitOptions::default()).unwrap();
        let pkidir = ferrofab_pki::PkiDir::new(&pki);
        let ca = pkidir.load_ca().unwrap();
        let id = ferrofab_pki::Identity::node("n1").unwrap();
        let validity = ferrofab_pki::Validity::from_now(Duration::from_secs(3600)).unwrap();
        ferrofab_pki::issue_to_dir(&ca, &id, validity, &pki, false).unwrap();
        let mut cfg = crate::config::AgentConfig::for_tests("n1");
        cfg.tls.ca = pkidir.ca_cert();
        cfg.tls.cert = pkidir.client_cert(&id);
        cfg.tls.key = pkidir.client_key(&id);
        cfg.state_dir = dir.join("state");
        cfg.expose_dir = dir.join("volumes");
        cfg.roles = roles;
        let client = ControllerClient::new(&cfg).unwrap();
        let shared = Arc::new(crate::shared::Shared::new_for_tests(cfg));
        AgentApi::new(shared, client)
    }

    /// `timeout_seconds` = u64::MAX used to panic the worker (overflow
    /// adding it to an Instant); it is clamped and answered normally.
    #[tokio::test]
    async fn huge_timeouts_are_clamped_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(dir.path(), Vec::new());
        for req in [
            Request::Attach {
                volume: "v".into(),
                read_only: false,
                access_mode: None,
                timeout_seconds: u64::MAX,
            },
            Request::Detach {
                volume: "v".into(),
                timeout_seconds: u64::MAX,
            },
        ] {
            let err = api.handle(req).await.unwrap_err();
            assert_eq!(err.code, ErrorCode::NotWorkstation, "{err:?}");
        }
        assert_eq!(
            clamp_timeout(u64::MAX),
            Duration::from_secs(crate::local_api::MAX_TIMEOUT_SECONDS)
        );
        assert_eq!(clamp_timeout(5), Duration::from_secs(5));
        // Even an unclamped maximum gives a deadline, not a panic.
        assert!(deadline_after(Duration::MAX) >= Instant::now());
    }
}
