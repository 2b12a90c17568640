//! Pulling from a loopback registry into containerd.

use std::time::Instant;

use rkube_node_runtime::image::RegistryAuth;
use rkube_node_runtime::runtime::{ContainerRuntime, Error, PullOptions};
use rkube_node_runtime::testing::{free_loopback_port, TestNode, TestRegistry};

use crate::require_containerd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_and_by_digest_unpacks_the_image() -> anyhow::Result<()> {
    require_containerd!();
    let node = TestNode::start().await?;
    let registry = TestRegistry::start().await?;
    let (reference, digest) = registry.push_busybox("rkube/busybox").await?;
    let runtime = node.runtime();

    assert_eq!(runtime.image_present(&reference).await?, None);
    let started = Instant::now();
    let by_tag = runtime.pull_image(&reference, &PullOptions::default()).await?;
    eprintln!("pulled {reference} in {:?}", started.elapsed());
    // skopeo pushes the platform manifest, so the tag resolves to it.
    assert_eq!(by_tag.digest, digest);
    assert_eq!(by_tag.manifest_digest, digest);
    assert_eq!(
        by_tag.repo_digest,
        format!("{}/rkube/busybox@{digest}", registry.host())
    );
    assert_eq!(by_tag.config.cmd, ["sh"]);
    assert!(by_tag.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert!(by_tag.size > 500_000, "layer size {}", by_tag.size);
    assert_eq!(runtime.image_present(&reference).await?.as_ref(), Some(&by_tag));

    // Pinned by digest: a different image record, the same content and snapshot.
    let pinned = format!("{}/rkube/busybox@{digest}", registry.host());
    let by_digest = runtime.pull_image(&pinned, &PullOptions::default()).await?;
    assert_eq!(by_digest.name, pinned);
    assert_eq!(by_digest.chain_id, by_tag.chain_id);
    assert_eq!(by_digest.config_digest, by_tag.config_digest);
    assert!(runtime.image_present(&pinned).await?.is_some());

    // Pulling again is idempotent (blobs and snapshots already there).
    let again = runtime.pull_image(&reference, &PullOptions::default()).await?;
    assert_eq!(again, by_tag);

    // A new client (a restarted kubelet) sees the image.
    assert_eq!(node.runtime().image_present(&reference).await?, Some(by_tag));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_of_a_missing_image_reports_the_registry_reason() -> anyhow::Result<()> {
    require_containerd!();
    let node = TestNode::start().await?;
    let registry = TestRegistry::start().await?;
    registry.push_busybox("rkube/busybox").await?;
    let runtime = node.runtime();

    let missing = format!("{}/rkube/nope:latest", registry.host());
    let err = runtime
        .pull_image(&missing, &PullOptions::default())
        .await
        .expect_err("pulling an image the registry does not have must fail");
    assert!(err.is_pull_error(), "{err:?}");
    let message = err.to_string();
    eprintln!("missing image: {message}");
    // What a user sees in ErrImagePull: the registry's reason and the image.
    assert!(message.contains("manifest unknown"), "{message}");
    assert!(message.contains(&missing), "{message}");
    assert!(message.contains("404"), "{message}");

    let missing_tag = format!("{}/rkube/busybox:v9", registry.host());
    let message = runtime
        .pull_image(&missing_tag, &PullOptions::default())
        .await
        .expect_err("unknown tag")
        .to_string();
    assert!(message.contains("manifest unknown"), "{message}");

    // Nobody listening: the error says where it tried.
    let dead = format!("127.0.0.1:{}/rkube/busybox:latest", free_loopback_port()?);
    let err = runtime
        .pull_image(&dead, &PullOptions::default())
        .await
        .expect_err("no registry there");
    let report = rkube_node_runtime::error_report(&err);
    eprintln!("dead registry: {report}");
    assert!(
        report.contains(&dead) && report.contains("http://127.0.0.1"),
        "{report}"
    );
    assert!(report.to_lowercase().contains("connect"), "{report}");

    let err = runtime
        .pull_image("Not A Reference", &PullOptions::default())
        .await
        .expect_err("invalid reference");
    assert!(err.to_string().contains("invalid image reference"), "{err}");
    assert_eq!(runtime.image_present(&missing).await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_with_basic_auth_needs_the_right_credentials() -> anyhow::Result<()> {
    require_containerd!();
    let node = TestNode::start().await?;
    let registry = TestRegistry::start_with_basic_auth("rkube", "s3cret").await?;
    let (reference, digest) = registry.push_busybox("private/busybox").await?;
    let runtime = node.runtime();

    let err = runtime
        .pull_image(&reference, &PullOptions::default())
        .await
        .expect_err("anonymous pull from an authenticated registry");
    let message = err.to_string();
    eprintln!("anonymous: {message}");
    assert!(
        matches!(
            err,
            Error::Pull(rkube_node_runtime::image::PullError::Unauthorized { .. })
        ),
        "{err:?}"
    );
    assert!(message.contains("pull secret"), "{message}");

    let wrong = PullOptions {
        auth: Some(RegistryAuth {
            username: "rkube".into(),
            password: "wrong".into(),
        }),
        ..Default::default()
    };
    let message = runtime
        .pull_image(&reference, &wrong)
        .await
        .expect_err("wrong password")
        .to_string();
    eprintln!("wrong password: {message}");
    assert!(
        message.contains("refused access") && message.contains("username and password"),
        "{message}"
    );
    assert!(
        !message.contains("wrong"),
        "the password must not leak into errors: {message}"
    );

    let right = PullOptions {
        auth: Some(RegistryAuth {
            username: "rkube".into(),
            password: "s3cret".into(),
        }),
        ..Default::default()
    };
    let image = runtime.pull_image(&reference, &right).await?;
    assert_eq!(image.digest, digest);
    assert!(runtime.image_present(&reference).await?.is_some());
    Ok(())
}

/// Pulls of one image asked for together share a pull that began after they were asked
/// for, but only between the same credentials: a pod with a wrong password never gets the
/// image through another pod's pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_share_only_with_the_same_credentials() -> anyhow::Result<()> {
    require_containerd!();
    let node = TestNode::start().await?;
    let registry = TestRegistry::start_with_basic_auth("rkube", "s3cret").await?;
    let (reference, digest) = registry.push_busybox("private/busybox").await?;
    let runtime = node.runtime();
    let options = |password: &str| PullOptions {
        auth: Some(RegistryAuth {
            username: "rkube".into(),
            password: password.into(),
        }),
        ..Default::default()
    };
    let (right, wrong) = (options("s3cret"), options("wrong"));
    // right and wrong interleaved, all asked for at once
    let pulls = (0..8).map(|i| {
        let (runtime, reference) = (runtime.clone(), reference.clone());
        let options = if i % 2 == 0 { right.clone() } else { wrong.clone() };
        async move { (i, runtime.pull_image(&reference, &options).await) }
    });
    for (i, result) in futures::future::join_all(pulls).await {
        if i % 2 == 0 {
            let image = result.map_err(|e| anyhow::anyhow!("pull {i} with the right password: {e}"))?;
            assert_eq!(image.digest, digest);
        } else {
            let err = result.expect_err("a wrong password pulls nothing, whoever else pulls");
            assert!(err.to_string().contains("refused access"), "{err}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_resolves_indexes_to_this_platform_and_accepts_docker_manifests() -> anyhow::Result<()> {
    require_containerd!();
    let node = TestNode::start().await?;
    let registry = TestRegistry::start().await?;
    let (layout, manifest_digest) = registry.busybox_layout().await?;
    registry.push_layout(&layout, "rkube/multi", "single").await?;
    let manifest_size = std::fs::metadata(
        layout
            .join("blobs/sha256")
            .join(manifest_digest.trim_start_matches("sha256:")),
    )?
    .len();
    let entry = |arch: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": arch, "os": "linux"},
        })
    };
    let index = |entries: Vec<serde_json::Value>| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))
    };
    let index_type = "application/vnd.oci.image.index.v1+json";
    let index_digest = registry
        .put_manifest(
            "rkube/multi",
            "latest",
            index_type,
            index(vec![entry("arm64"), entry("amd64")])?,
        )
        .await?;
    registry
        .put_manifest("rkube/multi", "armonly", index_type, index(vec![entry("arm64")])?)
        .await?;
    let runtime = node.runtime();

    let reference = format!("{}/rkube/multi:latest", registry.host());
    let image = runtime.pull_image(&reference, &PullOptions::default()).await?;
    assert_eq!(image.digest, index_digest, "the tag names the index");
    assert_eq!(
        image.manifest_digest, manifest_digest,
        "the amd64 manifest was unpacked"
    );
    assert_eq!(runtime.image_present(&reference).await?, Some(image));

    let err = runtime
        .pull_image(
            &format!("{}/rkube/multi:armonly", registry.host()),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("no manifest for platform linux/amd64") && message.contains("linux/arm64"),
        "{message}"
    );

    // Docker schema 2 media types (what `docker push` produces).
    registry
        .push_layout_as(&layout, "rkube/docker", "latest", Some("v2s2"))
        .await?;
    let docker = runtime
        .pull_image(
            &format!("{}/rkube/docker:latest", registry.host()),
            &PullOptions::default(),
        )
        .await?;
    assert_ne!(
        docker.manifest_digest, manifest_digest,
        "skopeo converted the manifest"
    );
    assert_eq!(docker.config.cmd, ["sh"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_images_sharing_layers_all_succeed() -> anyhow::Result<()> {
    require_containerd!();
    let node = TestNode::start().await?;
    let registry = TestRegistry::start().await?;
    let (layout, digest) = registry.busybox_layout().await?;
    registry.push_layout(&layout, "rkube/a", "latest").await?;
    registry.push_layout(&layout, "rkube/b", "latest").await?;
    let runtime = node.runtime();
    let a = format!("{}/rkube/a:latest", registry.host());
    let b = format!("{}/rkube/b:latest", registry.host());
    let pinned = format!("{}/rkube/a@{digest}", registry.host());
    let options = PullOptions::default();
    // Same blobs written and the same layer unpacked by three pulls at once (and a fourth
    // of an image already being pulled, which waits for the first).
    let (ra, rb, rp, ra2) = tokio::join!(
        runtime.pull_image(&a, &options),
        runtime.pull_image(&b, &options),
        runtime.pull_image(&pinned, &options),
        runtime.pull_image(&a, &options),
    );
    let (ra, rb, rp, ra2) = (ra?, rb?, rp?, ra2?);
    assert_eq!(ra.chain_id, rb.chain_id);
    assert_eq!(ra.chain_id, rp.chain_id);
    assert_eq!(ra, ra2);
    for reference in [&a, &b, &pinned] {
        assert!(runtime.image_present(reference).await?.is_some(), "{reference}");
    }
    Ok(())
}
