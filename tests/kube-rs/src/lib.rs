//! Nothing: the crate is its tests (`tests/`), which drive rkube's REST face
//! with kube-rs, a real Kubernetes client from crates.io. Keeping them in
//! their own workspace member keeps kube-rs out of every other test's build.
