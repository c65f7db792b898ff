//! The five API object kinds (Node, Pool, Volume, Attachment, Tenant) as one
//! trait, [`Object`], and the words for each [`Kind`].
//!
//! The controller (store keys, spec diffs, watch events) and the CLI (RPCs,
//! tables, readiness) each add their own trait on top; what an object *is*
//! (its kind, its metadata, its conditions) is defined once, here, beside
//! the messages it describes.

use crate::v1::{Attachment, Condition, Kind, Node, ObjectMeta, Pool, Tenant, Volume};

impl Kind {
    /// Lower-case singular, as on the command line and in messages
    /// ("volume scratch not found"); "object" for an unspecified kind.
    pub const fn noun(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Pool => "pool",
            Kind::Volume => "volume",
            Kind::Attachment => "attachment",
            Kind::Tenant => "tenant",
            Kind::Unspecified => "object",
        }
    }

    /// Capitalized, as the `kind` of a document (`Volume`).
    pub const fn title(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Pool => "Pool",
            Kind::Volume => "Volume",
            Kind::Attachment => "Attachment",
            Kind::Tenant => "Tenant",
            Kind::Unspecified => "Object",
        }
    }
}

/// What every API object has: a kind, metadata, and a status with
/// conditions and an observed generation.
pub trait Object: prost::Message + Default + Clone + PartialEq + Send + Sync + 'static {
    /// The kind of this message.
    const KIND: Kind;
    /// [`Kind::noun`] of [`Self::KIND`].
    const NOUN: &'static str = Self::KIND.noun();
    /// [`Kind::title`] of [`Self::KIND`].
    const TITLE: &'static str = Self::KIND.title();

    /// The metadata, if the message carries any.
    fn meta(&self) -> Option<&ObjectMeta>;
    /// The metadata, created empty if absent.
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    /// The status conditions (none without a status).
    fn conditions(&self) -> &[Condition];
    /// The generation the status describes (`None` without a status).
    fn observed_generation(&self) -> Option<u64>;

    /// The object's name ("" without metadata).
    fn name(&self) -> &str {
        self.meta().map_or("", |m| m.name.as_str())
    }
}

macro_rules! object_impl {
    ($ty:ty, $kind:expr) => {
        impl Object for $ty {
            const KIND: Kind = $kind;
            fn meta(&self) -> Option<&ObjectMeta> {
                self.metadata.as_ref()
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                self.metadata.get_or_insert_with(Default::default)
            }
            fn conditions(&self) -> &[Condition] {
                self.status
                    .as_ref()
                    .map_or(&[], |s| s.conditions.as_slice())
            }
            fn observed_generation(&self) -> Option<u64> {
                self.status.as_ref().map(|s| s.observed_generation)
            }
        }
    };
}

object_impl!(Node, Kind::Node);
object_impl!(Pool, Kind::Pool);
object_impl!(Volume, Kind::Volume);
object_impl!(Attachment, Kind::Attachment);
object_impl!(Tenant, Kind::Tenant);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_of_each_kind() {
        assert_eq!(Volume::NOUN, "volume");
        assert_eq!(Volume::TITLE, "Volume");
        assert_eq!(Attachment::KIND.noun(), "attachment");
        assert_eq!(Kind::Unspecified.noun(), "object");
        for (k, noun) in [
            (Node::KIND, "node"),
            (Pool::KIND, "pool"),
            (Tenant::KIND, "tenant"),
        ] {
            assert_eq!(k.noun(), noun);
            assert_eq!(k.title().to_ascii_lowercase(), noun);
        }
    }

    #[test]
    fn metadata_and_status_access() {
        let mut v = Volume::default();
        assert_eq!(v.name(), "");
        assert!(v.conditions().is_empty());
        assert_eq!(v.observed_generation(), None);
        v.meta_mut().name = "scratch".into();
        assert_eq!(v.name(), "scratch");
    }
}
