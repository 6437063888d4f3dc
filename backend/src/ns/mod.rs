//! The `ns` wall: containers as Linux namespaces, cgroups, capabilities and seccomp, sharing the
//! host kernel (what runc and crun do), built on `moat-sandbox`.

pub mod check;
