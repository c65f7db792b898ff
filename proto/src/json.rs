//! The JSON shape of the object messages (feature `json`): what the
//! controller's HTTP/JSON API reads and writes. Field names are the
//! protobuf field names; timestamps are RFC 3339 strings and enum fields
//! the enum value's name (`VOLUME_PHASE_READY`), as in the protobuf JSON
//! mapping, so a JSON client never has to know the wire numbers. Enum
//! fields also accept the number on input; an unknown name is an error
//! that names the value.

/// `Option<Timestamp>` as an RFC 3339 string (or null).
pub mod timestamp {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;

    pub fn serialize<S: Serializer>(
        t: &Option<prost_types::Timestamp>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            None => s.serialize_none(),
            Some(t) => {
                let text = time::OffsetDateTime::from_unix_timestamp(t.seconds)
                    .ok()
                    .and_then(|d| d.format(&Rfc3339).ok())
                    .unwrap_or_else(|| crate::time::rfc3339(t.seconds));
                s.serialize_str(&text)
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<prost_types::Timestamp>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        if text.is_empty() {
            return Ok(None);
        }
        let t = time::OffsetDateTime::parse(&text, &Rfc3339).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {e}"))
        })?;
        Ok(Some(prost_types::Timestamp {
            seconds: t.unix_timestamp(),
            nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
        }))
    }
}

/// A JSON enum value: its name, or (on input) its number.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum NameOrNumber {
    Name(String),
    Number(i32),
}

/// One `with` module per enum: the value's name out, the name or the
/// number in.
macro_rules! enum_json {
    ($module:ident, $ty:ty) => {
        pub mod $module {
            use serde::{Deserialize, Deserializer, Serializer};

            pub fn serialize<S: Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
                match <$ty>::try_from(*v) {
                    Ok(e) => s.serialize_str(e.as_str_name()),
                    Err(_) => s.serialize_i32(*v),
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
                super::parse(super::NameOrNumber::deserialize(d)?, |n| {
                    <$ty>::from_str_name(n).map(|e| e as i32)
                })
                .map_err(serde::de::Error::custom)
            }
        }
    };
}

fn parse(v: NameOrNumber, from_name: impl Fn(&str) -> Option<i32>) -> Result<i32, String> {
    match v {
        NameOrNumber::Number(n) => Ok(n),
        NameOrNumber::Name(n) => from_name(&n).ok_or_else(|| format!("unknown value {n:?}")),
    }
}

enum_json!(condition_status, crate::v1::ConditionStatus);
enum_json!(severity, crate::v1::Severity);
enum_json!(backing_kind, crate::v1::BackingKind);
enum_json!(reclaim_policy, crate::v1::ReclaimPolicy);
enum_json!(expiry_action, crate::v1::ExpiryAction);
enum_json!(volume_phase, crate::v1::VolumePhase);
enum_json!(access_mode, crate::v1::AccessMode);
enum_json!(attachment_phase, crate::v1::AttachmentPhase);

/// `repeated NodeRole`: a list of names.
pub mod node_roles {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::v1::NodeRole;

    pub fn serialize<S: Serializer>(v: &[i32], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for r in v {
            match NodeRole::try_from(*r) {
                Ok(e) => seq.serialize_element(e.as_str_name())?,
                Err(_) => seq.serialize_element(r)?,
            }
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<i32>, D::Error> {
        Vec::<super::NameOrNumber>::deserialize(d)?
            .into_iter()
            .map(|v| super::parse(v, |n| NodeRole::from_str_name(n).map(|e| e as i32)))
            .collect::<Result<_, _>>()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use crate::v1;

    #[test]
    fn volume_round_trips_through_json_with_names_and_times() {
        let v = v1::Volume {
            metadata: Some(v1::ObjectMeta {
                name: "scratch".into(),
                creation_timestamp: Some(prost_types::Timestamp {
                    seconds: 1_800_000_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            spec: Some(v1::VolumeSpec {
                tenant: "lab".into(),
                size: "1GiB".into(),
                expiry_action: v1::ExpiryAction::Delete as i32,
                ..Default::default()
            }),
            status: Some(v1::VolumeStatus {
                phase: v1::VolumePhase::Ready as i32,
                ..Default::default()
            }),
        };
        let j = serde_json::to_value(&v).expect("serialize");
        assert_eq!(j["spec"]["expiry_action"], "EXPIRY_ACTION_DELETE");
        assert_eq!(j["status"]["phase"], "VOLUME_PHASE_READY");
        assert_eq!(j["metadata"]["creation_timestamp"], "2027-01-15T08:00:00Z");
        let back: v1::Volume = serde_json::from_value(j).expect("deserialize");
        assert_eq!(back, v);
        // Missing fields take their protobuf defaults; numbers are accepted.
        let w: v1::Volume =
            serde_json::from_str(r#"{"spec":{"tenant":"t","expiry_action":2}}"#).expect("sparse");
        assert_eq!(w.spec.expect("spec").expiry_action, 2);
        let e = serde_json::from_str::<v1::Volume>(r#"{"status":{"phase":"NOPE"}}"#)
            .expect_err("unknown name");
        assert!(e.to_string().contains("NOPE"), "{e}");
    }
}
