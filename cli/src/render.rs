//! Rendering whole objects (`-o table|wide|name|json|yaml`).
//!
//! Kept apart from [`crate::output`], the formatting helpers every view
//! uses, so that the dependencies run one way: `output` ← `resource` ←
//! `wide` ← `render`.

use serde_json::Value;

use crate::args::Format;
use crate::output::{render_value, table};
use crate::resource::{document, Resource};

/// Renders a list of objects in `format`.
pub(crate) fn render_list<R: Resource>(items: &[R], format: Format) -> String {
    match format {
        Format::Table => {
            let rows: Vec<Vec<String>> = items.iter().map(R::row).collect();
            table(R::columns(), &rows)
        }
        Format::Wide => {
            let rows: Vec<Vec<String>> = items.iter().map(crate::wide::row).collect();
            table(&crate::wide::columns::<R>(), &rows)
        }
        Format::Name => items.iter().map(crate::wide::kind_name).collect(),
        Format::Json | Format::Yaml => {
            render_value(&Value::Array(items.iter().map(document).collect()), format)
        }
    }
}

/// Renders one object in `format`.
pub(crate) fn render_one<R: Resource>(obj: &R, format: Format) -> String {
    match format {
        Format::Table => table(R::columns(), &[obj.row()]),
        Format::Wide | Format::Name => render_list(std::slice::from_ref(obj), format),
        other => render_value(&document(obj), other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrofab_proto::v1;

    fn vol(name: &str) -> v1::Volume {
        v1::Volume {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(v1::VolumeSpec {
                tenant: "neuro".into(),
                size: "4TiB".into(),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn list_renderings() {
        let items = vec![vol("a"), vol("b")];
        let t = render_list(&items, Format::Table);
        assert!(
            t.starts_with("NAME  TENANT  SIZE  POOL  NODE  PHASE  READY  EXPIRES\n"),
            "{t}"
        );
        assert_eq!(t.lines().count(), 3);
        let j: Value = serde_json::from_str(&render_list(&items, Format::Json)).unwrap();
        assert_eq!(j[1]["metadata"]["name"], "b");
        assert_eq!(j[0]["spec"]["size"], "4TiB");
        let y = render_list(&items, Format::Yaml);
        assert!(y.starts_with("- kind: Volume\n"), "{y}");
        assert!(y.contains("    size: 4TiB\n"), "{y}");
        assert_eq!(render_list::<v1::Volume>(&[], Format::Json), "[]\n");
    }
}
