//! The words of status conditions: their types (`Ready`, `Connected`, …)
//! and machine-readable reasons (`NoHeartbeat`, `Moving`, …).
//!
//! Conditions travel as strings in the API (clients, `ferrofab wait`, the
//! Terraform provider and scripts match on them), so each enum's
//! [`as_str`](Reason::as_str) is exactly the string on the wire and must
//! never change. The enums exist so that the code that *sets* a condition
//! cannot misspell one, and so that the full list is in one place.
//!
//! The `Condition` message itself and the builders that fill it live in
//! `ferrofab_proto::condition`, which takes anything that is `AsRef<str>`.

use std::fmt;

/// Declares a string enum: `as_str`, `ALL`, `Display`, `AsRef<str>` and a
/// parser for the same strings.
macro_rules! string_enum {
    ($(#[$doc:meta])* $ty:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $ty {
            $($(#[$vdoc])* $variant,)+
        }

        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)+];

            /// The string on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text,)+
                }
            }

            /// The value whose string is `s`, if any.
            pub fn from_wire(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<String> for $ty {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<$ty> for str {
            fn eq(&self, other: &$ty) -> bool {
                self == other.as_str()
            }
        }

        impl PartialEq<$ty> for String {
            fn eq(&self, other: &$ty) -> bool {
                self == other.as_str()
            }
        }
    };
}

string_enum!(
    /// What a condition is about.
    ConditionType {
        /// Nodes: the agent reports in time.
        Ready = "Ready",
        /// Volumes: the controller chose a pool.
        Placed = "Placed",
        /// Volumes: the storage node serves the export.
        Exported = "Exported",
        /// Attachments: the workstation is connected.
        Connected = "Connected",
        /// Burst volumes: the expiry is near.
        Expiring = "Expiring",
        /// Burst volumes: the expiry has passed.
        Expired = "Expired",
    }
);

