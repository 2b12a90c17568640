//! `rkubectl service` and the Service/Endpoints tables against a real
//! apiserver (in-process, free loopback port), through the same entry
//! point as the binary. Nodes and their addresses are written by the test,
//! as kubelets would.

use rkube_api::core::v1::{Endpoints, Node, Service};
use rkube_client::{Api, Client};
use rkube_testing::TestApiServer;
use serde_json::json;

/// `rkubectl ARGS...` in process: its output, or its error as the user reads it.
async fn rkubectl(api: &TestApiServer, args: &[&str]) -> Result<String, String> {
    let (out, result) = api.rkubectl(args).await;
    result.map(|()| out).map_err(|e| e.to_string())
}

async fn node(api: &Api<Node>, name: &str, ip: &str, ready: bool) {
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&n).await.unwrap();
    let status = json!({"status": {
        "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    api.patch_status_merge(name, &status).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_urls_and_tables() {
    let server = TestApiServer::start().await.unwrap();
    let url = server.url().to_string();
    let client = Client::connect(&url).unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    node(&nodes, "node-b", "192.168.50.11", true).await;
    node(&nodes, "node-a", "192.168.50.10", true).await;
    node(&nodes, "node-down", "192.168.50.12", false).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let create = |v: serde_json::Value| {
        let svcs = svcs.clone();
        async move {
            svcs.create(&serde_json::from_value::<Service>(v).unwrap())
                .await
                .unwrap()
        }
    };
    let web = create(json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort",
        "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}]}}))
    .await;
    create(json!({"metadata": {"name": "db"}, "spec": {"ports": [{"port": 5432}]}})).await;
    create(
        json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30081}]}}),
    )
    .await;

    // only Ready nodes, by name, the allocated node port
    assert_eq!(
        rkubectl(&server, &["service", "web", "--url"]).await.unwrap(),
        "http://192.168.50.10:30080\nhttp://192.168.50.11:30080\n"
    );
    assert_eq!(
        rkubectl(&server, &["service", "web"]).await.unwrap(),
        "NAMESPACE   NAME   TARGET PORT   URL\n\
         default     web    80            http://192.168.50.10:30080\n\
         default     web    80            http://192.168.50.11:30080\n"
    );
    // a load balancer: node ports now, its ingress once provisioned
    assert_eq!(
        rkubectl(&server, &["service", "lb", "--url"]).await.unwrap(),
        "http://192.168.50.10:30081\nhttp://192.168.50.11:30081\n"
    );
    svcs.patch_status_merge(
        "lb",
        &json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}),
    )
    .await
    .unwrap();
    let table = rkubectl(&server, &["service", "lb"]).await.unwrap();
    assert!(
        table.ends_with("default     lb     http/80       http://203.0.113.7:80\n"),
        "{table}"
    );

    // ClusterIP: an error that says why and what to do
    let err = rkubectl(&server, &["service", "db"]).await.unwrap_err();
    assert!(
        err.contains("service default/db is of type ClusterIP: it is reachable only inside the cluster")
            && err.contains("use type: NodePort or LoadBalancer"),
        "{err}"
    );
    let err = rkubectl(&server, &["service", "nope"]).await.unwrap_err();
    assert!(err.contains("NotFound") && err.contains("nope"), "{err}");

    // get svc: kubectl's columns, node ports, <none> and <pending>
    let cluster_ip = web.spec.unwrap().cluster_ip;
    let table = rkubectl(&server, &["get", "svc"]).await.unwrap();
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows[0],
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    );
    let web_row = rows.iter().find(|r| r[0] == "web").unwrap();
    assert_eq!(
        web_row[..5],
        ["web", "NodePort", cluster_ip.as_str(), "<none>", "80:30080/TCP"]
    );
    let lb_row = rows.iter().find(|r| r[0] == "lb").unwrap();
    assert_eq!(
        [lb_row[1], lb_row[3], lb_row[4]],
        ["LoadBalancer", "203.0.113.7", "80:30081/TCP"]
    );
    create(json!({"metadata": {"name": "lb2"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]}}))
        .await;
    let table = rkubectl(&server, &["get", "svc", "lb2"]).await.unwrap();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[3], "<pending>", "{table}");
    assert!(row[4].starts_with("443:3") && row[4].ends_with("/TCP"), "{table}");

    // get endpoints: three, then a count of the rest
    let eps: Api<Endpoints> = Api::namespaced(client, "default");
    let ep: Endpoints = serde_json::from_value(json!({"metadata": {"name": "web"}, "subsets": [{
        "addresses": [{"ip": "10.244.0.5"}, {"ip": "10.244.0.6"}, {"ip": "10.244.0.7"}, {"ip": "10.244.0.8"}],
        "ports": [{"port": 8080}]}]}))
    .unwrap();
    eps.create(&ep).await.unwrap();
    let table = rkubectl(&server, &["get", "endpoints", "web"]).await.unwrap();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        [
            "web",
            "10.244.0.5:8080,10.244.0.6:8080,10.244.0.7:8080",
            "+",
            "1",
            "more..."
        ]
    );
    server.stop().await.unwrap();
}
