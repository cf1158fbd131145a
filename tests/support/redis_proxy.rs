//! A real `redis-server` for a test, and a TCP proxy in front of it that can hold one write
//! transaction just before it reaches Redis.
//!
//! The Redis backend's optimistic check (`WATCH`, read, `MULTI` ... `EXEC`) guards against
//! another writer changing a session between a transaction's read and its `EXEC`. Such a write
//! can be made to happen every time, not by luck of timing: the backend connects through the
//! proxy, the proxy forwards its reads at once and holds its `MULTI` ... `EXEC` block, the test
//! writes through a connection of its own straight to Redis, then lets the block go. Read-only
//! blocks (the backend reads a whole session in one `MULTI`) pass untouched.
//!
//! Everything here is blocking `std` code on threads of its own, so it runs beside any tokio
//! runtime; async tests wait for the hold with `spawn_blocking`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for a transaction to reach the hold: only a test that is already failing
/// waits this long.
pub const HOLD_WITHIN: Duration = Duration::from_secs(20);

/// `redis-server` without persistence on a free port of 127.0.0.1, answering `PING`; killed on
/// drop. (`REDIS_SERVER` names another binary.)
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&binary)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is not installed (apt-get install redis-server)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break; // the port was taken meanwhile: try another
                }
                if answers_ping(port) {
                    return RedisServer { child, port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start redis-server on a free port");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Where the proxy's hold is: armed by the test, reached by a transaction, released by the test.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    armed: bool,
    /// A transaction is waiting at the hold.
    held: bool,
    /// How many transactions have been held so far.
    times_held: usize,
}

impl Gate {
    /// The next write transaction to pass the proxy is held (once).
    pub fn arm(&self) {
        self.lock().armed = true;
    }

    /// Blocks until a transaction is held; false if none came within `within`.
    pub fn wait_held(&self, within: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, within, |s| !s.held)
            .unwrap();
        state.held
    }

    /// Lets the held transaction go on to Redis.
    pub fn release(&self) {
        self.lock().held = false;
        self.changed.notify_all();
    }

    /// How many transactions the proxy has held.
    pub fn times_held(&self) -> usize {
        self.lock().times_held
    }

    /// Called by the proxy with a write transaction in hand: waits at the hold if armed.
    fn pass(&self) {
        let mut state = self.lock();
        if !state.armed {
            return;
        }
        state.armed = false;
        state.held = true;
        state.times_held += 1;
        self.changed.notify_all();
        let _state = self.changed.wait_while(state, |s| s.held).unwrap();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A proxy on a free port of 127.0.0.1 in front of `upstream`, with its [`Gate`]. It stops
/// accepting on drop; its connections end when either side closes.
pub struct HoldingProxy {
    pub port: u16,
    pub gate: Arc<Gate>,
    stop: Arc<AtomicBool>,
}

impl HoldingProxy {
    pub fn start(upstream: u16) -> HoldingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let gate = Arc::new(Gate::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_gate, accept_stop) = (gate.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_in, server_in) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || copy_replies(server_in, client));
                let gate = accept_gate.clone();
                std::thread::spawn(move || forward_commands(client_in, server, &gate));
            }
        });
        HoldingProxy { port, gate, stop }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
        self.gate.release();
    }
}

/// Redis to client, unchanged.
fn copy_replies(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
}

/// Client to Redis, one command at a time; a `MULTI` ... `EXEC` block is collected whole and,
/// when it writes, passed through the gate before it is sent.
fn forward_commands(mut from: TcpStream, mut to: TcpStream, gate: &Gate) {
    let mut buffer = Vec::new();
    let mut block: Option<(Vec<u8>, bool)> = None; // (bytes, writes) of an open MULTI block
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        while let Some((name, len)) = next_command(&buffer) {
            let bytes: Vec<u8> = buffer.drain(..len).collect();
            match (&mut block, name.as_str()) {
                (None, "MULTI") => block = Some((bytes, false)),
                (None, _) => out.extend_from_slice(&bytes),
                (Some((held, writes)), "EXEC" | "DISCARD") => {
                    held.extend_from_slice(&bytes);
                    let (held, writes) = (std::mem::take(held), *writes);
                    block = None;
                    if writes {
                        // Everything before the block goes first: the reads it follows.
                        if to.write_all(&out).is_err() {
                            return;
                        }
                        out.clear();
                        gate.pass();
                    }
                    out.extend_from_slice(&held);
                }
                (Some((held, writes)), _) => {
                    *writes |= is_write(&name);
                    held.extend_from_slice(&bytes);
                }
            }
        }
        if to.write_all(&out).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// Whether a command inside a transaction changes data.
fn is_write(name: &str) -> bool {
    !matches!(
        name,
        "GET" | "LRANGE" | "LLEN" | "STRLEN" | "EXISTS" | "TYPE" | "PTTL" | "TTL" | "MGET"
    )
}

/// The upper-case name and the length in bytes of the complete command at the start of `buffer`
/// (a RESP array of bulk strings, as clients send them), or None while it is incomplete.
fn next_command(buffer: &[u8]) -> Option<(String, usize)> {
    let (count, mut at) = resp_number(buffer, b'*', 0)?;
    let mut name = String::new();
    for i in 0..count {
        let (len, start) = resp_number(buffer, b'$', at)?;
        let end = start + len;
        if buffer.len() < end + 2 {
            return None;
        }
        if i == 0 {
            name = String::from_utf8_lossy(&buffer[start..end]).to_ascii_uppercase();
        }
        at = end + 2;
    }
    Some((name, at))
}

/// The number after `marker` at `at`, up to CRLF, and where the line after it starts.
fn resp_number(buffer: &[u8], marker: u8, at: usize) -> Option<(usize, usize)> {
    if *buffer.get(at)? != marker {
        panic!("the proxy does not understand what the client sent at byte {at}");
    }
    let line_end = buffer[at..].windows(2).position(|w| w == b"\r\n")? + at;
    let number = std::str::from_utf8(&buffer[at + 1..line_end])
        .ok()?
        .parse()
        .ok()?;
    Some((number, line_end + 2))
}
