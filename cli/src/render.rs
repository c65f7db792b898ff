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
    use crate::output::now_seconds;
    use ferrofab_proto::v1;

    fn vol(name: &str) -> v1::Volume {
        v1::Volume {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                labels: [("team".to_owned(), "neuro".to_owned())].into(),
                creation_timestamp: Some(prost_types::Timestamp {
                    seconds: now_seconds() - 3 * 86_400,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            spec: Some(v1::VolumeSpec {
                tenant: "neuro".into(),
                size: "4TiB".into(),
                block_size: 4096,
                ..Default::default()
            }),
            status: Some(v1::VolumeStatus {
                subsystem_nqn: "nqn.x:volume:1".into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn wide_adds_columns_and_name_prints_kind_slash_name() {
        let items = vec![vol("a"), vol("b")];
        let t = render_list(&items, Format::Wide);
        let header = t.lines().next().unwrap();
        assert!(
            header.starts_with("NAME  TENANT  SIZE")
                && header.ends_with("BLOCK  SUBSYSTEM NQN   BACKING PATH  AGE  LABELS"),
            "{t}"
        );
        let first = t.lines().nth(1).unwrap();
        assert!(first.contains("4096"), "{first}");
        assert!(first.contains("nqn.x:volume:1"), "{first}");
        assert!(first.ends_with("3d   team=neuro"), "{first}");
        assert_eq!(render_list(&items, Format::Name), "volume/a\nvolume/b\n");
        assert_eq!(render_one(&items[0], Format::Name), "volume/a\n");
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