string_enum!(
    /// Why a condition has its status: first the reasons the controller
    /// sets, then those of the agent.
    Reason {
        /// Ready=True: the node's agent reported status.
        AgentReporting = "AgentReporting",
        /// Ready=False: the node's agent has been silent past the timeout.
        NoHeartbeat = "NoHeartbeat",
        /// Placed=True: a pool was reserved.
        PlacedOnPool = "PlacedOnPool",
        /// Exported=False on a new volume, until its node reports.
        WaitingForStorageNode = "WaitingForStorageNode",
        /// Exported=True.
        ExportReady = "ExportReady",
        /// Exported=False: the storage node does not report the export.
        ExportNotReady = "ExportNotReady",
        /// Connected=False: the workstation is NotReady.
        WorkstationNotReady = "WorkstationNotReady",
        /// Connected=False: the attachment moves to another node.
        Moving = "Moving",
        /// Connected=True.
        HostConnected = "HostConnected",
        /// Connected=False: the workstation reports no connection.
        HostNotConnected = "HostNotConnected",
        /// Expiring=True.
        BurstAllocationExpiring = "BurstAllocationExpiring",
        /// Expired=True: detached, data kept for a while.
        Retained = "Retained",
        /// Expired=True: it will be deleted.
        DeletionScheduled = "DeletionScheduled",
        // Set by the agent (its `Problem`s), on Exported and Connected
        // conditions and in its logs.
        /// Connected=False: the device is already connected another way.
        AlreadyConnected = "AlreadyConnected",
        /// Exported=False: the backing file is in use.
        BackingFileBusy = "BackingFileBusy",
        /// Exported=False: the backing file or its ownership marker failed otherwise.
        BackingFileError = "BackingFileError",
        /// Exported=False: the backing file created earlier is gone.
        BackingFileMissing = "BackingFileMissing",
        /// Exported=False: the backing file was replaced behind the agent's back.
        BackingFileReplaced = "BackingFileReplaced",
        /// Exported=False: the backing path is outside every configured pool.
        BackingPathOutsidePools = "BackingPathOutsidePools",
        /// Connected=False: connecting failed otherwise.
        ConnectFailed = "ConnectFailed",
        /// Connected=False: the target refused the Connect.
        ConnectRefused = "ConnectRefused",
        /// Deleting the backing file failed.
        DeleteFailed = "DeleteFailed",
        /// Disconnecting failed.
        DisconnectFailed = "DisconnectFailed",
        /// Exported=False: creating the export failed.
        ExportFailed = "ExportFailed",
        /// Connected=False: exposing the namespace failed.
        ExposureFailed = "ExposureFailed",
        /// Connected=False: the exposure (FUSE mount or kernel) is unavailable.
        ExposureUnavailable = "ExposureUnavailable",
        /// Exported=False: growing the backing file failed.
        GrowFailed = "GrowFailed",
        /// Exported=False: the namespace is still smaller than the volume.
        Growing = "Growing",
        /// Connected=False: the data-path holder speaks another protocol.
        HolderOutdated = "HolderOutdated",
        /// Connected=False: the holder refused for a reason of its own.
        HolderRefused = "HolderRefused",
        /// Connected=False: no holder answers and none could be started.
        HolderUnavailable = "HolderUnavailable",
        /// Connected=False: the target does not allow this host.
        HostNotAllowed = "HostNotAllowed",
        /// Exported=False: the allowed hosts could not be applied.
        HostsNotApplied = "HostsNotApplied",
        /// Exported=False: the export's authentication keys could not be applied.
        AuthNotApplied = "AuthNotApplied",
        /// Connected=False: DH-HMAC-CHAP with the storage node failed.
        AuthenticationFailed = "AuthenticationFailed",
        /// Connected=False: re-authenticating a live connection with a new key failed.
        ReauthenticationFailed = "ReauthenticationFailed",
        /// Connected=False: the export requires authentication and this
        /// workstation's key has not arrived yet (the controller issues it
        /// once the workstation reported that it can authenticate).
        KeyPending = "KeyPending",
        /// Exported=False or Connected=False: authentication is wanted (a
        /// key, or the export requires it) but the kernel data path
        /// cannot do DH-HMAC-CHAP; the message names the kernel and
        /// modules needed.
        AuthUnsupported = "AuthUnsupported",
        /// Exported=False: the allowed hosts differ from the desired ones.
        HostsOutOfSync = "HostsOutOfSync",
        /// Connected=False: the holder runs with another host identity.
        IdentityMismatch = "IdentityMismatch",
        /// Exported=False: the export lacks a part (port, namespace, link).
        IncompleteExport = "IncompleteExport",
        /// Connected=False: the connection in the desired state is invalid.
        InvalidConnection = "InvalidConnection",
        /// Connected=False: the exposure name is not one safe file name.
        InvalidExposureName = "InvalidExposureName",
        /// Exported=False: an NQN is not one safe file name.
        InvalidName = "InvalidName",
        /// The kernel module the driver needs is not loaded.
        KernelModuleMissing = "KernelModuleMissing",
        /// The namespace is not there.
        NamespaceMissing = "NamespaceMissing",
        /// Connected=False: not connected.
        NotConnected = "NotConnected",
        /// Exported=False: the subsystem is not exported.
        NotExported = "NotExported",
        /// Recording which files or devices the agent owns failed.
        OwnershipRecordFailed = "OwnershipRecordFailed",
        /// Exported=False: the pool directory does not exist.
        PoolDirectoryMissing = "PoolDirectoryMissing",
        /// Exported=False: the pool directory is full.
        PoolFull = "PoolFull",
        /// Removing is refused while something still uses the object.
        RemovalBlocked = "RemovalBlocked",
        /// Removing the export failed.
        RemovalFailed = "RemovalFailed",
        /// Removing has started and not finished.
        RemovalPending = "RemovalPending",
        /// Exported=False: the subsystem exists with other settings.
        SubsystemConflict = "SubsystemConflict",
        /// Connected=False: the target cannot be reached.
        TargetUnreachable = "TargetUnreachable",
        /// Connected=False: the namespace is not the volume's (another UUID).
        WrongNamespace = "WrongNamespace",
    }
);

