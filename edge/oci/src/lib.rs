//! OCI bundles and the OCI runtime binary that runs them, for edgecore's daemonless runtime.
//!
//! - [`bundle`]: the `config.json` of a bundle from what a container needs (args, env, user,
//!   mounts, namespaces, limits), sans-IO.
//! - [`runtime`]: `crun` (or `runc`) driven as a command: create, start, state, list, kill,
//!   delete, exec, each bounded in time.
//! - [`log`]: container output in the CRI log format (`<RFC 3339 nano> stdout F line`),
//!   the framing sans-IO and the file bounded in bytes and rotated.

pub mod bundle;
pub mod log;
pub mod runtime;

pub use bundle::{BundleSpec, Mount, Network};
pub use runtime::{OciRuntime, State, Status};
