//! systemd's notification protocol (`Type=notify`, `WatchdogSec=`) spoken
//! directly: one datagram per state change to the unix socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`).
//! No libsystemd, so the binaries stay static-friendly and the protocol is
//! testable against a socket the test binds itself.
//!
//! The environment is read by the callers (`Notifier::from_env`,
//! `watchdog_interval`'s arguments), never inside the logic, so tests pass
//! the values instead of racing on process-wide variables.

use std::ffi::{OsStr, OsString};
use std::io;
use std::time::Duration;

/// Where systemd listens for this daemon's notifications.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    socket: Option<OsString>,
}

impl Notifier {
    /// The socket systemd gave the process in `$NOTIFY_SOCKET`; notifying
    /// does nothing when the daemon does not run under systemd.
    pub fn from_env() -> Self {
        Notifier::new(std::env::var_os("NOTIFY_SOCKET"))
    }

    /// A notifier for `socket` (a path, or `@name` for an abstract socket);
    /// `None` or empty disables it.
    pub fn new(socket: Option<OsString>) -> Self {
        Notifier {
            socket: socket.filter(|s| !s.is_empty()),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends `state` (`READY=1`, `STOPPING=1`, `WATCHDOG=1`, ...) as one
    /// datagram. A disabled notifier succeeds without sending anything.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some(path) = &self.socket else { return Ok(()) };
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(abstract_name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            socket.send_to(state.as_bytes(), path)?;
        }
        Ok(())
    }

    /// The socket, for messages.
    pub fn socket(&self) -> Option<&OsStr> {
        self.socket.as_deref()
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, as sd_notify(3)
/// recommends, when the watchdog is meant for this process (`WATCHDOG_PID`
/// absent or equal to `our_pid`: a child that inherited the environment
/// must not feed its parent's watchdog). `Ok(None)`: no watchdog.
pub fn watchdog_interval(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec else { return Ok(None) };
    if let Some(pid) = pid {
        let pid = pid.to_string_lossy();
        match pid.trim().parse::<u32>() {
            Ok(p) if p == our_pid => {}
            Ok(_) => return Ok(None),
            Err(_) => return Err(format!("WATCHDOG_PID={pid:?} is not a process id")),
        }
    }
    let text = usec.to_string_lossy();
    match text.trim().parse::<u64>() {
        Ok(us) if us > 0 => Ok(Some(Duration::from_micros(us / 2).max(Duration::from_millis(1)))),
        _ => Err(format!(
            "WATCHDOG_USEC={text:?} is not a positive number of microseconds; check WatchdogSec= in the unit"
        )),
    }
}

/// Sends `WATCHDOG=1` every `interval` while `check` passes, forever. Run it
/// as a task on the daemon's runtime: when the runtime stops making
/// progress (or is gone) the pings stop and systemd restarts the daemon; a
/// failing check withholds the ping for the same effect.
pub async fn watchdog(notifier: Notifier, interval: Duration, check: impl Fn() -> Result<(), String>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match check() {
            Ok(()) => {
                if let Err(e) = notifier.notify("WATCHDOG=1") {
                    tracing::warn!(
                        socket = %notifier.socket().unwrap_or_default().to_string_lossy(),
                        "cannot ping the systemd watchdog: {e}"
                    );
                }
            }
            Err(why) => tracing::error!(
                "unhealthy, not pinging the systemd watchdog (systemd will restart this daemon): {why}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn recv(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification within the timeout");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn abstract_listener() -> (UnixDatagram, String) {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("rkube-notify-test-{}-{}", std::process::id(), rand_suffix());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (socket, format!("@{name}"))
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    #[test]
    fn ready_reaches_a_path_socket_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let notifier = Notifier::new(Some(path.clone().into_os_string()));
        assert!(notifier.is_enabled());
        notifier.notify("READY=1").unwrap();
        assert_eq!(recv(&listener), "READY=1");

        let (listener, name) = abstract_listener();
        Notifier::new(Some(name.into())).notify("READY=1").unwrap();
        assert_eq!(recv(&listener), "READY=1");

        // a socket that is gone is an error the caller can log
        drop(listener);
        let gone = Notifier::new(Some(dir.path().join("missing.sock").into_os_string()));
        assert!(gone.notify("READY=1").is_err());
        // outside systemd nothing is sent and nothing fails
        assert!(!Notifier::new(None).is_enabled());
        Notifier::new(Some(OsString::new())).notify("READY=1").unwrap();
    }

    #[test]
    fn the_watchdog_interval_is_half_of_watchdog_usec_and_only_for_our_pid() {
        let os = |s: &str| OsString::from(s);
        assert_eq!(watchdog_interval(None, None, 7), Ok(None));
        assert_eq!(
            watchdog_interval(Some(&os("30000000")), None, 7),
            Ok(Some(Duration::from_secs(15)))
        );
        assert_eq!(
            watchdog_interval(Some(&os("30000000")), Some(&os("7")), 7),
            Ok(Some(Duration::from_secs(15)))
        );
        assert_eq!(
            watchdog_interval(Some(&os("30000000")), Some(&os("8")), 7),
            Ok(None)
        );
        let err = watchdog_interval(Some(&os("soon")), None, 7).unwrap_err();
        assert!(err.contains("WATCHDOG_USEC") && err.contains("soon"), "{err}");
        assert!(watchdog_interval(Some(&os("0")), None, 7).is_err());
        assert!(watchdog_interval(Some(&os("1000")), Some(&os("x")), 7).is_err());
    }

    #[test]
    fn the_watchdog_pings_while_the_runtime_lives_and_healthy() {
        let (listener, name) = abstract_listener();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let notifier = Notifier::new(Some(name.clone().into()));
        runtime.spawn(watchdog(notifier, Duration::from_millis(20), || Ok(())));
        for _ in 0..3 {
            assert_eq!(recv(&listener), "WATCHDOG=1");
        }
        // the runtime is gone: no more pings, so systemd would restart us
        runtime.shutdown_timeout(Duration::from_secs(1));
        listener.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        while listener.recv(&mut buf).is_ok() {}
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            listener.recv(&mut buf).is_err(),
            "a watchdog ping arrived after its runtime shut down"
        );

        // an unhealthy daemon withholds its pings
        listener.set_nonblocking(false).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = healthy.clone();
        runtime.spawn(watchdog(
            Notifier::new(Some(name.into())),
            Duration::from_millis(20),
            move || {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("store: closed".into())
                }
            },
        ));
        assert!(listener.recv(&mut buf).is_err(), "pinged while unhealthy");
        healthy.store(true, std::sync::atomic::Ordering::SeqCst);
        listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(recv(&listener), "WATCHDOG=1");
    }
}
