//! The Redis backend (src/store/redis.rs) against real `redis-server` processes that the tests
//! start on free loopback ports, with persistence off (the restart test turns the AOF on, to check
//! that acknowledged writes survive), and kill at the end.
//!
//! `redis-server` must be installed (`apt-get install redis-server`; `.ci/run` does it).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mia_narrative_session::clock::HybridClock;
use mia_narrative_session::error::ErrorCode;
use mia_narrative_session::journal;
use mia_narrative_session::merge::{apply_patch, normalize, settle_update, SessionPatch};
use mia_narrative_session::model::NarrativeSession;
use mia_narrative_session::paths::SessionKey;
use mia_narrative_session::store::redis::{
    is_unavailable, Loaded, RedisBackend, RedisChange, RedisEvent, RedisView,
};
use mia_narrative_session::update::parse_update;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

const PREFIX: &str = "mia:ns:";
const TTL: Duration = Duration::from_secs(3600);

// ----- redis-server processes -----

fn redis_server_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("redis-server"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push("/usr/bin/redis-server".into());
    candidates.push("/usr/sbin/redis-server".into());
    candidates.push("/usr/local/bin/redis-server".into());
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
            "redis-server was not found on PATH: these tests need a real Redis. Install it with \
             `apt-get install redis-server` (.ci/run installs it when it is missing)."
        )
        })
}

/// A `redis-server` on 127.0.0.1, killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    durable: bool,
}

