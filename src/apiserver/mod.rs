//! The Kubernetes-style API server layer (issue #8): kube-apiserver semantics on top of the
//! etcd v3 `client` trait.
//!
//! Pure building blocks live in their own modules and hold no I/O: `patch` (the PATCH verbs'
//! merge semantics), `selector` (label and field selectors), `validate` (object validation and
//! resource quantities).
//! This layer must not import anything beyond `client`, `types` and `limits`, so it runs against
//! a real etcd as well as against mnemo.

pub mod patch;
pub mod selector;
pub mod validate;
