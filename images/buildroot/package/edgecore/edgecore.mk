################################################################################
#
# edgecore
#
################################################################################

EDGECORE_VERSION = $(call qstrip,$(BR2_PACKAGE_EDGECORE_VERSION))
EDGECORE_SITE = $(call qstrip,$(BR2_PACKAGE_EDGECORE_SITE))
EDGECORE_SITE_METHOD = git
EDGECORE_LICENSE = Apache-2.0
EDGECORE_LICENSE_FILES = LICENSE
# The crate is a member of the project's workspace: built from its directory, with the
# workspace's Cargo.lock and target dir.
EDGECORE_SUBDIR = edge/edgecore
# The version is chosen in the configuration (a tag or a commit of the project), so the
# vendored tarball has no hash known in advance; edgecore.hash checks the license file.
BR_NO_CHECK_HASH_FOR += $(EDGECORE_SOURCE)

EDGECORE_FEATURES = \
	$(if $(BR2_PACKAGE_EDGECORE_EDGED),edged) \
	$(if $(BR2_PACKAGE_EDGECORE_RUNTIME_DIRECT),direct) \
	$(if $(BR2_PACKAGE_EDGECORE_METAMANAGER),metamanager) \
	$(if $(BR2_PACKAGE_EDGECORE_EVENTBUS),eventbus) \
	$(if $(BR2_PACKAGE_EDGECORE_DEVICETWIN),devicetwin)
EDGECORE_CARGO_BUILD_OPTS = \
	--no-default-features \
	--features "$(strip $(EDGECORE_FEATURES))"

# pkg-cargo.mk sets the profile from Buildroot's global options (-O2, no LTO and 16 codegen
# units by default); the package's own env comes after it and restores the project's.
ifeq ($(BR2_PACKAGE_EDGECORE_SMALL),y)
EDGECORE_CARGO_ENV = \
	CARGO_PROFILE_RELEASE_OPT_LEVEL=z \
	CARGO_PROFILE_RELEASE_LTO=true \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
endif

EDGECORE_DATA_DIR = $(call qstrip,$(BR2_PACKAGE_EDGECORE_DATA_DIR))
EDGECORE_PROFILE = $(if $(BR2_ENABLE_DEBUG),debug,release)
EDGECORE_BIN = $(@D)/target/$(RUSTC_TARGET_NAME)/$(EDGECORE_PROFILE)/edgecore

ifeq ($(BR2_PACKAGE_EDGECORE_RUNTIME_CONTAINERD),y)
EDGECORE_DEPENDENCIES += containerd
EDGECORE_CRI_ENDPOINT = unix:///run/containerd/containerd.sock
endif

ifeq ($(BR2_PACKAGE_EDGECORE_RUNTIME_DIRECT),y)
EDGECORE_DEPENDENCIES += crun
EDGECORE_RUNTIME = direct
else
EDGECORE_RUNTIME = cri
endif

# The binary cargo build made (cargo install would build it a second time), the
# defaults S99edgecore reads, and the data dir.
define EDGECORE_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(EDGECORE_BIN) $(TARGET_DIR)/usr/bin/edgecore
	$(INSTALL) -d -m 0700 $(TARGET_DIR)$(EDGECORE_DATA_DIR)
	mkdir -p $(TARGET_DIR)/etc/default
	printf 'EDGECORE_DATA_DIR="%s"\n' '$(EDGECORE_DATA_DIR)' \
		> $(TARGET_DIR)/etc/default/edgecore
endef

EDGECORE_PROVISION_CLOUD = $(call qstrip,$(BR2_PACKAGE_EDGECORE_PROVISION_CLOUD))

# First-boot enrollment (images/README.md): the fleet-wide part in the image, the token
# per device in a file, usually on the boot partition.
define EDGECORE_INSTALL_PROVISIONING
	mkdir -p $(TARGET_DIR)/etc/edgecore
	printf '{\n  "cloud": "%s",\n  "token_file": "%s",\n  "node_name_from": "%s",\n  "node_name_prefix": "%s",\n  "cri_endpoint": "%s",\n  "runtime": "%s"\n}\n' \
		'$(EDGECORE_PROVISION_CLOUD)' \
		'$(call qstrip,$(BR2_PACKAGE_EDGECORE_PROVISION_TOKEN_FILE))' \
		'$(call qstrip,$(BR2_PACKAGE_EDGECORE_PROVISION_NODE_NAME_FROM))' \
		'$(call qstrip,$(BR2_PACKAGE_EDGECORE_PROVISION_NODE_NAME_PREFIX))' \
		'$(EDGECORE_CRI_ENDPOINT)' \
		'$(EDGECORE_RUNTIME)' \
		> $(TARGET_DIR)/etc/edgecore/provision.json
endef

ifneq ($(EDGECORE_PROVISION_CLOUD),)
EDGECORE_POST_INSTALL_TARGET_HOOKS += EDGECORE_INSTALL_PROVISIONING
endif

define EDGECORE_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(EDGECORE_PKGDIR)/S99edgecore \
		$(TARGET_DIR)/etc/init.d/S99edgecore
endef

# The project's own unit, from the source tree (the manual prefers it to a copy here).
define EDGECORE_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/images/systemd/edgecore.service \
		$(TARGET_DIR)/usr/lib/systemd/system/edgecore.service
endef

define EDGECORE_PERMISSIONS
	$(EDGECORE_DATA_DIR) d 0700 0 0 - - - - -
endef

$(eval $(cargo-package))
