//! Generates the API types (prost), the gRPC service (tonic) and the
//! Kubernetes-shaped JSON mapping (pbjson) from `proto/`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "rkube/meta/v1/meta.proto",
    "rkube/core/v1/core.proto",
    "rkube/apps/v1/apps.proto",
    "rkube/autoscaling/v2/autoscaling.proto",
    "rkube/batch/v1/batch.proto",
    "rkube/policy/v1/policy.proto",
    "rkube/scheduling/v1/scheduling.proto",
    "rkube/networking/v1/networkpolicy.proto",
    "rkube/networking/v1/ingress.proto",
    "rkube/coordination/v1/coordination.proto",
    "rkube/certificates/v1/certificates.proto",
    "rkube/rbac/v1/rbac.proto",
    "rkube/storage/v1/storage.proto",
    "rkube/kubelet/v1/kubelet.proto",
    "rkube/api/v1/api.proto",
];

/// Types whose JSON shape proto3 cannot express (a bare number or string);
/// they are hand-written in this crate with the same protobuf encoding.
const EXTERN: &[(&str, &str)] = &[
    (".rkube.meta.v1.IntOrString", "crate::intstr::IntOrString"),
    (".rkube.meta.v1.Quantity", "crate::quantity::Quantity"),
    (".rkube.meta.v1.RawExtension", "crate::raw::RawExtension"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("rkube_descriptor.bin");
    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let mut builder = tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        // Sorted maps: labels, data and quantities print in a stable order.
        .btree_map(".");
    for (proto, rust) in EXTERN {
        builder = builder.extern_path(*proto, *rust);
    }
    builder.compile_protos(&protos, std::slice::from_ref(&root))?;

    let set = std::fs::read(&descriptors)?;
    let mut json = pbjson_build::Builder::new();
    json.register_descriptors(&set)?.btree_map(["."]);
    for (proto, rust) in EXTERN {
        json.extern_path(*proto, *rust);
    }
    json.exclude(EXTERN.iter().map(|(proto, _)| *proto));
    // The RPC envelope is not a Kubernetes object and needs no JSON form.
    json.build(&[
        ".rkube.meta",
        ".rkube.core",
        ".rkube.apps",
        ".rkube.autoscaling",
        ".rkube.batch",
        ".rkube.policy",
        ".rkube.scheduling",
        ".rkube.networking",
        ".rkube.coordination",
        ".rkube.certificates",
        ".rkube.rbac",
        ".rkube.storage",
    ])?;
    Ok(())
}
