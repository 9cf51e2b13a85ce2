//! Packaging tests of the package files that cannot be built here: the
//! Buildroot external tree (Config.in, ctrack.mk, hashes, the SysV
//! script's style) and the OpenWrt feed package (Makefile, apk version
//! rule), checked against Cargo.toml and the source tree.

mod lab;
mod packaging;

use lab::{must, stdout};
use packaging::{assert_has, read, root};
use std::fs;
use std::process::Command;

// ---------------------------------------------------------------------------
// Buildroot external tree and OpenWrt feed package (cannot be built here)

fn cargo_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The value of a make variable assigned with `=`, `:=` or `?=`.
fn make_var(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.trim_start();
        let v = rest
            .strip_prefix(":=")
            .or_else(|| rest.strip_prefix("?="))
            .or_else(|| rest.strip_prefix('='))?;
        Some(v.trim().to_string())
    })
}

/// Lines inside `define ... endef` blocks must start with a tab (make
/// recipes; Buildroot's check-package demands it too).
fn defines_are_tab_indented(file: &str, text: &str, skip: &[&str]) {
    let mut inside: Option<&str> = None;
    for (n, l) in text.lines().enumerate() {
        if let Some(name) = l.strip_prefix("define ") {
            inside = Some(name);
            continue;
        }
        if l == "endef" {
            inside = None;
            continue;
        }
        if let Some(name) = inside {
            if skip.contains(&name) || l.is_empty() {
                continue;
            }
            assert!(
                l.starts_with('\t'),
                "{file}:{}: recipe line in `define {name}` not tab-indented: {l:?}",
                n + 1
            );
        }
    }
}

/// Paths `$(@D)/...` or `$(PKG_BUILD_DIR)/...` name in the source tree.
fn source_paths(text: &str, prefix: &str) -> Vec<String> {
    text.split(prefix)
        .skip(1)
        .map(|s| {
            s.chars()
                .take_while(|c| !c.is_whitespace() && *c != ';' && *c != '\\')
                .collect()
        })
        .filter(|p: &String| !p.contains("$(") && !p.starts_with("target/"))
        .collect()
}