impl RedisServer {
    /// Persistence off.
    fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// `durable`: the AOF on, fsynced at every write, in a temp dir; a restart reads it back.
    fn start_with(durable: bool) -> RedisServer {
        let mut dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                child: None,
                port,
                dir,
                durable,
            };
            if server.spawn() {
                return server;
            }
            dir = server.take_dir();
        }
        panic!("could not start redis-server on a free port");
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Starts the process on `self.port`; true once it answers PING.
    fn spawn(&mut self) -> bool {
        let mut command = Command::new(redis_server_binary());
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.durable {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let mut child = command.spawn().expect("cannot run redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: the port was taken, say
            }
            if ping(self.port) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server did not come back on its port");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

// ----- sessions and records -----

fn key(n: usize) -> SessionKey {
    SessionKey::new(&format!("user{n}"), "/home/me/proj").unwrap()
}

fn new_session(key: &SessionKey) -> NarrativeSession {
    normalize(&NarrativeSession::new(
        key.session_id(),
        key.user_id.clone(),
        key.workspace_id.clone(),
        "2026-01-01T00:00:00.000Z".into(),
    ))
    .unwrap()
}

/// A client's update as the settled patch (a join) the store would journal, and its frame.
fn record(
    session: &NarrativeSession,
    clock: &mut HybridClock,
    text: &str,
) -> (SessionPatch, Vec<u8>) {
    let patch = parse_update(text).unwrap().into_patch(clock).unwrap();
    let settled = settle_update(session, patch).unwrap();
    let frame = journal::encode(&settled).unwrap();
    (settled, frame)
}

fn entry_update(tag: &str, n: usize) -> String {
    format!(
        r#"{{"memory":{{"{tag}{n}":{n}}},"conversationHistory":[{{"id":"{tag}-{n}","role":"user","content":"entry {n}"}}]}}"#
    )
}

/// The session a load stands for: the snapshot (or a new one) with the log replayed.
fn rebuild(key: &SessionKey, loaded: &Loaded) -> NarrativeSession {
    let mut session = loaded
        .snapshot
        .clone()
        .map(|s| normalize(&s).unwrap())
        .unwrap_or_else(|| new_session(key));
    for patch in &loaded.patches {
        apply_patch(&mut session, patch).unwrap();
    }
    session
}

async fn connect(server: &RedisServer, instance: &str) -> RedisBackend {
    RedisBackend::connect(&server.url(), PREFIX, TTL, instance.to_string())
        .await
        .unwrap()
}

async fn raw_connection(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn query<T: redis::FromRedisValue>(conn: &mut MultiplexedConnection, args: &[&[u8]]) -> T {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(conn).await.unwrap()
}

/// Merges what changed since `view` into `session`, as the store's absorb does.
fn absorb(session: &mut NarrativeSession, view: &mut RedisView, change: RedisChange) {
    match change {
        RedisChange::Unchanged => {}
        RedisChange::Tail(patches, new_view) => {
            for patch in &patches {
                apply_patch(session, patch).unwrap();
            }
            *view = new_view;
        }
        RedisChange::Full(loaded) => {
            if let Some(stored) = &loaded.snapshot {
                apply_patch(session, &SessionPatch::from_session(stored)).unwrap();
            }
            for patch in &loaded.patches {
                apply_patch(session, patch).unwrap();
            }
            *view = loaded.view;
        }
    }
}

/// Creates the session in Redis as the store's first load would: a snapshot of a new session.
async fn create(backend: &RedisBackend, key: &SessionKey) -> (NarrativeSession, RedisView) {
    let session = new_session(key);
    let bytes = serde_json::to_vec(&session).unwrap();
    let view = backend
        .write_snapshot(&key.file_stem(), &bytes, RedisView::default())
        .await
        .unwrap()
        .expect("nobody else wrote");
    (session, view)
}

// ----- the tests -----

#[tokio::test]
async fn a_missing_session_loads_as_nothing() {
    let server = RedisServer::start();
    let backend = connect(&server, "a").await;
    let key = key(1);
    let loaded = backend.load(&key.file_stem(), &key).await.unwrap();
    assert!(loaded.snapshot.is_none());
    assert!(loaded.patches.is_empty());
    assert!(loaded.invalid.is_empty());
    assert_eq!(loaded.view, RedisView::default());
    assert!(matches!(
        backend
            .read_changes(&key.file_stem(), &key, loaded.view)
            .await
            .unwrap(),
        RedisChange::Unchanged
    ));
    assert!(backend.stems().await.unwrap().is_empty());
    assert!(!backend.delete(&key.file_stem()).await.unwrap());
}

#[tokio::test]
async fn appended_records_load_back_and_replay_to_the_same_session() {
    let server = RedisServer::start();
    let backend = connect(&server, "a").await;
    let key = key(1);
    let stem = key.file_stem();
    let (mut direct, mut view) = create(&backend, &key).await;
    let snapshot = direct.clone();
    let mut clock = HybridClock::new("a");
    let mut frames = Vec::new();
    for n in 0..10 {
        let (patch, frame) = record(&direct, &mut clock, &entry_update("k", n));
        apply_patch(&mut direct, &patch).unwrap();
        frames.push(frame);
    }
    // Two appends: 3 records, then 7.
    for batch in [&frames[..3], &frames[3..]] {
        view = backend
            .append(&stem, batch, view)
            .await
            .unwrap()
            .expect("no one else writes");
    }
    assert_eq!(view.log_len, 10);
    assert_eq!(view.version, 3); // the snapshot, then two appends
    let loaded = backend.load(&stem, &key).await.unwrap();
    assert_eq!(loaded.view, view);
    assert_eq!(loaded.snapshot.as_ref(), Some(&snapshot));
    assert_eq!(loaded.patches.len(), 10);
    assert!(loaded.invalid.is_empty());
    assert_eq!(rebuild(&key, &loaded), direct);
    assert_eq!(direct.conversation_history.len(), 10);

    // Each list element is exactly one journal frame, as encode made it.
    let mut conn = raw_connection(&server).await;
    let log = backend.key_name(&stem, "log");
    let elements: Vec<Vec<u8>> = query(&mut conn, &[b"LRANGE", log.as_bytes(), b"0", b"-1"]).await;
    assert_eq!(elements, frames);
    for element in &elements {
        let decoded = journal::decode(element);
        assert_eq!((decoded.patches.len(), decoded.end), (1, element.len()));
    }
    // A stale view is refused, and a read from it finds the tail.
    let stale = RedisView {
        version: 2,
        log_len: 3,
        ..view
    };
    assert_eq!(
        backend.append(&stem, &frames[..1], stale).await.unwrap(),
        None
    );
    match backend.read_changes(&stem, &key, stale).await.unwrap() {
        RedisChange::Tail(patches, now) => {
            assert_eq!(patches.len(), 7);
            assert_eq!((now.version, now.log_len), (view.version, view.log_len));
        }
        other => panic!("expected the tail, got {other:?}"),
    }
    // Every key got the TTL.
    for kind in ["snap", "log", "ver", "gen"] {
        let name = backend.key_name(&stem, kind);
        let pttl: i64 = query(&mut conn, &[b"PTTL", name.as_bytes()]).await;
        assert!(pttl > 0 && pttl <= TTL.as_millis() as i64, "{kind}: {pttl}");
    }
}

/// `load_text` sends a snapshot written with `write_canonical` as its text while the log is empty,
/// and parses anything else: a snapshot with records after it, one written unmarked, one replaced
/// by hand, and one moved under another session's keys with its mark.
#[tokio::test]
async fn a_snapshot_the_store_wrote_loads_as_its_text_until_anything_else_touches_it() {
    let server = RedisServer::start();
    let backend = connect(&server, "a").await;
    let key = key(1);
    let stem = key.file_stem();
    let session = new_session(&key);
    let bytes = serde_json::to_vec(&session).unwrap();
    let view = backend
        .write_canonical(&stem, &bytes, RedisView::default())
        .await
        .unwrap()
        .expect("nobody else wrote");
    let loaded = backend.load_text(&stem, &key).await.unwrap();
    assert_eq!(loaded.text.as_deref().map(str::as_bytes), Some(&bytes[..]));
    assert!(loaded.snapshot.is_none() && loaded.patches.is_empty());
    assert_eq!(loaded.view, view);
    // `load` always parses.
    let parsed = backend.load(&stem, &key).await.unwrap();
    assert_eq!(
        (parsed.text, parsed.snapshot),
        (None, Some(session.clone()))
    );

    // A record after it: parsed, with the record.
    let mut clock = HybridClock::new("a");
    let (_, frame) = record(&session, &mut clock, &entry_update("k", 1));
    let view = backend
        .append(&stem, &[frame], view)
        .await
        .unwrap()
        .expect("no one else writes");
    let loaded = backend.load_text(&stem, &key).await.unwrap();
    assert!(loaded.text.is_none() && loaded.raw.is_none());
    assert_eq!(loaded.patches.len(), 1);

    // Written unmarked: parsed, its bytes handed back for the caller to mark.
    backend
        .write_snapshot(&stem, &bytes, view)
        .await
        .unwrap()
        .expect("no one else writes");
    let loaded = backend.load_text(&stem, &key).await.unwrap();
    assert!(loaded.text.is_none());
    assert_eq!(loaded.raw.as_deref(), Some(&bytes[..]));
    backend.mark_canonical(&stem, &bytes).await;
    assert!(backend.load_text(&stem, &key).await.unwrap().text.is_some());

    // The snapshot replaced by hand (the same session, spaced out): the mark no longer matches.
    let mut conn = raw_connection(&server).await;
    let snap = backend.key_name(&stem, "snap");
    let spaced = serde_json::to_vec_pretty(&session).unwrap();
    let _: () = query(&mut conn, &[b"SET", snap.as_bytes(), &spaced]).await;
    let loaded = backend.load_text(&stem, &key).await.unwrap();
    assert!(loaded.text.is_none());
    assert_eq!(loaded.snapshot.as_ref(), Some(&session));

    // Another session's marked snapshot and mark, copied under this one's keys: not its mark.
    let other = self::key(2);
    let other_stem = other.file_stem();
    let other_bytes = serde_json::to_vec(&new_session(&other)).unwrap();
    backend
        .write_canonical(&other_stem, &other_bytes, RedisView::default())
        .await
        .unwrap()
        .unwrap();
    assert!(backend
        .load_text(&other_stem, &other)
        .await
        .unwrap()
        .text
        .is_some());
    for kind in ["snap", "mark"] {
        let value: Vec<u8> = query(
            &mut conn,
            &[b"GET", backend.key_name(&other_stem, kind).as_bytes()],
        )
        .await;
        let name = backend.key_name(&stem, kind);
        let _: () = query(&mut conn, &[b"SET", name.as_bytes(), &value]).await;
    }
    let loaded = backend.load_text(&stem, &key).await.unwrap();
    assert!(loaded.text.is_none() && loaded.snapshot.is_none());
    assert_eq!(
        loaded.invalid.len(),
        1,
        "the other user's snapshot is moved aside"
    );
}

/// Two instances (three writers) append into one session at once, each retrying when another
/// wrote first, two of them compacting now and then: every record of each ends up in the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_from_two_instances_lose_nothing() {
    const EACH: usize = 60;
    let server = RedisServer::start();
    let a = Arc::new(connect(&server, "a").await);
    let b = Arc::new(connect(&server, "b").await);
    let key = key(1);
    create(&a, &key).await;

    let worker = |backend: Arc<RedisBackend>, tag: &'static str, compact_every: usize| {
        let key = key.clone();
        tokio::spawn(async move {
            let stem = key.file_stem();
            let loaded = backend.load(&stem, &key).await.unwrap();
            let mut session = rebuild(&key, &loaded);
            let mut view = loaded.view;
            let mut clock = HybridClock::new(tag);
            let mut conflicts = 0;
            for n in 0..EACH {
                let (patch, frame) = record(&session, &mut clock, &entry_update(tag, n));
                apply_patch(&mut session, &patch).unwrap();
                let compact = compact_every > 0 && n % compact_every == compact_every - 1;
                loop {
                    let written = if compact {
                        let bytes = serde_json::to_vec(&session).unwrap();
                        backend.write_snapshot(&stem, &bytes, view).await.unwrap()
                    } else {
                        backend
                            .append(&stem, std::slice::from_ref(&frame), view)
                            .await
                            .unwrap()
                    };
                    match written {
                        Some(new_view) => {
                            view = new_view;
                            break;
                        }
                        None => {
                            conflicts += 1;
                            let change = backend.read_changes(&stem, &key, view).await.unwrap();
                            absorb(&mut session, &mut view, change);
                        }
                    }
                }
            }
            conflicts
        })
    };
    // "a" and "c" share one backend (and its pool of transaction connections).
    let (ca, cb, cc) = tokio::join!(
        worker(a.clone(), "a", 0),
        worker(b.clone(), "b", 15),
        worker(a.clone(), "c", 20)
    );
    let conflicts = ca.unwrap() + cb.unwrap() + cc.unwrap();

    let loaded = a.load(&key.file_stem(), &key).await.unwrap();
    let session = rebuild(&key, &loaded);
    for tag in ["a", "b", "c"] {
        for n in 0..EACH {
            let id = format!("{tag}-{n}");
            assert!(
                session.conversation_history.iter().any(|e| e.id == id),
                "{id} was lost"
            );
            assert_eq!(session.memory[&format!("{tag}{n}")], n);
        }
    }
    assert_eq!(session.conversation_history.len(), 3 * EACH);
    // Every write bumped the version once: 1 creation + one per record.
    assert_eq!(loaded.view.version, 1 + 3 * EACH as u64);
    eprintln!("{conflicts} conflicts retried");
}

#[tokio::test]
async fn a_snapshot_write_folds_the_log_and_others_read_everything_again() {
    let server = RedisServer::start();
    let a = connect(&server, "a").await;
    let key = key(1);
    let stem = key.file_stem();
    let (mut session, mut view) = create(&a, &key).await;
    let first_view = view;
    let mut clock = HybridClock::new("a");
    for n in 0..5 {
        let (patch, frame) = record(&session, &mut clock, &entry_update("k", n));
        apply_patch(&mut session, &patch).unwrap();
        view = a.append(&stem, &[frame], view).await.unwrap().unwrap();
    }
    // A write from a view that has not seen the whole log is refused: it would drop records.
    let bytes = serde_json::to_vec(&session).unwrap();
    assert_eq!(
        a.write_snapshot(&stem, &bytes, first_view).await.unwrap(),
        None
    );
    let compacted = a
        .write_snapshot(&stem, &bytes, view)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(compacted.log_len, 0);
    assert_eq!(compacted.snapshot_bytes, bytes.len() as u64);
    assert_ne!(compacted.generation, view.generation);

    let loaded = a.load(&stem, &key).await.unwrap();
    assert!(loaded.patches.is_empty());
    assert_eq!(loaded.view, compacted);
    assert_eq!(loaded.snapshot.as_ref(), Some(&session));

    // An instance that last saw the old generation reads everything, even once the log has grown
    // past the length it knew.
    for n in 5..12 {
        let (patch, frame) = record(&session, &mut clock, &entry_update("k", n));
        apply_patch(&mut session, &patch).unwrap();
        let current = a.load(&stem, &key).await.unwrap().view;
        a.append(&stem, &[frame], current).await.unwrap().unwrap();
    }
    match a.read_changes(&stem, &key, view).await.unwrap() {
        RedisChange::Full(loaded) => {
            assert_eq!(loaded.patches.len(), 7);
            assert_eq!(rebuild(&key, &loaded), session);
        }
        other => panic!("expected a full read, got {other:?}"),
    }
    // The old view's append is refused too.
    let (_, frame) = record(&session, &mut clock, &entry_update("late", 0));
    assert_eq!(a.append(&stem, &[frame], view).await.unwrap(), None);
}

#[tokio::test]
async fn keys_expire_after_the_ttl_unless_touched() {
    let server = RedisServer::start();
    let ttl = Duration::from_millis(500);
    let backend = RedisBackend::connect(&server.url(), PREFIX, ttl, "a".into())
        .await
        .unwrap();
    let kept = key(1);
    let left = key(2);
    for key in [&kept, &left] {
        create(&backend, key).await;
    }
    let until = Instant::now() + Duration::from_millis(1300);
    while Instant::now() < until {
        assert!(backend.touch(&kept.file_stem()).await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(backend.stems().await.unwrap(), vec![kept.file_stem()]);
    assert!(backend
        .load(&left.file_stem(), &left)
        .await
        .unwrap()
        .snapshot
        .is_none());
    assert!(!backend.touch(&left.file_stem()).await.unwrap());
    let loaded = backend.load(&kept.file_stem(), &kept).await.unwrap();
    assert!(loaded.snapshot.is_some());

    // Left alone, it goes too: every key of it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(backend.stems().await.unwrap().is_empty());
    let mut conn = raw_connection(&server).await;
    let keys: Vec<String> = query(&mut conn, &[b"KEYS", b"*"]).await;
    assert!(keys.is_empty(), "{keys:?}");
    // An instance that knew it reads the loss as a full change.
    assert!(matches!(
        backend
            .read_changes(&kept.file_stem(), &kept, loaded.view)
            .await
            .unwrap(),
        RedisChange::Full(l) if l.snapshot.is_none() && l.view == RedisView::default()
    ));
}

#[tokio::test]
async fn stems_are_found_with_scan_under_this_prefix_only() {
    let server = RedisServer::start();
    let backend = connect(&server, "a").await;
    let other = RedisBackend::connect(&server.url(), "other*:", TTL, "b".into())
        .await
        .unwrap();
    let mut expected = Vec::new();
    for n in 0..700 {
        let key = key(n);
        create(&backend, &key).await;
        expected.push(key.file_stem());
    }
    create(&other, &key(9999)).await;
    // Names that look alike but are not sessions of this prefix.
    let mut conn = raw_connection(&server).await;
    let stem = key(5).file_stem();
    for name in [
        format!("{PREFIX}{{not-a-stem}}:snap"),
        format!("{PREFIX}{{{stem}}}:snap:corrupt:1"),
        format!("mia:nsx{{{stem}}}:snap"),
        format!("other:{{{stem}}}:snap"),
    ] {
        let () = query(&mut conn, &[b"SET", name.as_bytes(), b"x"]).await;
    }
    expected.sort();
    assert_eq!(backend.stems().await.unwrap(), expected);
    // The glob characters in "other*:" match only themselves.
    assert_eq!(other.stems().await.unwrap(), vec![key(9999).file_stem()]);

    assert!(backend.delete(&stem).await.unwrap());
    assert_eq!(backend.stems().await.unwrap().len(), 699);
    // What was moved aside stays.
    let kept: bool = query(
        &mut conn,
        &[
            b"EXISTS",
            format!("{PREFIX}{{{stem}}}:snap:corrupt:1").as_bytes(),
        ],
    )
    .await;
    assert!(kept);
}

#[tokio::test]
async fn invalid_values_are_reported_and_kept_aside() {
    let server = RedisServer::start();
    let backend = connect(&server, "a").await;
    let mut conn = raw_connection(&server).await;

    // A snapshot that is not JSON, and garbage between two good log records.
    let key1 = key(1);
    let stem = key1.file_stem();
    let snap = backend.key_name(&stem, "snap");
    let log = backend.key_name(&stem, "log");
    let base = new_session(&key1);
    let mut clock = HybridClock::new("a");
    let (p1, good1) = record(&base, &mut clock, &entry_update("k", 1));
    let (p2, good2) = record(&base, &mut clock, &entry_update("k", 2));
    let mut torn = good2.clone();
    torn.truncate(torn.len() - 3);
    let () = query(&mut conn, &[b"SET", snap.as_bytes(), b"{not json"]).await;
    let _: u64 = query(
        &mut conn,
        &[b"RPUSH", log.as_bytes(), &good1, b"garbage", &torn, &good2],
    )
    .await;

    let loaded = backend.load(&stem, &key1).await.unwrap();
    assert!(loaded.snapshot.is_none());
    assert_eq!(loaded.patches.len(), 2);
    assert_eq!(loaded.invalid.len(), 3, "{:?}", loaded.invalid);
    let mut expected = base.clone();
    apply_patch(&mut expected, &p1).unwrap();
    apply_patch(&mut expected, &p2).unwrap();
    assert_eq!(rebuild(&key1, &loaded), expected);

    // The snapshot was renamed aside, never deleted, and no longer expires.
    let snap_aside = &loaded.invalid[0];
    assert_eq!(snap_aside.from, snap);
    assert!(snap_aside.to.starts_with(&format!("{snap}:corrupt:")));
    let kept: Vec<u8> = query(&mut conn, &[b"GET", snap_aside.to.as_bytes()]).await;
    assert_eq!(kept, b"{not json");
    let pttl: i64 = query(&mut conn, &[b"PTTL", snap_aside.to.as_bytes()]).await;
    assert_eq!(pttl, -1);
    let exists: bool = query(&mut conn, &[b"EXISTS", snap.as_bytes()]).await;
    assert!(!exists);
    // The bad log elements were copied aside and taken out of the log.
    let log_aside = &loaded.invalid[1].to;
    assert!(log_aside.starts_with(&format!("{log}:corrupt:")));
    let copied: Vec<Vec<u8>> =
        query(&mut conn, &[b"LRANGE", log_aside.as_bytes(), b"0", b"-1"]).await;
    assert_eq!(copied, vec![b"garbage".to_vec(), torn.clone()]);
    let remaining: Vec<Vec<u8>> = query(&mut conn, &[b"LRANGE", log.as_bytes(), b"0", b"-1"]).await;
    assert_eq!(remaining, vec![good1.clone(), good2.clone()]);
    assert_eq!(loaded.view.log_len, 2);
    assert!(loaded.view.version > 0 && loaded.view.generation > 0);
    // A second load finds nothing more to move.
    let again = backend.load(&stem, &key1).await.unwrap();
    assert!(again.invalid.is_empty());
    assert_eq!(again.view, loaded.view);

    // Another user's session under this stem, and a log of the wrong type.
    let key2 = key(2);
    let stem2 = key2.file_stem();
    let foreign = serde_json::to_vec(&new_session(&key(3))).unwrap();
    let snap2 = backend.key_name(&stem2, "snap");
    let log2 = backend.key_name(&stem2, "log");
    let () = query(&mut conn, &[b"SET", snap2.as_bytes(), &foreign]).await;
    let _: u64 = query(&mut conn, &[b"HSET", log2.as_bytes(), b"f", b"v"]).await;
    let loaded = backend.load(&stem2, &key2).await.unwrap();
    assert!(loaded.snapshot.is_none() && loaded.patches.is_empty());
    let from: Vec<&str> = loaded.invalid.iter().map(|q| q.from.as_str()).collect();
    assert_eq!(from, vec![snap2.as_str(), log2.as_str()]);
    assert!(loaded.invalid[0].reason.contains("another user"));
    let kind: String = query(&mut conn, &[b"TYPE", loaded.invalid[1].to.as_bytes()]).await;
    assert_eq!(kind, "hash");
    // The store then writes a new snapshot over it.
    let bytes = serde_json::to_vec(&new_session(&key2)).unwrap();
    assert!(backend
        .write_snapshot(&stem2, &bytes, loaded.view)
        .await
        .unwrap()
        .is_some());

    // Garbage pushed by hand after a load: the next read of changes moves it aside too.
    let view = backend.load(&stem, &key1).await.unwrap().view;
    let _: u64 = query(&mut conn, &[b"RPUSH", log.as_bytes(), b"junk"]).await;
    match backend.read_changes(&stem, &key1, view).await.unwrap() {
        RedisChange::Full(loaded) => {
            assert_eq!(loaded.invalid.len(), 1);
            assert_eq!(loaded.patches.len(), 2);
        }
        other => panic!("expected a full read, got {other:?}"),
    }
    // A version counter that is not one.
    let ver = backend.key_name(&stem, "ver");
    let () = query(&mut conn, &[b"SET", ver.as_bytes(), b"banana"]).await;
    let loaded = backend.load(&stem, &key1).await.unwrap();
    assert_eq!(loaded.invalid.len(), 1);
    assert_eq!(loaded.invalid[0].from, ver);
    assert_eq!(loaded.view.version, 1);
    assert_eq!(loaded.patches.len(), 2);
}

async fn next_event(
    events: &mut mpsc::Receiver<RedisEvent>,
    within: Duration,
) -> Option<RedisEvent> {
    tokio::time::timeout(within, events.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn a_publish_reaches_the_other_instance_and_not_its_own() {
    let server = RedisServer::start();
    let a = connect(&server, "instance-a").await;
    let b = connect(&server, "instance-b").await;
    let mut a_events = a.subscribe().await.unwrap();
    let mut b_events = b.subscribe().await.unwrap();
    let stem = key(1).file_stem();

    // Both subscriptions and the publisher's own one count as receivers.
    assert_eq!(a.publish(&stem, 7).await.unwrap(), 2);
    assert_eq!(
        next_event(&mut b_events, Duration::from_secs(5)).await,
        Some(RedisEvent::Changed {
            stem: stem.clone(),
            instance_id: "instance-a".into(),
            version: 7
        })
    );
    b.publish(&stem, 8).await.unwrap();
    assert_eq!(
        next_event(&mut a_events, Duration::from_secs(5)).await,
        Some(RedisEvent::Changed {
            stem: stem.clone(),
            instance_id: "instance-b".into(),
            version: 8
        })
    );
    // Neither hears itself, nor other prefixes, nor junk on a look-alike channel.
    let other = RedisBackend::connect(&server.url(), "other:", TTL, "c".into())
        .await
        .unwrap();
    other.publish(&stem, 9).await.unwrap();
    let mut conn = raw_connection(&server).await;
    let _: u64 = query(
        &mut conn,
        &[b"PUBLISH", a.channel_name(&stem).as_bytes(), b"junk"],
    )
    .await;
    assert_eq!(
        next_event(&mut a_events, Duration::from_millis(300)).await,
        None
    );
    assert_eq!(
        next_event(&mut b_events, Duration::from_millis(300)).await,
        None
    );
}

/// Polls `call` until it succeeds, for at most `within`; every failure meanwhile must be an
/// EUNAVAILABLE one.
async fn eventually<T, F, Fut>(within: Duration, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = mia_narrative_session::error::Result<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(e) => {
                assert!(is_unavailable(&e), "{e}");
                assert!(Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_fails_calls_meanwhile_then_reconnects_and_resyncs() {
    let mut server = RedisServer::start_with(true);
    let a = connect(&server, "a").await;
    let b = connect(&server, "b").await;
    let mut a_events = a.subscribe().await.unwrap();
    let key = key(1);
    let stem = key.file_stem();
    let (mut session, view) = create(&a, &key).await;
    let mut clock = HybridClock::new("a");
    let (patch, frame) = record(&session, &mut clock, &entry_update("k", 1));
    apply_patch(&mut session, &patch).unwrap();
    let view = a.append(&stem, &[frame], view).await.unwrap().unwrap();

    server.kill();
    let started = Instant::now();
    let (_, frame2) = record(&session, &mut clock, &entry_update("k", 2));
    let errors = [
        a.load(&stem, &key).await.unwrap_err(),
        a.append(&stem, std::slice::from_ref(&frame2), view)
            .await
            .unwrap_err(),
        a.write_snapshot(&stem, b"{}", view).await.unwrap_err(),
        a.read_changes(&stem, &key, view).await.unwrap_err(),
        a.touch(&stem).await.unwrap_err(),
        a.stems().await.unwrap_err(),
        a.publish(&stem, 1).await.unwrap_err(),
        a.delete(&stem).await.unwrap_err(),
    ];
    for error in &errors {
        assert_eq!(error.code, ErrorCode::Unavailable, "{error}");
        assert!(is_unavailable(error));
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failing took {:?}",
        started.elapsed()
    );

    server.restart();
    // What was acknowledged before the kill is there (the AOF is on in this test).
    let loaded = eventually(Duration::from_secs(10), || a.load(&stem, &key)).await;
    assert_eq!(loaded.view, view);
    assert_eq!(rebuild(&key, &loaded), session);
    let view = eventually(Duration::from_secs(10), || {
        a.append(&stem, std::slice::from_ref(&frame2), view)
    })
    .await
    .expect("nothing else wrote");
    assert_eq!(view.log_len, 2);
    // The subscription came back by itself and says so: messages sent meanwhile may be lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match next_event(
            &mut a_events,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        {
            Some(RedisEvent::Resync) => break,
            Some(_) => continue,
            None => panic!("no Resync after the restart"),
        }
    }
    // And it is live again.
    eventually(Duration::from_secs(10), || b.publish(&stem, 42)).await;
    assert_eq!(
        next_event(&mut a_events, Duration::from_secs(5)).await,
        Some(RedisEvent::Changed {
            stem,
            instance_id: "b".into(),
            version: 42
        })
    );
}

#[tokio::test]
async fn connecting_to_a_closed_port_fails_cleanly() {
    let port = free_port();
    let started = Instant::now();
    let error = RedisBackend::connect(
        &format!("redis://user:secret@127.0.0.1:{port}/0"),
        PREFIX,
        TTL,
        "a".into(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(is_unavailable(&error), "{error}");
    assert!(!error.message.contains("secret"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn bad_options_are_refused() {
    for (url, prefix, ttl) in [
        ("not a url", PREFIX, TTL),
        ("http://127.0.0.1:1/", PREFIX, TTL),
        ("redis://127.0.0.1:1/0", "mia:{x}:", TTL),
        ("redis://127.0.0.1:1/0", PREFIX, Duration::ZERO),
        // TLS without certificate checks is not compiled in.
        ("rediss://127.0.0.1:1/0#insecure", PREFIX, TTL),
    ] {
        let error = RedisBackend::connect(url, prefix, ttl, "a".into())
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Invalid, "{url} {prefix}: {error}");
    }
    let server = RedisServer::start();
    let backend = connect(&server, "a").await;
    let key = key(1);
    let error = backend.load("../etc", &key).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Invalid);
}
