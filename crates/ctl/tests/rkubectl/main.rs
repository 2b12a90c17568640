//! rkubectl end to end: a real apiserver in-process on a free loopback
//! port over a temporary data directory, and the built `rkubectl` binary
//! run against it exactly as a user runs it. Assertions are on what the
//! user sees: stdout, stderr and the exit status. The tests are split by
//! theme: apply and delete, get and describe, errors and the config file.

mod apply_delete;
mod errors_config;
mod generators;
mod get;

use rkube_api::rpc::api_server_client::ApiServerClient;
use rkube_api::rpc::{self, ResourceId};
use rkube_api::{to_any, Resource};
use rkube_testing::TestApiServer;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Cluster {
    /// `None` once dropped; its directory is also the users' HOME (no
    /// stray ~/.rkube/config).
    api: Option<TestApiServer>,
    runtime: tokio::runtime::Runtime,
}

/// What one rkubectl run printed.
struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            code: o.status.code().unwrap_or(-1),
        }
    }
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "rkubectl failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    fn failed(self) -> Run {
        assert_eq!(
            self.code, 1,
            "rkubectl should exit 1\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

fn rkubectl_command(home: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rkubectl"));
    cmd.env("HOME", home)
        .env_remove("RKUBECONFIG")
        .env_remove("RKUBE_SERVER");
    cmd
}

impl Cluster {
    fn start() -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let api = runtime.block_on(TestApiServer::start()).unwrap();
        Cluster {
            api: Some(api),
            runtime,
        }
    }

    fn api(&self) -> &TestApiServer {
        self.api.as_ref().expect("running until dropped")
    }

    fn url(&self) -> &str {
        self.api().url()
    }

    /// The users' HOME, where the tests' files go too.
    fn home(&self) -> &std::path::Path {
        self.api().dir()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = rkubectl_command(self.home());
        cmd.arg("--server").arg(self.url()).args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        self.command(args).stdin(Stdio::null()).output().unwrap().into()
    }

    fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap().into()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.home().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// Talks to the API directly, for what rkubectl cannot do (yet):
    /// writing events and status as the kubelet and controllers would.
    fn client(&self) -> ApiServerClient<tonic::transport::Channel> {
        self.runtime
            .block_on(ApiServerClient::connect(self.url().to_string()))
            .unwrap()
    }

    fn create<K: Resource>(&self, obj: &K) {
        let mut client = self.client();
        let req = rpc::CreateRequest {
            resource: Some(ResourceId {
                group: K::INFO.group.into(),
                resource: K::INFO.plural.into(),
            }),
            namespace: obj.namespace().to_string(),
            object: Some(to_any(obj)),
            dry_run: false,
        };
        self.runtime.block_on(client.create(req)).unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            let _ = self.runtime.block_on(api.stop());
        }
    }
}

const APP: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  labels:
    app: web
data:
  greeting: hello
  mode: production
";
