//! The demo layout: written to DIR/layout.toml and applied once, on the
//! first run.

use anyhow::Context as _;
use ferrofab_proto::v1::ApplyRequest;
use tracing::info;

use super::paths::{path_text, write_atomic, Paths};
use super::state::DevState;
use super::{POOL, STORAGE_NODE, WORKSTATION_NODE};
use crate::client::{status_error, Admin};

/// The layout as a file the user can read, edit and re-apply.
pub(super) fn demo_layout(paths: &Paths) -> String {
    let pool_path = toml::Value::String(path_text(&paths.pool()));
    format!(
        r#"# The demo layout `ferrofab dev` applied on its first run. Edit and
# re-apply with: ferrofab --config client.toml apply -f layout.toml
[[tenant]]
name = "demo"
allowed_nodes = ["{WORKSTATION_NODE}"]

[[pool]]
name = "{POOL}"
node = "{STORAGE_NODE}"
backing = "directory"
path = {pool_path}
capacity = "16GiB"

[[volume]]
name = "demo-1"
tenant = "demo"
size = "1GiB"
pool = "{POOL}"

[[volume]]
name = "demo-2"
tenant = "demo"
size = "2GiB"
pool = "{POOL}"

[[attachment]]
name = "demo-1-{WORKSTATION_NODE}"
volume = "demo-1"
node = "{WORKSTATION_NODE}"
mode = "read-write"
"#
    )
}

/// Through the same parser and RPC as `ferrofab apply -f`. Only once per
/// directory: see [`DevState::layout_applied`].
pub(super) async fn apply_demo_layout(
    admin: &mut Admin,
    paths: &Paths,
    state: &mut DevState,
) -> anyhow::Result<()> {
    if state.layout_applied {
        return Ok(());
    }
    let text = demo_layout(paths);
    write_atomic(&paths.layout(), &text)?;
    let layout = crate::layout::parse(&text).context("the built-in demo layout")?;
    let resp = admin
        .apply(ApplyRequest {
            layout: Some(layout),
            dry_run: false,
            prune: false,
            prune_nodes: false,
        })
        .await
        .map_err(|s| status_error("demo layout", s))?
        .into_inner();
    info!(
        revision = resp.revision,
        objects = resp.diffs.len(),
        "demo layout applied"
    );
    state.layout_applied = true;
    state.save(paths)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn demo_layout_parses() {
        let paths = Paths {
            root: PathBuf::from("/tmp/x \"y\""),
        };
        let l = crate::layout::parse(&demo_layout(&paths)).unwrap();
        assert_eq!(l.volumes.len(), 2);
        assert_eq!(l.attachments.len(), 1);
        let pool = l.pools[0].spec.as_ref().unwrap();
        assert_eq!(
            pool.backing.as_ref().unwrap().path,
            "/tmp/x \"y\"/pools/pool-1"
        );
    }
}
