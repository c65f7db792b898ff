//! The actions callers perform: one name per RPC, used in refusals
//! ("tenant a may not DeleteVolume ..."), in logs and as the `method`
//! label of the API latency metric. An enum rather than free strings, so a
//! typo cannot create a new label value or a refusal naming no real call.

use ferrofab_proto::v1::Kind;

macro_rules! actions {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// One RPC (of AdminService, AgentService or DebugService).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $($(#[$doc])* $name,)*
        }

        impl Action {
            /// Every action, for lookups by name.
            pub const ALL: &'static [Action] = &[$(Action::$name,)*];

            /// The RPC's name as the proto spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$name => stringify!($name),)*
                }
            }
        }
    };
}

actions! {
    CreateNode, GetNode, ListNodes, UpdateNode, DeleteNode, WatchNodes,
    CreatePool, GetPool, ListPools, UpdatePool, DeletePool, WatchPools,
    CreateVolume, GetVolume, ListVolumes, UpdateVolume, DeleteVolume, WatchVolumes,
    CreateAttachment, GetAttachment, ListAttachments, UpdateAttachment, DeleteAttachment,
    WatchAttachments,
    CreateTenant, GetTenant, ListTenants, UpdateTenant, DeleteTenant, WatchTenants,
    Apply, CreateBootstrapToken, GetDesiredState, GetServerInfo, RotateNodeKey,
    ListEvents, WatchEvents,
    CreateApiToken, ListApiTokens, RevokeApiToken,
    Enroll, WatchDesiredState, ReportStatus, Renew,
    AdvanceClock,
    /// A delete of an unspecified kind (Apply's refusal of a bad step).
    Delete,
}

/// The gRPC services whose calls are timed (`api_latency_seconds`), by
/// their full proto name.
const ADMIN_SERVICE: &str = "ferrofab.v1.AdminService";
const AGENT_SERVICE: &str = "ferrofab.v1.AgentService";

impl Action {
    /// The RPC that deletes an object of `kind`, for refusals.
    pub fn delete(kind: Kind) -> Self {
        match kind {
            Kind::Node => Self::DeleteNode,
            Kind::Pool => Self::DeletePool,
            Kind::Tenant => Self::DeleteTenant,
            Kind::Volume => Self::DeleteVolume,
            Kind::Attachment => Self::DeleteAttachment,
            Kind::Unspecified => Self::Delete,
        }
    }

    /// The action a gRPC request path (`/package.Service/Method`) calls,
    /// when its latency is recorded: every AdminService call and the
    /// unary AgentService calls (a desired-state stream lives for hours;
    /// its duration says nothing about latency). Unknown paths give
    /// `None`, so a client cannot grow the metric's label set.
    pub fn timed_rpc(path: &str) -> Option<Self> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let action = Self::ALL.iter().copied().find(|a| a.as_str() == method)?;
        let timed = match service {
            ADMIN_SERVICE => action.is_admin_rpc(),
            AGENT_SERVICE => matches!(action, Self::Enroll | Self::Renew | Self::ReportStatus),
            _ => false,
        };
        timed.then_some(action)
    }

    /// Whether the action creates an object (else it changes one).
    pub fn is_create(self) -> bool {
        self.as_str().starts_with("Create")
    }

    fn is_admin_rpc(self) -> bool {
        !matches!(
            self,
            Self::Enroll
                | Self::WatchDesiredState
                | Self::ReportStatus
                | Self::Renew
                | Self::AdvanceClock
                | Self::Delete
        )
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_paths_are_the_ones_timed_before() {
        let cases = [
            (
                "/ferrofab.v1.AdminService/CreateVolume",
                Some(Action::CreateVolume),
            ),
            (
                "/ferrofab.v1.AdminService/GetServerInfo",
                Some(Action::GetServerInfo),
            ),
            (
                "/ferrofab.v1.AdminService/WatchNodes",
                Some(Action::WatchNodes),
            ),
            ("/ferrofab.v1.AgentService/Enroll", Some(Action::Enroll)),
            (
                "/ferrofab.v1.AgentService/ReportStatus",
                Some(Action::ReportStatus),
            ),
            ("/ferrofab.v1.AgentService/Renew", Some(Action::Renew)),
            ("/ferrofab.v1.AgentService/WatchDesiredState", None),
            ("/ferrofab.v1.DebugService/AdvanceClock", None),
            ("/ferrofab.v1.AdminService/Enroll", None),
            ("/ferrofab.v1.AdminService/NoSuchCall", None),
            ("/grpc.health.v1.Health/Check", None),
            ("", None),
            ("/", None),
        ];
        for (path, want) in cases {
            assert_eq!(Action::timed_rpc(path), want, "{path}");
        }
    }

    #[test]
    fn names_are_the_proto_names() {
        assert_eq!(
            Action::CreateBootstrapToken.to_string(),
            "CreateBootstrapToken"
        );
        assert_eq!(Action::delete(Kind::Pool), Action::DeletePool);
        assert_eq!(Action::delete(Kind::Unspecified).as_str(), "Delete");
    }
}
