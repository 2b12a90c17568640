//! A daemon built on `rkube_daemon::main`, run the way systemd runs it:
//! this test re-executes its own binary as the daemon with `NOTIFY_SOCKET`
//! and `WATCHDOG_USEC` pointing at a socket the test listens on, then checks
//! what systemd would see (READY=1, WATCHDOG=1 pings, STOPPING=1 on SIGTERM,
//! exit 0) and what a probe sees on the health endpoint.

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

const CHILD: &str = "RKUBE_DAEMON_TEST_CHILD";

/// The daemon side: serve health on a free port, say where, be ready, wait.
fn daemon() -> ! {
    rkube_daemon::main(
        "rkube-test-daemon",
        Ok("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()),
        |addr, shutdown| async move {
            let health = rkube_daemon::serve_health(Some(addr))
                .await?
                .expect("an address was given");
            rkube_daemon::notify_systemd(&format!("STATUS=health on {}", health.addr()));
            rkube_daemon::ready();
            shutdown.await;
            Ok(())
        },
    )
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    (
        out[9..12].parse().unwrap(),
        out.split_once("\r\n\r\n").unwrap().1.to_string(),
    )
}

#[test]
fn a_daemon_under_systemd_notifies_readiness_pings_the_watchdog_and_stops_cleanly() {
    if std::env::var_os(CHILD).is_some() {
        daemon();
    }
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_daemon_under_systemd_notifies_readiness_pings_the_watchdog_and_stops_cleanly",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("NOTIFY_SOCKET", &socket_path)
        // 100 ms: pings every 50 ms
        .env("WATCHDOG_USEC", "100000")
        .env_remove("WATCHDOG_PID")
        .spawn()
        .unwrap();

    let mut seen: Vec<String> = Vec::new();
    let receive_until = |seen: &mut Vec<String>, done: &dyn Fn(&[String]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 512];
        while !done(seen) {
            assert!(Instant::now() < deadline, "systemd would have seen only {seen:?}");
            if let Ok(n) = socket.recv(&mut buf) {
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    let pings = |seen: &[String]| seen.iter().filter(|m| *m == "WATCHDOG=1").count();
    receive_until(&mut seen, &|s| s.iter().any(|m| m == "READY=1") && pings(s) >= 3);
    let status = seen
        .iter()
        .find_map(|m| m.strip_prefix("STATUS=health on "))
        .expect("the daemon said where its health endpoint is")
        .to_string();
    // readiness comes after the endpoint is bound, so probes already answer
    assert!(
        seen.iter().position(|m| m.starts_with("STATUS=")) < seen.iter().position(|m| m == "READY=1"),
        "{seen:?}"
    );

    assert_eq!(http_get(&status, "/healthz"), (200, "ok".into()));
    assert_eq!(http_get(&status, "/readyz"), (200, "ok".into()));
    let (code, metrics) = http_get(&status, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("rkube_build_info{daemon=\"rkube-test-daemon\",version=\""),
        "{metrics}"
    );
    assert!(metrics.contains("\nprocess_resident_memory_bytes "), "{metrics}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    receive_until(&mut seen, &|s| s.iter().any(|m| m == "STOPPING=1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "the daemon exited with {exit}");
}
