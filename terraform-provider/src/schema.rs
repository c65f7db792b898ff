//! Schema descriptions: one definition per resource, turned both into the
//! protocol's Schema message and into the cty type used to decode values.

use std::collections::BTreeMap;

use crate::pb;
use crate::value::Type;

/// Who sets an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Required,
    Optional,
    /// Set by the provider only.
    Computed,
    /// Set in configuration or else by the provider (server default).
    OptionalComputed,
}

#[derive(Debug, Clone)]
pub struct Attr {
    pub name: &'static str,
    pub ty: Type,
    pub mode: Mode,
    pub sensitive: bool,
    pub description: &'static str,
}

/// A block: attributes plus nested single blocks (`timeouts`).
#[derive(Debug, Clone, Default)]
pub struct Block {
    pub attrs: Vec<Attr>,
    pub blocks: Vec<(&'static str, Block)>,
    pub description: &'static str,
}

pub fn attr(name: &'static str, ty: Type, mode: Mode, description: &'static str) -> Attr {
    Attr {
        name,
        ty,
        mode,
        sensitive: false,
        description,
    }
}

impl Attr {
    pub fn sensitive(mut self) -> Attr {
        self.sensitive = true;
        self
    }
}

impl Block {
    /// The object type of a value of this block; a nested single block is an
    /// object-typed attribute that is null when the block is absent.
    pub fn value_type(&self) -> Type {
        let mut m: BTreeMap<String, Type> = self
            .attrs
            .iter()
            .map(|a| (a.name.to_owned(), a.ty.clone()))
            .collect();
        for (name, b) in &self.blocks {
            m.insert((*name).to_owned(), b.value_type());
        }
        Type::Object(m)
    }

    pub fn to_proto(&self) -> pb::schema::Block {
        pb::schema::Block {
            version: 0,
            attributes: self.attrs.iter().map(attr_proto).collect(),
            block_types: self
                .blocks
                .iter()
                .map(|(name, b)| pb::schema::NestedBlock {
                    type_name: (*name).to_owned(),
                    block: Some(b.to_proto()),
                    nesting: pb::schema::nested_block::NestingMode::Single as i32,
                    min_items: 0,
                    max_items: 0,
                })
                .collect(),
            description: self.description.to_owned(),
            description_kind: pb::StringKind::Markdown as i32,
            deprecated: false,
        }
    }

    pub fn schema(&self) -> pb::Schema {
        pb::Schema {
            version: 0,
            block: Some(self.to_proto()),
        }
    }
}

fn attr_proto(a: &Attr) -> pb::schema::Attribute {
    pb::schema::Attribute {
        name: a.name.to_owned(),
        r#type: a.ty.json().to_string().into_bytes(),
        nested_type: None,
        description: a.description.to_owned(),
        required: a.mode == Mode::Required,
        optional: matches!(a.mode, Mode::Optional | Mode::OptionalComputed),
        computed: matches!(a.mode, Mode::Computed | Mode::OptionalComputed),
        sensitive: a.sensitive,
        description_kind: pb::StringKind::Markdown as i32,
        deprecated: false,
    }
}

/// The `timeouts { create = "10m" ... }` block shared by resources that wait.
pub fn timeouts_block(ops: &[&'static str]) -> Block {
    Block {
        attrs: ops
            .iter()
            .map(|op| {
                attr(
                    op,
                    Type::String,
                    Mode::Optional,
                    "How long to wait, as a duration such as `30s`, `10m` or `1h`.",
                )
            })
            .collect(),
        blocks: vec![],
        description: "How long apply waits for the object to become Ready (or gone).",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_block_is_an_object_attribute_of_the_value_type() {
        let b = Block {
            attrs: vec![attr("name", Type::String, Mode::Required, "")],
            blocks: vec![("timeouts", timeouts_block(&["create"]))],
            description: "",
        };
        let Type::Object(m) = b.value_type() else {
            panic!("object expected")
        };
        assert_eq!(m["name"], Type::String);
        assert!(matches!(&m["timeouts"], Type::Object(t) if t.contains_key("create")));
        let p = b.to_proto();
        assert_eq!(p.attributes[0].r#type, b"\"string\"");
        assert!(p.attributes[0].required);
        assert_eq!(p.block_types[0].type_name, "timeouts");
    }
}
