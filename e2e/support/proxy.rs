//! A TCP proxy on loopback that can be switched to a black hole: connections stay open, nothing is
//! forwarded either way. It stands in for a network partition or a hung API server, the case where a
//! request neither succeeds nor fails.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A running proxy; it lives as long as the test process.
pub struct Proxy {
    /// The port to connect to instead of the target.
    pub port: u16,
    blackhole: Arc<AtomicBool>,
}

impl Proxy {
    /// Forward 127.0.0.1:`port` to 127.0.0.1:`target`.
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let port = listener.local_addr().expect("address").port();
        let blackhole = Arc::new(AtomicBool::new(false));
        let hole = blackhole.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ] {
                    if let (Ok(from), Ok(to)) = (from, to) {
                        let hole = hole.clone();
                        std::thread::spawn(move || pump(from, to, &hole));
                    }
                }
            }
        });
        Proxy { port, blackhole }
    }

    /// From now on forward nothing, on open and new connections alike (they stay open).
    pub fn blackhole(&self) {
        self.blackhole.store(true, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, blackhole: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buffer = [0u8; 16 * 1024];
    loop {
        if blackhole.load(Ordering::SeqCst) {
            // Hold the connection: the peer sees neither data nor a close.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if blackhole.load(Ordering::SeqCst) || to.write_all(&buffer[..n]).is_err() {
                    continue;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
