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
//! `ferrofab_proto::condition`, which takes anything that is `AsRef<str>`:
//! these enums, or a reason string the agent has not moved here yet.

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
    /// Why a condition set by the controller has its status.
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
        ];
        check(&reasons, Reason::ALL, Reason::from_wire);
        // And from the other side, as `c.reason == Reason::Moving` reads.
        let reason: String = "Moving".into();
        assert!(*"Moving" == Reason::Moving && reason == Reason::Moving);
    }
}