string_enum!(
    /// Why an event was recorded (`ferrofab events`): the transitions the
    /// controller notices. Warning conditions become events under their
    /// own [`Reason`].
    EventReason {
        /// The object appeared.
        Created = "Created",
        /// The object is gone.
        Deleted = "Deleted",
        /// A volume got a pool.
        Placed = "Placed",
        /// A volume's storage node serves its export.
        Exported = "Exported",
        /// An attachment's workstation is connected.
        Attached = "Attached",
        /// An attachment's workstation is no longer connected.
        Detached = "Detached",
        /// A volume grew.
        Grown = "Grown",
        /// A burst volume passed its expiry.
        Expired = "Expired",
        /// A create or update was refused (quota, capacity, precondition).
        Refused = "Refused",
        /// A node's Ready condition turned False.
        NodeNotReady = "NodeNotReady",
        /// A node's Ready condition turned True again.
        NodeReady = "NodeReady",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks one enum against the table of its wire strings.
    fn check<T>(table: &[(T, &str)], all: &[T], from_wire: fn(&str) -> Option<T>)
    where
        T: Copy + fmt::Debug + fmt::Display + PartialEq + AsRef<str> + PartialEq<str>,
        T: PartialEq<String>,
    {
        assert_eq!(table.len(), all.len(), "every value is in the table");
        for &(v, s) in table {
            let owned: String = s.into();
            assert_eq!(v.as_ref(), s);
            assert_eq!(v.to_string(), s);
            assert_eq!(from_wire(s), Some(v));
            let (eq_str, eq_string) = (<T as PartialEq<str>>::eq, <T as PartialEq<String>>::eq);
            assert!(eq_str(&v, s) && eq_string(&v, &owned), "{v:?} == {s:?}");
        }
        assert_eq!(from_wire("nope"), None);
    }

    /// The strings clients match on: a change here is a breaking API change.
    #[test]
    fn wire_strings_are_unchanged() {
        let types = [
            (ConditionType::Ready, "Ready"),
            (ConditionType::Placed, "Placed"),
            (ConditionType::Exported, "Exported"),
            (ConditionType::Connected, "Connected"),
            (ConditionType::Expiring, "Expiring"),
            (ConditionType::Expired, "Expired"),
        ];
        check(&types, ConditionType::ALL, ConditionType::from_wire);
        let reasons = [
            (Reason::AgentReporting, "AgentReporting"),
            (Reason::NoHeartbeat, "NoHeartbeat"),
            (Reason::PlacedOnPool, "PlacedOnPool"),
            (Reason::WaitingForStorageNode, "WaitingForStorageNode"),
            (Reason::ExportReady, "ExportReady"),
            (Reason::ExportNotReady, "ExportNotReady"),
            (Reason::WorkstationNotReady, "WorkstationNotReady"),
            (Reason::Moving, "Moving"),
            (Reason::HostConnected, "HostConnected"),
            (Reason::HostNotConnected, "HostNotConnected"),
            (Reason::BurstAllocationExpiring, "BurstAllocationExpiring"),
            (Reason::Retained, "Retained"),
            (Reason::DeletionScheduled, "DeletionScheduled"),
            (Reason::AlreadyConnected, "AlreadyConnected"),
            (Reason::BackingFileBusy, "BackingFileBusy"),
            (Reason::BackingFileError, "BackingFileError"),
            (Reason::BackingFileMissing, "BackingFileMissing"),
            (Reason::BackingFileReplaced, "BackingFileReplaced"),
            (Reason::BackingPathOutsidePools, "BackingPathOutsidePools"),
            (Reason::ConnectFailed, "ConnectFailed"),
            (Reason::ConnectRefused, "ConnectRefused"),
            (Reason::DeleteFailed, "DeleteFailed"),
            (Reason::DisconnectFailed, "DisconnectFailed"),
            (Reason::ExportFailed, "ExportFailed"),
            (Reason::ExposureFailed, "ExposureFailed"),
            (Reason::ExposureUnavailable, "ExposureUnavailable"),
            (Reason::GrowFailed, "GrowFailed"),
            (Reason::Growing, "Growing"),
            (Reason::HolderOutdated, "HolderOutdated"),
            (Reason::HolderRefused, "HolderRefused"),
            (Reason::HolderUnavailable, "HolderUnavailable"),
            (Reason::HostNotAllowed, "HostNotAllowed"),
            (Reason::HostsNotApplied, "HostsNotApplied"),
            (Reason::AuthNotApplied, "AuthNotApplied"),
            (Reason::AuthenticationFailed, "AuthenticationFailed"),
            (Reason::ReauthenticationFailed, "ReauthenticationFailed"),
            (Reason::KeyPending, "KeyPending"),
            (Reason::AuthUnsupported, "AuthUnsupported"),
            (Reason::HostsOutOfSync, "HostsOutOfSync"),
            (Reason::IdentityMismatch, "IdentityMismatch"),
            (Reason::IncompleteExport, "IncompleteExport"),
            (Reason::InvalidConnection, "InvalidConnection"),
            (Reason::InvalidExposureName, "InvalidExposureName"),
            (Reason::InvalidName, "InvalidName"),
            (Reason::KernelModuleMissing, "KernelModuleMissing"),
            (Reason::NamespaceMissing, "NamespaceMissing"),
            (Reason::NotConnected, "NotConnected"),
            (Reason::NotExported, "NotExported"),
            (Reason::OwnershipRecordFailed, "OwnershipRecordFailed"),
            (Reason::PoolDirectoryMissing, "PoolDirectoryMissing"),
            (Reason::PoolFull, "PoolFull"),
            (Reason::RemovalBlocked, "RemovalBlocked"),
            (Reason::RemovalFailed, "RemovalFailed"),
            (Reason::RemovalPending, "RemovalPending"),
            (Reason::SubsystemConflict, "SubsystemConflict"),
            (Reason::TargetUnreachable, "TargetUnreachable"),
            (Reason::WrongNamespace, "WrongNamespace"),
        ];
        check(&reasons, Reason::ALL, Reason::from_wire);
        // And from the other side, as `c.reason == Reason::Moving` reads.
        let reason: String = "Moving".into();
        assert!(*"Moving" == Reason::Moving && reason == Reason::Moving);
    }
}
