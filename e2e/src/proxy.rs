//! A loopback TCP proxy that can blackhole its connections: bytes stop flowing in both
//! directions while both sockets stay open, as when a NAT or a cloud process stops forwarding
//! without closing anything (a half-open link).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Proxy {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// One flag per accepted connection: set = blackholed.
    holes: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    stop: Arc<AtomicBool>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, hole: Arc<AtomicBool>, stop: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16384];
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if hole.load(Ordering::SeqCst) {
            // Blackholed: read nothing, write nothing, close nothing.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
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
    let _ = to.shutdown(Shutdown::Both);
}

impl Proxy {
    /// Forwards 127.0.0.1:<free port> to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let holes: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (a, h, s) = (accepted.clone(), holes.clone(), stop.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || loop {
            if s.load(Ordering::SeqCst) {
                return;
            }
            match listener.accept() {
                Ok((client, _)) => {
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(target) else {
                        continue;
                    };
                    let hole = Arc::new(AtomicBool::new(false));
                    h.lock().unwrap().push(hole.clone());
                    a.fetch_add(1, Ordering::SeqCst);
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (h1, h2, st1, st2) = (hole.clone(), hole, s.clone(), s.clone());
                    std::thread::spawn(move || pump(client, server, h1, st1));
                    std::thread::spawn(move || pump(s2, c2, h2, st2));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        });
        Proxy {
            addr,
            accepted,
            holes,
            stop,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Blackholes every connection accepted so far; later ones flow normally.
    pub fn blackhole_existing(&self) {
        for h in self.holes.lock().unwrap().iter() {
            h.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