fn sha256_of(rel: &str) -> String {
    let o = must(Command::new("sha256sum").arg(root().join(rel)));
    stdout(&o)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn buildroot_external_tree_is_complete() {
    let desc = read("buildroot/external.desc");
    assert!(desc.lines().any(|l| l == "name: CTRACK"), "{desc}");
    let cfg = read("buildroot/Config.in");
    assert!(cfg.contains("source \"$BR2_EXTERNAL_CTRACK_PATH/package/ctrack/Config.in\""));
    let ext = read("buildroot/external.mk");
    assert!(ext.contains("$(BR2_EXTERNAL_CTRACK_PATH)/package/*/*.mk"));

    let pcfg = read("buildroot/package/ctrack/Config.in");
    assert_has(
        "package Config.in",
        &pcfg,
        &[
            "config BR2_PACKAGE_CTRACK\n",
            "depends on BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS",
            "select BR2_PACKAGE_HOST_RUSTC",
            "config BR2_PACKAGE_CTRACK_WEB",
            "config BR2_PACKAGE_CTRACK_SYNC",
            "config BR2_PACKAGE_CTRACK_WAN",
            "config BR2_PACKAGE_CTRACK_CONNTRACK_LINKS",
            "depends on !BR2_PACKAGE_CONNTRACK_TOOLS",
        ],
    );

    let mk = read("buildroot/package/ctrack/ctrack.mk");
    assert_eq!(
        make_var(&mk, "CTRACK_VERSION").as_deref(),
        Some(cargo_version()),
        "CTRACK_VERSION must equal Cargo.toml's version"
    );
    for var in ["CTRACK_SITE", "CTRACK_LICENSE", "CTRACK_LICENSE_FILES"] {
        assert!(make_var(&mk, var).is_some(), "ctrack.mk lacks {var}");
    }
    assert_has(
        "ctrack.mk",
        &mk,
        &[
            "$(eval $(cargo-package))",
            "define CTRACK_INSTALL_INIT_SYSV",
            "/etc/init.d/S50ctrackd",
            "define CTRACK_INSTALL_INIT_SYSTEMD",
            "/usr/lib/systemd/system/ctrackd.service",
            "define CTRACK_LINUX_CONFIG_FIXUPS",
            "KCONFIG_ENABLE_OPT,CONFIG_NF_CONNTRACK)",
            "KCONFIG_ENABLE_OPT,CONFIG_NF_CT_NETLINK)",
            "KCONFIG_ENABLE_OPT,CONFIG_NF_CONNTRACK_EVENTS)",
            "--no-default-features",
            "$(TARGET_DIR)/usr/sbin/ctrackd",
        ],
    );
    defines_are_tab_indented("ctrack.mk", &mk, &[]);
    for p in source_paths(&mk, "$(@D)/") {
        assert!(root().join(&p).is_file(), "ctrack.mk installs {p}, missing");
    }
    // every license file is hashed, with its current hash
    let hash = read("buildroot/package/ctrack/ctrack.hash");
    let lic = make_var(&mk, "CTRACK_LICENSE_FILES").unwrap_or_default();
    for f in lic.split_whitespace() {
        let want = format!("sha256  {}  {f}", sha256_of(f));
        assert!(hash.contains(&want), "ctrack.hash lacks {want:?}");
    }

    // S50ctrackd follows Buildroot's check-package rules for SysV scripts
    let s50 = read("init/buildroot/S50ctrackd");
    assert!(s50.starts_with("#!/bin/sh\n"));
    assert!(s50.lines().any(|l| l == "DAEMON=\"ctrackd\""));
    assert!(s50.lines().any(|l| l == "PIDFILE=\"/var/run/$DAEMON.pid\""));
    for (n, l) in s50.lines().enumerate() {
        assert!(
            !l.starts_with(' ') && !l.starts_with("\t "),
            "S50ctrackd:{}: indent with tabs",
            n + 1
        );
        assert_eq!(l, l.trim_end(), "S50ctrackd:{}: trailing space", n + 1);
    }
    assert_has(
        "S50ctrackd",
        &s50,
        &[
            "start|stop|restart|reload)",
            "--make-pidfile",
            "--signal HUP",
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(root().join("init/buildroot/S50ctrackd"))
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    assert!(mode & 0o111 != 0, "S50ctrackd must be executable");
}

/// apk's version rule, as OpenWrt enforces it since the move to apk:
/// digits separated by dots, optional `_suffix[N]`, optional `~hash`.
fn apk_version_ok(v: &str) -> bool {
    let (v, _hash) = v.split_once('~').unwrap_or((v, ""));
    let (nums, suffix) = v.split_once('_').unwrap_or((v, ""));
    let nums_ok = !nums.is_empty()
        && nums
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let suffix_ok = suffix.is_empty()
        || ["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"]
            .iter()
            .any(|s| {
                suffix
                    .strip_prefix(s)
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            });
    nums_ok && suffix_ok
}

#[test]
fn apk_version_rule() {
    for ok in ["0.1.0", "1.2.3.4", "1.0_rc1", "2024.01.02~abc123"] {
        assert!(apk_version_ok(ok), "{ok}");
    }
    for bad in ["", "v0.1.0", "0.1.0-beta", "0.1.0-1", "1..2", "1.0_foo"] {
        assert!(!apk_version_ok(bad), "{bad}");
    }
}

#[test]
fn openwrt_feed_package_is_complete() {
    let mk = read("openwrt/ctrack/Makefile");
    assert_eq!(make_var(&mk, "PKG_NAME").as_deref(), Some("ctrack"));
    let version = make_var(&mk, "PKG_VERSION").unwrap_or_default();
    assert_eq!(
        version,
        cargo_version(),
        "PKG_VERSION must equal Cargo.toml's"
    );
    assert!(
        apk_version_ok(&version),
        "PKG_VERSION {version:?} is not apk-valid"
    );
    let release = make_var(&mk, "PKG_RELEASE").unwrap_or_default();
    assert!(
        !release.is_empty() && release.bytes().all(|b| b.is_ascii_digit()),
        "PKG_RELEASE must be a plain integer for apk: {release:?}"
    );
    for var in ["PKG_LICENSE", "PKG_LICENSE_FILES", "PKG_MAINTAINER"] {
        assert!(make_var(&mk, var).is_some(), "Makefile lacks {var}");
    }
    assert_eq!(
        make_var(&mk, "PKG_BUILD_DEPENDS").as_deref(),
        Some("rust/host")
    );
    assert_has(
        "openwrt/ctrack/Makefile",
        &mk,
        &[
            "include $(TOPDIR)/rules.mk",
            "include $(INCLUDE_DIR)/package.mk",
            "lang/rust/rust-package.mk",
            "DEPENDS:=$(RUST_ARCH_DEPENDS) +kmod-nf-conntrack-netlink",
            "define Package/ctrack/conffiles\n/etc/config/ctrack\n",
            "define Package/ctrack/install",
            "$(PKG_INSTALL_DIR)/bin/ctrack $(1)/usr/sbin/ctrackd",
            "$(LN) ../sbin/ctrackd $(1)/usr/bin/ctrack",
            "/etc/init.d/ctrack",
            "/etc/config/ctrack",
            "config CTRACK_CONNTRACK_LINKS",
            "depends on !PACKAGE_conntrack && !PACKAGE_conntrackd",
            "$(call Build/Compile/Cargo,,--no-default-features)",
            "$(eval $(call RustBinPackage,ctrack))",
            "$(eval $(call BuildPackage,ctrack))",
        ],
    );
    // the conntrack names are an option, off by default
    let links = mk
        .split("config CTRACK_CONNTRACK_LINKS")
        .nth(1)
        .unwrap_or("");
    let links = links.split("config ").next().unwrap_or(links);
    assert!(links.contains("default n"), "{links}");
    defines_are_tab_indented(
        "openwrt/ctrack/Makefile",
        &mk,
        &[
            "Package/ctrack",
            "Package/ctrack/description",
            "Package/ctrack/config",
            "Package/ctrack/conffiles",
        ],
    );
    for p in source_paths(&mk, "$(PKG_BUILD_DIR)/") {
        let optional = p.ends_with(".hotplug") || p.ends_with(".keepalived");
        assert!(
            optional || root().join(&p).is_file(),
            "the OpenWrt package installs {p}, missing"
        );
    }
    for f in make_var(&mk, "PKG_LICENSE_FILES")
        .unwrap_or_default()
        .split_whitespace()
    {
        assert!(root().join(f).is_file(), "license file {f} missing");
    }
}
