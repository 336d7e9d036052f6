SUMMARY = "Edge agent of a KubeEdge-compatible edge system"
DESCRIPTION = "edgecore enrolls with a cloud, keeps a mutual-TLS tunnel to it, \
               stores what the cloud delivers and runs pods and device twins. On \
               first boot it enrolls from a provisioning file, then removes the token."
HOMEPAGE = "https://example.invalid/edgecore"
BUGTRACKER = "https://example.invalid/edgecore/issues"
SECTION = "net"
LICENSE = "Apache-2.0"
CVE_PRODUCT = "edgecore"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

SRC_URI = "git://example.invalid/edgecore.git;protocol=https;branch=main"
SRCREV = "0000000000000000000000000000000000000000"

S = "${UNPACKDIR}/git"

inherit cargo cargo-update-recipe-crates systemd update-rc.d

# Generated from the project's Cargo.lock by scripts/yocto-crates.py (checked current by
# e2e/tests/images.rs).
require ${BPN}-crates.inc

# The crate is a member of the project's workspace.
CARGO_SRC_DIR = "edge/edgecore"

# Optional modules are cargo features; the default set is upstream's default.
CARGO_BUILD_FLAGS:append = " --no-default-features"
PACKAGECONFIG ??= "edged metamanager eventbus devicetwin"
PACKAGECONFIG[edged] = "--features edged"
PACKAGECONFIG[direct] = "--features direct,,,crun"
PACKAGECONFIG[metamanager] = "--features metamanager"
PACKAGECONFIG[eventbus] = "--features eventbus"
PACKAGECONFIG[devicetwin] = "--features devicetwin"

SYSTEMD_SERVICE:${PN} = "edgecore.service"
INITSCRIPT_NAME = "edgecore"
INITSCRIPT_PARAMS = "defaults 99"

do_install:append() {
    install -d -m 0700 ${D}${localstatedir}/lib/edgecore
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -D -m 0644 ${S}/images/systemd/edgecore.service \
            ${D}${systemd_system_unitdir}/edgecore.service
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -D -m 0755 ${S}/images/buildroot/package/edgecore/S99edgecore \
            ${D}${sysconfdir}/init.d/edgecore
    fi
}
