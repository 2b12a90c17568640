//! The apiserver on a full disk: its data directory on a tmpfs of the test's own, filled
//! to the last byte under a running, secure apiserver. A user's write is refused with
//! ServiceUnavailable naming the data directory and what to do; gets, lists and a watch go
//! on; writes resume by themselves once space is freed; and after a restart every
//! acknowledged object is there. Needs root (mount).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rkube_api::core::v1::ConfigMap;
use rkube_api::Resource;
use rkube_client::{Api, Error, ListParams, WatchEvent, WatchParams};
use rkube_testing::{TestApiServer, Tmpfs};

fn config_map(name: &str, payload: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata_mut().name = name.into();
    cm.metadata_mut().namespace = "default".into();
    cm.data.insert("payload".into(), payload.into());
    cm
}

async fn names_and_payloads(api: &Api<ConfigMap>) -> BTreeMap<String, String> {
    api.list(&ListParams::default())
        .await
        .expect("a list")
        .items
        .into_iter()
        .filter(|cm| cm.metadata().name.starts_with("cm-"))
        .map(|cm| (cm.metadata().name.clone(), cm.data["payload"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_dir_refuses_writes_keeps_reads_and_watches_and_resumes_by_itself() {
    // Room for the store's reserve and the server's own objects.
    let fs = Tmpfs::mount(24 << 20).expect("a tmpfs for the data directory");
    let data_dir = fs.path().join("data");
    let mut server = TestApiServer::builder()
        .secure(&[])
        .flags(["--storage-reserve-mib", "8"])
        .data_dir(&data_dir)
        .start()
        .await
        .expect("the apiserver");
    let api: Api<ConfigMap> = server.api("default");
    let payload = "x".repeat(4096);

    let mut acked = BTreeMap::new();
    for i in 0..5 {
        let name = format!("cm-{i}");
        api.create(&config_map(&name, &payload))
            .await
            .expect("a write with room");
        acked.insert(name, payload.clone());
    }
    let mut watch = api
        .watch(&WatchParams {
            resource_version: api.list(&ListParams::default()).await.unwrap().resource_version,
            ..Default::default()
        })
        .await
        .expect("a watch");

    fs.fill().expect("filling the tmpfs");
    let refused = api
        .create(&config_map("cm-refused", &payload))
        .await
        .expect_err("a write on the full disk");
    let Error::Api {
        code,
        reason,
        message,
        ..
    } = &refused
    else {
        panic!("not the apiserver's refusal: {refused}");
    };
    assert_eq!(*code, tonic::Code::Unavailable, "{message}");
    assert_eq!(reason, "ServiceUnavailable");
    assert!(message.contains("storage full"), "{message}");
    assert!(
        message.contains(&data_dir.display().to_string()),
        "names the data dir: {message}"
    );
    assert!(message.contains("Free space"), "says what to do: {message}");

    // Reads go on; the refused object is nowhere; the watch stays open.
    assert_eq!(names_and_payloads(&api).await, acked);
    assert_eq!(api.get("cm-0").await.expect("a get").data["payload"], payload);
    let not_stored = api.get("cm-refused").await.expect_err("the refused object");
    assert!(
        matches!(
            &not_stored,
            Error::Api {
                code: tonic::Code::NotFound,
                ..
            }
        ),
        "{not_stored}"
    );

    // Space returns: the same request goes through without a restart, and the watch that
    // was open all along reports it.
    fs.free().expect("freeing the tmpfs");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match api.create(&config_map("cm-after", &payload)).await {
            Ok(_) => break,
            Err(Error::Api {
                code: tonic::Code::Unavailable,
                ..
            }) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("writes did not resume after space was freed: {e}"),
        }
    }
    acked.insert("cm-after".into(), payload.clone());
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = watch.next().await {
            if let WatchEvent::Added(cm) = event.expect("the watch went on") {
                if cm.metadata().name == "cm-after" {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(
        seen,
        Ok(true),
        "the open watch did not report the write after space returned"
    );
    drop(watch);

    // Every acknowledged object survives a restart, and nothing refused appears.
    server.restart().await.expect("restarting the apiserver");
    let api: Api<ConfigMap> = server.api("default");
    assert_eq!(names_and_payloads(&api).await, acked);
    server.stop().await.expect("stopping the apiserver");
}
