################################################################################
#
# edge-mqtt
#
################################################################################

# Built from edgecore's source, at the same version.
EDGE_MQTT_VERSION = $(call qstrip,$(BR2_PACKAGE_EDGECORE_VERSION))
EDGE_MQTT_SITE = $(call qstrip,$(BR2_PACKAGE_EDGECORE_SITE))
EDGE_MQTT_SITE_METHOD = git
EDGE_MQTT_LICENSE = Apache-2.0
EDGE_MQTT_LICENSE_FILES = LICENSE
EDGE_MQTT_SUBDIR = edge/mqtt-cli
# Its version is edgecore's option: edge-mqtt.hash checks the license file only.
BR_NO_CHECK_HASH_FOR += $(EDGE_MQTT_SOURCE)

ifeq ($(BR2_PACKAGE_EDGE_MQTT_TLS),)
EDGE_MQTT_CARGO_BUILD_OPTS = --no-default-features
endif

# As edgecore.mk: the project's size profile over Buildroot's global one.
ifeq ($(BR2_PACKAGE_EDGECORE_SMALL),y)
EDGE_MQTT_CARGO_ENV = \
	CARGO_PROFILE_RELEASE_OPT_LEVEL=z \
	CARGO_PROFILE_RELEASE_LTO=true \
	CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1
endif

EDGE_MQTT_PROFILE = $(if $(BR2_ENABLE_DEBUG),debug,release)

define EDGE_MQTT_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 \
		$(@D)/target/$(RUSTC_TARGET_NAME)/$(EDGE_MQTT_PROFILE)/edge-mqtt \
		$(TARGET_DIR)/usr/bin/edge-mqtt
endef

$(eval $(cargo-package))
