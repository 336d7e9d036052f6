//! System tests on emulated gateways: the cross-built edgecore boots in a 64 MB QEMU VM with a
//! Debian kernel and a busybox initramfs, joins a cloudcore on the host through QEMU's
//! user-mode network, serves a device twin through its embedded broker, and reports what memory
//! it used and left.
//!
//! - [`debian`] fetches and caches kernels, modules and busybox with apt-get;
//! - [`initramfs`] writes the cpio archive the VM boots from;
//! - [`vm`] runs QEMU, captures the serial console and kills the VM by PID;
//! - [`scenario`] is the whole guest-and-host run, shared by the tests and the footprint report;
//! - [`crun`] and [`pod`]: a pod from the cloud on edgecore's daemonless runtime in the VM.

#![forbid(unsafe_code)]

pub mod crun;
pub mod debian;
pub mod initramfs;
pub mod pod;
pub mod scenario;
pub mod vm;

/// A guest architecture: its Debian packages, its QEMU and the Rust target edgecore is built for.
#[derive(Debug, Clone, Copy)]
pub struct Arch {
    /// Debian architecture name.
    pub debian: &'static str,
    /// The metapackage pointing at the current generic kernel.
    pub kernel_meta: &'static str,
    pub qemu: &'static str,
    pub cpu: &'static str,
    pub rust_target: &'static str,
}

pub const ARM64: Arch = Arch {
    debian: "arm64",
    kernel_meta: "linux-image-arm64",
    qemu: "qemu-system-aarch64",
    cpu: "cortex-a53",
    rust_target: "aarch64-unknown-linux-musl",
};

pub const ARMHF: Arch = Arch {
    debian: "armhf",
    kernel_meta: "linux-image-armmp",
    qemu: "qemu-system-arm",
    cpu: "cortex-a15",
    rust_target: "armv7-unknown-linux-gnueabihf",
};

/// Modules a guest may load, in order: its network (virtio-mmio transport, virtio-net with its
/// failover dependencies; the rest of virtio is built into Debian's kernels), then what the pod
/// scenario adds: overlayfs (a container's root filesystem on the direct runtime), virtio-blk
/// and ext4 with the crc32c it loads at mount (its disk). Each scenario loads a prefix, through [`NET_MODULE`] or all.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_net",
    "overlay",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
];

/// The last module the network needs: the twin scenario loads the modules through it.
pub const NET_MODULE: &str = "virtio_net";

/// Memory of every test VM. Debian's generic kernels need more than 32 MB; 64 MB is the
/// gateway class this project targets.
pub const VM_MEMORY_MB: u32 = 64;
