################################################################################
#
# ctrack
#
################################################################################

CTRACK_VERSION = 0.1.0
# The external tree lives inside the ctrack source tree and builds it.
# For a release tarball instead:
#   CTRACK_SITE = $(call github,<owner>,ctrack,v$(CTRACK_VERSION))
# (drop SITE_METHOD and CTRACK_CARGO_FETCH; the download step then vendors
# the crates and ctrack.hash must list ctrack-$(CTRACK_VERSION)-cargo6.tar.gz).
CTRACK_SITE = $(BR2_EXTERNAL_CTRACK_PATH)/..
CTRACK_SITE_METHOD = local
CTRACK_LICENSE = GPL-2.0+
CTRACK_LICENSE_FILES = COPYING

CTRACK_FEATURES = \
	$(if $(BR2_PACKAGE_CTRACK_WEB),web) \
	$(if $(BR2_PACKAGE_CTRACK_SYNC),sync) \
	$(if $(BR2_PACKAGE_CTRACK_WAN),wan)
CTRACK_CARGO_BUILD_OPTS = \
	--no-default-features \
	$(if $(strip $(CTRACK_FEATURES)),--features "$(strip $(CTRACK_FEATURES))")

# A local site is copied, not downloaded, so Buildroot's download step does
# not vendor the crates: fetch them into Buildroot's cargo home before the
# offline build (needs crates.io once; later builds reuse the cache).
define CTRACK_CARGO_FETCH
	cd $(@D) && $(TARGET_MAKE_ENV) $(PKG_CARGO_ENV) \
		cargo fetch --locked --manifest-path Cargo.toml
endef
CTRACK_PRE_BUILD_HOOKS += CTRACK_CARGO_FETCH

# One binary, two roles picked by its name: the daemon is /usr/sbin/ctrackd
# (what start-stop-daemon --exec and the systemd unit name) and the CLI the
# link /usr/bin/ctrack.
define CTRACK_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/$(if $(BR2_ENABLE_DEBUG),debug,release)/ctrack \
		$(TARGET_DIR)/usr/sbin/ctrackd
	mkdir -p $(TARGET_DIR)/usr/bin
	ln -sf ../sbin/ctrackd $(TARGET_DIR)/usr/bin/ctrack
	$(INSTALL) -D -m 0644 $(@D)/init/ctrackd.conf \
		$(TARGET_DIR)/etc/ctrack/ctrackd.conf
endef

# conntrack-tools' names, for scripts written for it (not with it).
define CTRACK_INSTALL_CONNTRACK_LINKS
	ln -sf ctrackd $(TARGET_DIR)/usr/sbin/conntrack
	ln -sf ctrackd $(TARGET_DIR)/usr/sbin/conntrackd
endef
ifeq ($(BR2_PACKAGE_CTRACK_CONNTRACK_LINKS),y)
CTRACK_POST_INSTALL_TARGET_HOOKS += CTRACK_INSTALL_CONNTRACK_LINKS
endif

define CTRACK_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/init/buildroot/S50ctrackd \
		$(TARGET_DIR)/etc/init.d/S50ctrackd
endef

define CTRACK_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/init/systemd/ctrackd.service \
		$(TARGET_DIR)/usr/lib/systemd/system/ctrackd.service
	$(INSTALL) -D -m 0644 $(@D)/init/systemd/ctrack-modules.conf \
		$(TARGET_DIR)/usr/lib/modules-load.d/ctrack.conf
endef

# ctnetlink with events, built in: then the nf_conntrack sysctls exist
# when S02sysctl applies /etc/sysctl.d.
define CTRACK_LINUX_CONFIG_FIXUPS
	$(call KCONFIG_ENABLE_OPT,CONFIG_NET)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NETFILTER)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NETFILTER_ADVANCED)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NETFILTER_NETLINK)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NF_CONNTRACK)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NF_CONNTRACK_EVENTS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NF_CONNTRACK_MARK)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NF_CONNTRACK_ZONES)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NF_CONNTRACK_TIMESTAMP)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NF_CONNTRACK_LABELS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NF_CT_NETLINK)
	$(call KCONFIG_ENABLE_OPT,CONFIG_NF_NAT)
endef

$(eval $(cargo-package))
