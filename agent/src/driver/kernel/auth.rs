//! DH-HMAC-CHAP on the kernel data path: whether the running kernel can
//! do it, and what the agent says when it cannot.
//!
//! Linux has in-band authentication since 6.0 (`CONFIG_NVME_AUTH`; split
//! into `CONFIG_NVME_HOST_AUTH` and `CONFIG_NVME_TARGET_AUTH` in 6.7).
//! Both sides use the `nvme-auth` module (and, from 6.7, `nvme-keyring`),
//! which nvme-core and nvmet then depend on, so a loaded module shows up
//! as a holder of `/sys/module/nvme_auth`. A kernel with the code built in
//! has no such directory; the attributes that only exist with it are
//! checked as well (`dhchap_key` in an nvmet host entry, `dhchap_secret`
//! of a fabrics controller). Debian's 6.1 kernel has neither; its 6.12
//! kernel has both.

use super::{entries, KernelPaths};

/// What the node needs for the kernel target to authenticate hosts.
pub const TARGET_NEEDS: &str = "Linux 6.0 or later built with CONFIG_NVME_TARGET_AUTH \
     (CONFIG_NVME_AUTH before 6.7), modules nvme-auth and, from 6.7, nvme-keyring loaded \
     with nvmet (e.g. Debian's linux-image-6.12)";

/// What the node needs for the kernel host to authenticate.
pub const HOST_NEEDS: &str = "Linux 6.0 or later built with CONFIG_NVME_HOST_AUTH \
     (CONFIG_NVME_AUTH before 6.7), modules nvme-auth and, from 6.7, nvme-keyring loaded \
     with nvme-fabrics (e.g. Debian's linux-image-6.12)";

/// Whether module `holder` uses the loaded `nvme-auth` module.
fn nvme_auth_held_by(paths: &KernelPaths, holder: &str) -> bool {
    paths
        .sysfs
        .join("module/nvme_auth/holders")
        .join(holder)
        .exists()
}

/// Whether nvmet can authenticate hosts.
pub fn target_supported(paths: &KernelPaths) -> bool {
    if nvme_auth_held_by(paths, "nvmet") {
        return true;
    }
    let hosts = paths.nvmet().join("hosts");
    entries(&hosts)
        .iter()
        .any(|h| hosts.join(h).join("dhchap_key").exists())
}

/// Whether the fabrics host can authenticate.
pub fn host_supported(paths: &KernelPaths) -> bool {
    if nvme_auth_held_by(paths, "nvme_core") {
        return true;
    }
    let class = paths.sysfs.join("class/nvme");
    entries(&class)
        .iter()
        .any(|c| class.join(c).join("dhchap_secret").exists())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::kernel::testing;

    #[test]
    fn support_is_read_from_module_holders_or_attributes() {
        let root = tempfile::tempdir().unwrap();
        let p = testing::paths(root.path());
        // Linux 6.1 as Debian builds it: nothing.
        assert!(!target_supported(&p));
        assert!(!host_supported(&p));
        // Modules: nvme-auth held by nvmet and nvme-core.
        let holders = p.sysfs.join("module/nvme_auth/holders");
        std::fs::create_dir_all(holders.join("nvmet")).unwrap();
        assert!(target_supported(&p));
        assert!(!host_supported(&p));
        std::fs::create_dir_all(holders.join("nvme_core")).unwrap();
        assert!(host_supported(&p));
        // Built in: the attributes only such a kernel has.
        std::fs::remove_dir_all(p.sysfs.join("module/nvme_auth")).unwrap();
        let h = p.nvmet().join("hosts/nqn.h");
        std::fs::create_dir_all(&h).unwrap();
        assert!(!target_supported(&p));
        std::fs::write(h.join("dhchap_key"), "\n").unwrap();
        assert!(target_supported(&p));
        let c = p.sysfs.join("class/nvme/nvme0");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("dhchap_secret"), "none\n").unwrap();
        assert!(host_supported(&p));
    }
}
