//! The N-API binding: the only code that knows JavaScript. It converts arguments and results and
//! calls the core; no session logic lives here.
//!
//! Conventions that keep Node's main thread free and the process alive:
//! - Objects cross as JSON text: `JSON.stringify` on the way in, `JSON.parse` on the way out (both
//!   V8's own, and far cheaper than converting an object tree value by value). Parsing, merging and
//!   serialising happen on tokio threads.
//! - Every argument is taken as an unknown value and checked here, so a wrong type rejects with
//!   `EINVALID` like any other bad input.
//! - Every rejection carries the core's stable `code`. Panics are caught at every entry point:
//!   `catch_unwind` around synchronous code and around every future the binding runs.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use serde::Deserialize;

use crate::error::StoreError;
use crate::merge::{merge_session_texts, session_too_large};
use crate::paths::{default_data_dir, normalize_workspace};
use crate::store::redis::{RedisConfig, MAX_WAIT_REPLICAS, MAX_WAIT_TIMEOUT};
use crate::store::{
    BackendChoice, MergeEvent, MergeMode, SessionStore, StoreOptions, DEFAULT_AUTOSAVE_INTERVAL,
    DEFAULT_CLEANUP_INTERVAL, DEFAULT_FOLD_AFTER, DEFAULT_KEY_PREFIX, DEFAULT_MAX_SESSION_BYTES,
    DEFAULT_TTL_DAYS, DEFAULT_UNLOAD_AFTER,
};
use crate::text::Text;

type Outcome<T> = std::result::Result<T, StoreError>;

/// The code-server-compatible default sessions directory:
/// `$XDG_DATA_HOME/mia-code-server/sessions`, or `~/.local/share/mia-code-server/sessions`
/// (`%LOCALAPPDATA%\mia-code-server\Data\sessions` on Windows).
#[napi(catch_unwind, js_name = "defaultDataDir")]
pub fn default_data_dir_path() -> String {
    default_data_dir().to_string_lossy().into_owned()
}

/// A workspace path as a session's `workspaceId`: absolute, with `.` and `..` resolved and no
/// trailing slash (lexically; the file system is not consulted). An empty path is `"(none)"`.
#[napi(
    catch_unwind,
    js_name = "normalizeWorkspaceId",
    ts_args_type = "path: string"
)]
pub fn normalize_workspace_id(path: Unknown) -> Result<String, String> {
    let path = string_arg(path, "path").map_err(coded_error)?;
    Ok(normalize_workspace(&path))
}

/// Merges two sessions by the rules in the README: last-write-wins by hybrid logical clock for
/// simple values, unions by id for charts, beats and conversation entries. Commutative,
/// associative and idempotent. Throws `EINVALID` for a malformed session. Synchronous, and both
/// sessions cross as objects: for large sessions held as text, `mergeSessionsJson` is far cheaper.
#[napi(
    catch_unwind,
    js_name = "mergeSessions",
    ts_args_type = "a: NarrativeSession, b: NarrativeSession",
    ts_return_type = "NarrativeSession"
)]
pub fn merge_sessions_js(env: &Env, a: Unknown, b: Unknown) -> Result<JsonText, String> {
    let merged = (|| {
        // The same path as `mergeSessionsJson` (large sessions parse on two threads at once),
        // waited for here.
        let a = Text::Utf8(stringify(env, a, "a")?.into_bytes());
        let b = Text::Utf8(stringify(env, b, "b")?.into_bytes());
        String::from_utf8(merge_session_texts(a, b, MAX)?)
            .map_err(|e| StoreError::internal(e.to_string()))
    })();
    merged.map(JsonText).map_err(coded_error)
}

/// `mergeSessions` for sessions held as JSON text (a string, or a Buffer of UTF-8, as read from a
/// file, Redis or a socket). Parsing (both at once), merging and serialising run off Node's thread;
/// the result is the merged session's JSON text in a Buffer, each conversation entry in it the text it
/// came as. Rejects with `EINVALID` for a malformed session and `ETOOLARGE` past 32 MiB.
#[napi(
    catch_unwind,
    js_name = "mergeSessionsJson",
    ts_args_type = "a: string | Buffer, b: string | Buffer",
    ts_return_type = "Promise<Buffer>"
)]
pub fn merge_sessions_json<'env>(
    env: &'env Env,
    a: Unknown,
    b: Unknown,
) -> Result<PromiseRaw<'env, Coded<Buffer>>> {
    let texts = text_arg(a, "a").and_then(|a| Ok((a, text_arg(b, "b")?)));
    promise(env, async move {
        let (a, b) = texts?;
        let merged = tokio::task::spawn_blocking(move || merge_session_texts(a, b, MAX))
            .await
            .map_err(|e| StoreError::internal(format!("merge failed: {e}")))??;
        Ok(merged.into())
    })
}

/// The size limit of a session passed to `mergeSessions` and `mergeSessionsJson`.
const MAX: usize = DEFAULT_MAX_SESSION_BYTES;

/// JSON text from a string or a Buffer, copied (a Buffer's bytes may change once the call returns).
/// Its size is checked before it is copied: a string's UTF-8 form is at least as long as its UTF-16
/// length, which V8 knows without a walk (the exact size is checked once it is UTF-8).
fn text_arg(value: Unknown, what: &str) -> Outcome<Text> {
    let internal = |e: Error| StoreError::internal(e.to_string());
    match value.get_type() {
        Ok(ValueType::String) => {
            let units = unsafe { value.cast::<napi::JsString>() }
                .and_then(|s| s.utf16_len())
                .map_err(internal)?;
            if units > MAX {
                return Err(session_too_large(what, units, MAX));
            }
            Ok(Text::Utf16(utf16_of(value, units).map_err(internal)?))
        }
        Ok(ValueType::Object) if value.is_buffer().unwrap_or(false) => {
            let bytes = unsafe { value.cast::<BufferSlice>() }.map_err(internal)?;
            if bytes.len() > MAX {
                return Err(session_too_large(what, bytes.len(), MAX));
            }
            let mut copy = crate::text::UTF8_SPARES.take(bytes.len());
            copy.extend_from_slice(&bytes);
            Ok(Text::Utf8(copy))
        }
        _ => Err(StoreError::invalid(format!(
            "{what} must be a string or a Buffer of JSON text"
        ))),
    }
}

/// A string's UTF-16 code units, `units` of them: napi-rs's `Utf16String` would zero its buffer and
/// ask V8 for the length a second time first.
fn utf16_of(value: Unknown, units: usize) -> Result<Vec<u16>> {
    let capacity = units + 1; // V8 also writes a NUL.
    let mut out = crate::text::UTF16_SPARES.take(capacity);
    let mut written = 0;
    let raw = value.value();
    // SAFETY: V8 writes at most `capacity` units, the NUL included, and reports how many it wrote
    // before the NUL; those are initialised.
    check_status!(unsafe {
        napi::sys::napi_get_value_string_utf16(
            raw.env,
            raw.value,
            out.as_mut_ptr(),
            capacity,
            &mut written,
        )
    })?;
    unsafe { out.set_len(written.min(units)) };
    Ok(out)
}

/// A merge that changed a session, as listeners receive it.
#[napi(object, js_name = "MergeEvent")]
pub struct MergeEventObject {
    pub user_id: String,
    pub workspace_id: String,
    pub session_id: String,
    /// The `origin` given to `merge`, `"local"` when none was, or `"external"` for a change that
    /// another process wrote to disk.
    pub origin: String,
    /// Paths of the values that changed, such as `memory.goal` or `conversationHistory.e1`.
    pub changes: Vec<String>,
}

/// `loadRaw`'s result: the session as JSON text, unparsed.
#[napi(object)]
pub struct LoadRawResult {
    /// UTF-8 JSON text of the `NarrativeSession`.
    pub session_json: Buffer,
    /// The session's id (also inside the text).
    pub session_id: String,
    pub created: bool,
    pub recovered: bool,
}

type MergeListener =
    ThreadsafeFunction<MergeEventObject, (), MergeEventObject, Status, false, true>;

/// Persistent narrative sessions, one per (user, workspace), kept in memory while in use and
/// written crash-safely to `dataDir`.
#[napi]
pub struct NarrativeSessionStore {
    store: SessionStore,
}

#[napi]
impl NarrativeSessionStore {
    /// Opens a store. Starts autosave and TTL cleanup, neither of which keeps Node alive.
    /// Rejects with `EINVALID` for bad options and `EIO` when the directory cannot be created.
    #[napi(
        catch_unwind,
        ts_args_type = "options?: OpenOptions",
        ts_return_type = "Promise<NarrativeSessionStore>"
    )]
    pub fn open<'env>(
        env: &'env Env,
        options: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, Coded<NarrativeSessionStore>>> {
        let options =
            optional_json(env, options, "options").and_then(|text| open_options(text.as_deref()));
        promise(env, async move {
            let store = SessionStore::open(options?).await?;
            Ok(NarrativeSessionStore { store })
        })
    }

    /// The directory this store keeps its files in.
    #[napi(getter, catch_unwind)]
    pub fn data_dir(&self) -> String {
        self.store.data_dir().to_string_lossy().into_owned()
    }

    /// The session of `userId` in `workspaceId`. The first access creates the session and
    /// persists it. `recovered` is true when the stored file was unusable and a backup was used.
    #[napi(
        catch_unwind,
        ts_args_type = "userId: string, workspaceId: string",
        ts_return_type = "Promise<LoadResult>"
    )]
    pub fn load<'env>(
        &self,
        env: &'env Env,
        user_id: Unknown,
        workspace_id: Unknown,
    ) -> Result<PromiseRaw<'env, Coded<JsonText>>> {
        let store = self.store.clone();
        let ids = ids(user_id, workspace_id);
        promise(env, async move {
            let (user, workspace) = ids?;
            let loaded = store.load(&user, &workspace).await?;
            Ok(JsonText(format!(
                r#"{{"session":{},"created":{},"recovered":{}}}"#,
                loaded.session_json, loaded.created, loaded.recovered
            )))
        })
    }

    /// The session as UTF-8 JSON text in a Buffer, for a host that only forwards it (to a socket:
    /// `ws.send(sessionJson, { binary: false })`). Nothing is parsed or converted on Node's thread:
    /// the Buffer is filled on a tokio thread. The store keeps the text until the session changes,
    /// so a second load of an unchanged session copies it instead of serialising the session
    /// again; each Buffer is the caller's own. Otherwise as `load`.
    #[napi(
        catch_unwind,
        ts_args_type = "userId: string, workspaceId: string",
        ts_return_type = "Promise<LoadRawResult>"
    )]
    pub fn load_raw<'env>(
        &self,
        env: &'env Env,
        user_id: Unknown,
        workspace_id: Unknown,
    ) -> Result<PromiseRaw<'env, Coded<LoadRawResult>>> {
        let store = self.store.clone();
        let ids = ids(user_id, workspace_id);
        promise(env, async move {
            let (user, workspace) = ids?;
            let loaded = store.load(&user, &workspace).await?;
            Ok(LoadRawResult {
                // A copy, made here on a tokio thread: JavaScript may write into its Buffer.
                session_json: crate::yielding::copy(loaded.session_json.as_bytes()).into(),
                session_id: loaded.session_id,
                created: loaded.created,
                recovered: loaded.recovered,
            })
        })
    }

    /// Merges `update` (any subset of a session's fields) into the session and marks it dirty.
    /// List entries are added or merged by id; simple values take the update's `versions` clock,
    /// or the server's clock when it has none. `changes` names each path that changed; `lost`, each
    /// value of the update that lost to a later write (a host must not tell the writer those
    /// landed). Listeners registered with `onMerge` hear of every merge that changed something,
    /// tagged with `origin`.
    #[napi(
        catch_unwind,
        ts_args_type = "userId: string, workspaceId: string, update: SessionUpdate, options?: MergeOptions",
        ts_return_type = "Promise<MergeResult>"
    )]
    pub fn merge<'env>(
        &self,
        env: &'env Env,
        user_id: Unknown,
        workspace_id: Unknown,
        update: Unknown,
        options: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, Coded<JsonText>>> {
        let store = self.store.clone();
        let ids = ids(user_id, workspace_id);
        let update = stringify(env, update, "update");
        let options = optional_json(env, options, "options")
            .and_then(|text| parse_options::<MergeOptionsJson>(text.as_deref()));
        let writes_file =
            store.is_file_backed() && matches!(&options, Ok(o) if o.durable == Some(true));
        promise_on(writes_file, env, async move {
            let (user, workspace) = ids?;
            let options = options?;
            let mode = MergeMode {
                with_session: options.return_session.unwrap_or(false),
                durable: options.durable.unwrap_or(false),
            };
            let merged = store
                .merge(&user, &workspace, &update?, options.origin.as_deref(), mode)
                .await?;
            let changes = serde_json::to_string(&merged.changes).map_err(internal)?;
            let lost = serde_json::to_string(&merged.lost).map_err(internal)?;
            Ok(JsonText(match merged.session_json {
                Some(session) => {
                    format!(r#"{{"session":{session},"changes":{changes},"lost":{lost}}}"#)
                }
                None => format!(r#"{{"changes":{changes},"lost":{lost}}}"#),
            }))
        })
    }

    /// Writes the session durably now, if it has unsaved changes (call it on disconnect).
    /// Resolves to whether anything was written.
    #[napi(
        catch_unwind,
        ts_args_type = "userId: string, workspaceId: string",
        ts_return_type = "Promise<boolean>"
    )]
    pub fn save<'env>(
        &self,
        env: &'env Env,
        user_id: Unknown,
        workspace_id: Unknown,
    ) -> Result<PromiseRaw<'env, Coded<bool>>> {
        let store = self.store.clone();
        let ids = ids(user_id, workspace_id);
        promise_on(store.is_file_backed(), env, async move {
            let (user, workspace) = ids?;
            store.save(&user, &workspace).await
        })
    }

    /// Writes every session with unsaved changes now: what the autosave tick does, in one call.
    /// Resolves to how many were written; when some fail, rejects with the first error (those stay
    /// dirty and are tried again on the next tick).
    #[napi(catch_unwind, ts_return_type = "Promise<number>")]
    pub fn flush<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Coded<u32>>> {
        let store = self.store.clone();
        promise(env, async move {
            let written = store.flush_dirty().await?;
            Ok(u32::try_from(written).unwrap_or(u32::MAX))
        })
    }

    /// Removes the session from memory and disk. Resolves to whether it was stored.
    #[napi(
        catch_unwind,
        ts_args_type = "userId: string, workspaceId: string",
        ts_return_type = "Promise<boolean>"
    )]
    pub fn delete<'env>(
        &self,
        env: &'env Env,
        user_id: Unknown,
        workspace_id: Unknown,
    ) -> Result<PromiseRaw<'env, Coded<bool>>> {
        let store = self.store.clone();
        let ids = ids(user_id, workspace_id);
        promise(env, async move {
            let (user, workspace) = ids?;
            store.delete(&user, &workspace).await
        })
    }

    /// A summary of every stored session, sorted by user and workspace.
    #[napi(catch_unwind, ts_return_type = "Promise<SessionSummary[]>")]
    pub fn list<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Coded<JsonText>>> {
        let store = self.store.clone();
        promise(env, async move {
            let sessions = store.list().await?;
            serde_json::to_string(&sessions)
                .map(JsonText)
                .map_err(internal)
        })
    }

    /// Removes sessions whose `updatedAt` is more than `ttlDays` (default: the store's) before
    /// `now` (milliseconds since the epoch; default: now). Sessions loaded in this store are kept,
    /// and a session saved during the sweep survives it.
    #[napi(
        catch_unwind,
        ts_args_type = "options?: CleanupOptions",
        ts_return_type = "Promise<CleanupReport>"
    )]
    pub fn cleanup<'env>(
        &self,
        env: &'env Env,
        options: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, Coded<JsonText>>> {
        let store = self.store.clone();
        let options = optional_json(env, options, "options")
            .and_then(|text| cleanup_options(text.as_deref()));
        promise(env, async move {
            let options = options?;
            let report = store.cleanup(options.ttl_days, options.now).await?;
            serde_json::to_string(&report)
                .map(JsonText)
                .map_err(internal)
        })
    }

    /// Calls `listener` for every merge that changed a session. Returns a function that
    /// unsubscribes. A listener never keeps Node alive.
    #[napi(
        catch_unwind,
        ts_args_type = "listener: (event: MergeEvent) => void",
        ts_return_type = "() => void"
    )]
    pub fn on_merge<'env>(
        &self,
        env: &'env Env,
        listener: Unknown,
    ) -> Result<Function<'env, (), ()>, String> {
        if listener.get_type().map_err(status_error)? != ValueType::Function {
            return Err(coded_error(StoreError::invalid(
                "listener must be a function",
            )));
        }
        let function: Function<MergeEventObject, ()> =
            unsafe { listener.cast() }.map_err(status_error)?;
        let listener: MergeListener = function
            .build_threadsafe_function::<MergeEventObject>()
            .weak::<true>()
            .callee_handled::<false>()
            .build()
            .map_err(status_error)?;
        let id = self.store.on_merge(Arc::new(move |event: &MergeEvent| {
            let object = MergeEventObject {
                user_id: event.user_id.clone(),
                workspace_id: event.workspace_id.clone(),
                session_id: event.session_id.clone(),
                origin: event.origin.clone(),
                changes: event.changes.clone(),
            };
            listener.call(object, ThreadsafeFunctionCallMode::NonBlocking);
        }));
        let store = self.store.clone();
        env.create_function_from_closure("unsubscribe", move |_| {
            store.remove_listener(id);
            Ok(())
        })
        .map_err(status_error)
    }

    /// Writes every dirty session, stops the timers, closes every file it holds open and frees the
    /// sessions' memory. Later calls reject with `ECLOSED`, except `close()`: if a write failed,
    /// the sessions stay in memory and another `close()` tries again (every other session is
    /// written first). Resolves to what it wrote: `notCompacted` names sessions whose changes are
    /// durable in their journal but could not be folded into a snapshot (a nearly full disk).
    #[napi(catch_unwind, ts_return_type = "Promise<CloseReport>")]
    pub fn close<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Coded<JsonText>>> {
        let store = self.store.clone();
        promise(env, async move {
            let report = store.close().await?;
            let not_compacted: Vec<serde_json::Value> = report
                .not_compacted
                .into_iter()
                .map(|(session_id, message)| {
                    serde_json::json!({ "sessionId": session_id, "message": message })
                })
                .collect();
            let json =
                serde_json::json!({ "written": report.written, "notCompacted": not_compacted });
            Ok(JsonText(json.to_string()))
        })
    }
}

/// What `check()` reports as it goes.
#[napi(object, js_name = "CheckProgress")]
pub struct CheckProgressObject {
    /// Sessions looked at so far.
    pub done: u32,
    pub total: u32,
}

type ProgressListener =
    ThreadsafeFunction<CheckProgressObject, (), CheckProgressObject, Status, false, true>;

/// The calls of the operator tools (`mia-sessions`; docs/operating.md). None of them keeps a
/// session in memory.
#[napi]
impl NarrativeSessionStore {
    /// The stored session, or null when none is stored: nothing is created, moved or repaired.
    /// A damaged snapshot is skipped for its backup, a damaged journal record for the next; `notes`
    /// says so.
    #[napi(
        catch_unwind,
        ts_args_type = "userId: string, workspaceId: string",
        ts_return_type = "Promise<PeekResult | null>"
    )]
    pub fn peek<'env>(
        &self,
        env: &'env Env,
        user_id: Unknown,
        workspace_id: Unknown,
    ) -> Result<PromiseRaw<'env, Coded<JsonText>>> {
        let store = self.store.clone();
        let ids = ids(user_id, workspace_id);
        promise(env, async move {
            let (user, workspace) = ids?;
            let peeked = store.peek(&user, &workspace).await?;
            Ok(JsonText(match peeked {
                None => "null".to_string(),
                Some(p) => {
                    serde_json::json!({ "session": p.session, "notes": p.notes }).to_string()
                }
            }))
        })
    }

    /// Checks every stored session and every copy kept aside, read-only, and says what `repair`
    /// would do for each damaged one. `onProgress` (optional) hears how far it got.
    #[napi(
        catch_unwind,
        ts_args_type = "onProgress?: (progress: CheckProgress) => void",
        ts_return_type = "Promise<StoreCheck>"
    )]
    pub fn check<'env>(
        &self,
        env: &'env Env,
        on_progress: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, Coded<JsonText>>> {
        let listener = match on_progress {
            Some(f)
                if f.get_type()
                    .map_err(|e| Error::new(Status::GenericFailure, e.reason))?
                    == ValueType::Function =>
            {
                let function: Function<CheckProgressObject, ()> = unsafe { f.cast() }?;
                Some(
                    function
                        .build_threadsafe_function::<CheckProgressObject>()
                        .weak::<true>()
                        .callee_handled::<false>()
                        .build()?,
                )
            }
            _ => None,
        };
        let listener: Option<ProgressListener> = listener;
        let store = self.store.clone();
        promise(env, async move {
            let progress = Arc::new(move |done: usize, total: usize| {
                if let Some(listener) = &listener {
                    let object = CheckProgressObject {
                        done: u32::try_from(done).unwrap_or(u32::MAX),
                        total: u32::try_from(total).unwrap_or(u32::MAX),
                    };
                    listener.call(object, ThreadsafeFunctionCallMode::NonBlocking);
                }
            });
            let report = store.check(progress).await?;
            json_of(&report)
        })
    }

    /// The copies kept aside (damaged files, or Redis values, moved there by a load), from one
    /// listing: nothing is read.
    #[napi(catch_unwind, ts_return_type = "Promise<AsideCopy[]>")]
    pub fn quarantined<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, Coded<JsonText>>> {
        let store = self.store.clone();
        promise(env, async move {
            let copies = store.quarantined().await?;
            json_of(&copies)
        })
    }

    /// Restores a damaged session from its best copies (see docs/operating.md): damaged files are
    /// moved aside, never deleted. Does nothing to a session with nothing wrong.
    #[napi(
        catch_unwind,
        ts_args_type = "userId: string, workspaceId: string",
        ts_return_type = "Promise<RepairReport>"
    )]
    pub fn repair<'env>(
        &self,
        env: &'env Env,
        user_id: Unknown,
        workspace_id: Unknown,
    ) -> Result<PromiseRaw<'env, Coded<JsonText>>> {
        let store = self.store.clone();
        let ids = ids(user_id, workspace_id);
        promise(env, async move {
            let (user, workspace) = ids?;
            let outcome = store.repair(&user, &workspace).await?;
            json_of(&outcome)
        })
    }

    /// Merges a whole session (an object, or its JSON text, as `peek` and `mia-sessions export`
    /// give it) into the store by the merge rules: written as it is when none is stored, otherwise
    /// only what it holds that is newer or missing is taken. Never overwrites.
    #[napi(
        catch_unwind,
        ts_args_type = "session: NarrativeSession | string",
        ts_return_type = "Promise<ImportResult>"
    )]
    pub fn import_session<'env>(
        &self,
        env: &'env Env,
        session: Unknown,
    ) -> Result<PromiseRaw<'env, Coded<JsonText>>> {
        let text = match session.get_type() {
            Ok(ValueType::String) => string_arg(session, "session"),
            _ => stringify(env, session, "session"),
        };
        let store = self.store.clone();
        promise(env, async move {
            let outcome = store.import_session(&text?).await?;
            json_of(&outcome)
        })
    }

    /// The sessions `cleanup` with these options would remove, read-only. With Redis, which
    /// expires sessions itself: those whose keys have no expiry and are past the TTL.
    #[napi(
        catch_unwind,
        ts_args_type = "options?: CleanupOptions",
        ts_return_type = "Promise<SessionSummary[]>"
    )]
    pub fn expired_sessions<'env>(
        &self,
        env: &'env Env,
        options: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, Coded<JsonText>>> {
        let store = self.store.clone();
        let options = optional_json(env, options, "options")
            .and_then(|text| cleanup_options(text.as_deref()));
        promise(env, async move {
            let options = options?;
            let sessions = store
                .expired_sessions(options.ttl_days, options.now)
                .await?;
            json_of(&sessions)
        })
    }

    /// Removes the session if it is expired (compare, then delete, under its lock): one step of
    /// `cleanup`. Resolves to whether it was removed.
    #[napi(
        catch_unwind,
        ts_args_type = "userId: string, workspaceId: string, options?: CleanupOptions",
        ts_return_type = "Promise<boolean>"
    )]
    pub fn remove_if_expired<'env>(
        &self,
        env: &'env Env,
        user_id: Unknown,
        workspace_id: Unknown,
        options: Option<Unknown>,
    ) -> Result<PromiseRaw<'env, Coded<bool>>> {
        let store = self.store.clone();
        let ids = ids(user_id, workspace_id);
        let options = optional_json(env, options, "options")
            .and_then(|text| cleanup_options(text.as_deref()));
        promise(env, async move {
            let (user, workspace) = ids?;
            let options = options?;
            store
                .remove_if_expired(&user, &workspace, options.ttl_days, options.now)
                .await
        })
    }
}

/// A result on its way to JavaScript. Its conversion runs on Node's thread, where a coded error can
/// become a real `Error` with `code` set, and the promise rejects with exactly that error.
pub struct Coded<T>(Outcome<T>);

impl<T: ToNapiValue> ToNapiValue for Coded<T> {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        match val.0 {
            Ok(value) => unsafe { T::to_napi_value(env, value) },
            Err(err) => {
                let applied = err.applied;
                let error = unsafe { JsError::from(coded_error(err)).into_value(env) };
                if applied {
                    // SAFETY: `error` is a live object of this env, on Node's thread.
                    unsafe { set_true(env, error, c"applied") };
                }
                Err(Error::from(unsafe {
                    Unknown::from_raw_unchecked(env, error)
                }))
            }
        }
    }
}

/// JSON text that reaches JavaScript as the value it encodes, through V8's `JSON.parse`.
pub struct JsonText(String);

impl ToNapiValue for JsonText {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let env = Env::from_raw(env);
        let parse: Function<String, Unknown> = json_global(&env)?.get_named_property("parse")?;
        Ok(parse.call(val.0)?.raw())
    }
}

/// Runs `work` on tokio (spawned through [`dispatch`]) and returns its promise. A panic in it
/// rejects with EINTERNAL.
fn promise<T, F>(env: &Env, work: F) -> Result<PromiseRaw<'_, Coded<T>>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Outcome<T>> + Send + 'static,
{
    let (deferred, promise) = env.create_deferred::<Coded<T>, _>()?;
    dispatch(Box::pin(async move {
        let outcome = outcome_of(work).await;
        deferred.resolve(move |_| Ok(Coded(outcome)));
    }));
    Ok(PromiseRaw::new(env.raw(), promise.raw()))
}

/// `work`'s outcome; a panic while it runs becomes EINTERNAL.
async fn outcome_of<T>(work: impl Future<Output = Outcome<T>>) -> Outcome<T> {
    CatchUnwind(Box::pin(work))
        .await
        .unwrap_or_else(|_| Err(StoreError::internal("task failed: it panicked")))
}

type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

type Sender = tokio::sync::mpsc::UnboundedSender<Task>;
static DISPATCHER: std::sync::Mutex<Option<Sender>> = std::sync::Mutex::new(None);

/// Runs as each Node environment (the main thread, a worker) loads the addon, and makes its first
/// call start a new dispatcher. napi-rs stops its tokio runtime when the last environment using the
/// addon goes and starts a new one for the next; the old runtime's dispatcher still looked open
/// while that runtime shut down (up to 100 ms), and a call sent to it then never ran: its promise
/// never settled (3 of 200 runs of the worker-threads test, run 4 at a time). A dispatcher that
/// another environment's calls still use is only replaced: the old one runs what it was sent.
#[napi(module_exports)]
pub fn on_environment_start(_exports: Object) -> Result<()> {
    crate::lock(&DISPATCHER).take();
    Ok(())
}

/// Spawns `task` on tokio through the dispatcher, a tokio task that spawns what it is sent.
/// Spawning from Node's thread wakes a parked tokio worker for every call, a system call and a
/// thread switch on Node's thread each; the channel wakes the dispatcher only when it is waiting,
/// so a burst of calls (a host saving 100 sessions in a loop) wakes it once.
fn dispatch(task: Task) {
    let mut dispatcher = crate::lock(&DISPATCHER);
    // napi-rs stops its runtime when the last Node environment using the addon goes (and starts a
    // new one for the next): the dispatcher then went with it, and a new one is started.
    let sender = match dispatcher.as_ref() {
        Some(sender) if !sender.is_closed() => sender,
        _ => {
            let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Task>();
            napi::bindgen_prelude::spawn(async move {
                while let Some(task) = receiver.recv().await {
                    tokio::spawn(task);
                }
            });
            dispatcher.insert(sender)
        }
    };
    if let Err(refused) = sender.send(task) {
        napi::bindgen_prelude::spawn(refused.0);
    }
}

/// [`promise`], or [`promise_blocking`] when the call waits on a file write and its fsync (a
/// durable merge or a save on the file backend) and a blocking slot is free.
fn promise_on<T, F>(writes_file: bool, env: &Env, work: F) -> Result<PromiseRaw<'_, Coded<T>>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Outcome<T>> + Send + 'static,
{
    match writes_file.then(BlockingSlot::take).flatten() {
        Some(slot) => promise_blocking(env, slot, work),
        None => promise(env, work),
    }
}

/// Runs `work` to completion on a thread of tokio's blocking pool and returns its promise. That
/// thread may block on the disk, so no tokio worker is held up by it or has to hand its tasks to
/// another thread first: the call wakes one thread instead of two (50–110 µs less a durable save
/// here). A panic in it rejects with EINTERNAL.
fn promise_blocking<T, F>(
    env: &Env,
    slot: BlockingSlot,
    work: F,
) -> Result<PromiseRaw<'_, Coded<T>>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = Outcome<T>> + Send + 'static,
{
    let (deferred, promise) = env.create_deferred::<Coded<T>, _>()?;
    napi::bindgen_prelude::spawn_blocking(move || {
        let outcome = tokio::runtime::Handle::current().block_on(outcome_of(work));
        drop(slot);
        deferred.resolve(move |_| Ok(Coded(outcome)));
    });
    Ok(PromiseRaw::new(env.raw(), promise.raw()))
}

/// How many calls run on blocking-pool threads at once. The rest run on tokio's workers like every
/// other call, so that a burst of saves (a host saving 100 sessions at once) does not start a thread
/// each. (How many sessions are written at once is the store's own limit: `writers_for`.)
const MAX_BLOCKING_CALLS: usize = 2;

static BLOCKING_CALLS: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_BLOCKING_CALLS`] places, given back when dropped.
struct BlockingSlot(());

impl BlockingSlot {
    fn take() -> Option<BlockingSlot> {
        BLOCKING_CALLS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_BLOCKING_CALLS).then_some(n + 1)
            })
            .ok()
            .map(|_| BlockingSlot(()))
    }
}

impl Drop for BlockingSlot {
    fn drop(&mut self) {
        BLOCKING_CALLS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A future that turns a panic while it is polled into an `Err`, in the task that polls it: no
/// extra task (and no extra thread wake-up) per call, as `tokio::spawn` would cost.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(value)) => std::task::Poll::Ready(Ok(value)),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

fn json_global(env: &Env) -> Result<Object<'_>> {
    env.get_global()?.get_named_property("JSON")
}

/// `JSON.stringify(value)`: the way objects cross into Rust. Fails with EINVALID for what JSON
/// cannot hold (functions, symbols, BigInt, cycles, nesting past V8's stack, and numbers that are
/// not finite).
///
/// `JSON.stringify` writes `Infinity`, `-Infinity` and `NaN` as `null`, and a `null` in `memory`
/// or `config` deletes the key: `{ memory: { keep: Infinity } }` would delete `memory.keep`. So a
/// text with a `null` in it is made again with a replacer that refuses such numbers. A text
/// without one (most updates) cannot hold one, and costs nothing more.
fn stringify(env: &Env, value: Unknown, what: &str) -> Outcome<String> {
    let invalid = |detail: &str| StoreError::invalid(format!("{what} {detail}"));
    let stringify: Function<Unknown, Unknown> = json_global(env)
        .and_then(|json| json.get_named_property("stringify"))
        .map_err(|e| StoreError::internal(e.to_string()))?;
    let text = stringify
        .call(value)
        .map_err(|e| invalid(&format!("cannot be converted to JSON: {}", e.reason)))?;
    let text = match text.get_type() {
        Ok(ValueType::String) => {
            unsafe { text.cast::<String>() }.map_err(|e| StoreError::internal(e.to_string()))?
        }
        _ => return Err(invalid("must be a JSON value")),
    };
    if text.contains("null") {
        refuse_non_finite_numbers(env, value).map_err(|detail| invalid(&detail))?;
    }
    Ok(text)
}

/// A replacer for `JSON.stringify` that throws on a number JSON cannot hold, naming its key.
const NON_FINITE_REPLACER: &str = "(function (key, value) {
  if (typeof value === 'number' && !Number.isFinite(value)) {
    throw new RangeError('holds ' + value + ' at ' + JSON.stringify(key) + ', which JSON cannot hold');
  }
  return value;
})";

/// Stringifies `value` again with [`NON_FINITE_REPLACER`]; Err with what it found.
fn refuse_non_finite_numbers(env: &Env, value: Unknown) -> std::result::Result<(), String> {
    let replacer: Unknown = env
        .run_script(NON_FINITE_REPLACER)
        .map_err(|e| format!("could not be checked: {}", e.reason))?;
    let stringify: Function<FnArgs<(Unknown, Unknown)>, Unknown> = json_global(env)
        .and_then(|json| json.get_named_property("stringify"))
        .map_err(|e| format!("could not be checked: {}", e.reason))?;
    stringify
        .call((value, replacer).into())
        .map(drop)
        .map_err(|e| e.reason.trim_start_matches("RangeError: ").to_string())
}

/// An optional object argument as JSON text; `undefined` and `null` are None.
fn optional_json(env: &Env, value: Option<Unknown>, what: &str) -> Outcome<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) => match v.get_type() {
            Ok(ValueType::Undefined | ValueType::Null) => Ok(None),
            Ok(ValueType::Object) => stringify(env, v, what).map(Some),
            _ => Err(StoreError::invalid(format!("{what} must be an object"))),
        },
    }
}

/// A string argument. Read as UTF-16 so that a lone surrogate, which UTF-8 conversion would
/// silently turn into U+FFFD (making two different ids one), is refused instead.
fn string_arg(value: Unknown, what: &str) -> Outcome<String> {
    if !matches!(value.get_type(), Ok(ValueType::String)) {
        return Err(StoreError::invalid(format!("{what} must be a string")));
    }
    let units =
        unsafe { value.cast::<Utf16String>() }.map_err(|e| StoreError::internal(e.to_string()))?;
    String::from_utf16(&units)
        .map_err(|_| StoreError::invalid(format!("{what} is not valid Unicode (a lone surrogate)")))
}

fn ids(user_id: Unknown, workspace_id: Unknown) -> Outcome<(String, String)> {
    Ok((
        string_arg(user_id, "userId")?,
        string_arg(workspace_id, "workspaceId")?,
    ))
}

/// Options of `NarrativeSessionStore.open`, as JavaScript passes them.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpenOptionsJson {
    backend: Option<String>,
    /// A URL, or an array of a Redis Cluster's seed nodes.
    redis_url: Option<serde_json::Value>,
    redis_cluster: Option<bool>,
    redis_wait_replicas: Option<f64>,
    redis_wait_timeout_ms: Option<f64>,
    key_prefix: Option<String>,
    data_dir: Option<String>,
    ttl_days: Option<f64>,
    autosave_interval_ms: Option<f64>,
    cleanup_interval_ms: Option<f64>,
    unload_after_ms: Option<f64>,
    fold_after_ms: Option<f64>,
    max_session_bytes: Option<f64>,
    list_index: Option<bool>,
}

fn open_options(text: Option<&str>) -> Outcome<StoreOptions> {
    let mut input: OpenOptionsJson = parse_options(text)?;
    let data_dir = match input.data_dir.take() {
        Some(dir) if dir.is_empty() || dir.contains('\0') => {
            return Err(StoreError::invalid(
                "dataDir must be a non-empty path without NUL bytes",
            ))
        }
        Some(dir) => dir.into(),
        None => default_data_dir(),
    };
    let mut options = StoreOptions::new(data_dir);
    let redis_only = input.redis_cluster.is_some()
        || input.redis_wait_replicas.is_some()
        || input.redis_wait_timeout_ms.is_some();
    options.backend = match (input.backend.as_deref(), input.redis_url.take()) {
        (None | Some("file"), None) if redis_only => {
            return Err(StoreError::invalid(
                "redisCluster and redisWait* need backend: 'redis'",
            ))
        }
        (None | Some("file"), None) => BackendChoice::File,
        (Some("redis"), Some(urls)) => redis_choice(&input, urls)?,
        (Some("redis"), None) => {
            return Err(StoreError::invalid("backend 'redis' needs a redisUrl"))
        }
        (None | Some("file"), Some(_)) => {
            return Err(StoreError::invalid("redisUrl needs backend: 'redis'"))
        }
        (Some(other), _) => {
            return Err(StoreError::invalid(format!(
                "backend must be 'file' or 'redis', not {other:?}"
            )))
        }
    };
    options.ttl_days = input.ttl_days.unwrap_or(DEFAULT_TTL_DAYS);
    options.autosave_interval = duration_ms(
        "autosaveIntervalMs",
        input.autosave_interval_ms,
        DEFAULT_AUTOSAVE_INTERVAL,
    )?;
    options.cleanup_interval = duration_ms(
        "cleanupIntervalMs",
        input.cleanup_interval_ms,
        DEFAULT_CLEANUP_INTERVAL,
    )?;
    options.unload_after =
        duration_ms("unloadAfterMs", input.unload_after_ms, DEFAULT_UNLOAD_AFTER)?;
    options.fold_after = duration_ms("foldAfterMs", input.fold_after_ms, DEFAULT_FOLD_AFTER)?;
    options.list_index = input.list_index.unwrap_or(true);
    if let Some(max) = input.max_session_bytes {
        if !(max.is_finite() && max >= 1.0 && max <= (1u64 << 40) as f64) {
            return Err(StoreError::invalid(
                "maxSessionBytes must be a positive number of bytes",
            ));
        }
        options.max_session_bytes = max as usize;
    }
    Ok(options)
}

/// A millisecond interval; 0 turns off what it times.
/// The Redis backend's options: `redisUrl` a URL or an array of a cluster's seed nodes (an array
/// means a cluster; `redisCluster: true` makes one URL a cluster's seed), and `redisWaitReplicas`
/// (with `redisWaitTimeoutMs`): how many replicas must have a write before it counts as done.
fn redis_choice(input: &OpenOptionsJson, urls: serde_json::Value) -> Outcome<BackendChoice> {
    let bad_url = || {
        StoreError::invalid(
            "redisUrl must be a URL, or a non-empty array of URLs (a Redis Cluster's nodes)",
        )
    };
    let (urls, several) = match urls {
        serde_json::Value::String(url) => (vec![url], false),
        serde_json::Value::Array(items) if !items.is_empty() => {
            let urls = items
                .into_iter()
                .map(|item| match item {
                    serde_json::Value::String(url) => Ok(url),
                    _ => Err(bad_url()),
                })
                .collect::<Outcome<Vec<String>>>()?;
            (urls, true)
        }
        _ => return Err(bad_url()),
    };
    let cluster = match input.redis_cluster {
        Some(false) if several => {
            return Err(StoreError::invalid(
                "redisUrl is an array of a Redis Cluster's nodes, yet redisCluster is false",
            ))
        }
        Some(cluster) => cluster,
        None => several,
    };
    let key_prefix = input
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string());
    let mut config = if cluster {
        RedisConfig::cluster(urls, key_prefix)
    } else {
        RedisConfig::new(urls.into_iter().next().unwrap_or_default(), key_prefix)
    };
    if let Some(replicas) = input.redis_wait_replicas {
        if !(replicas.fract() == 0.0 && (0.0..=f64::from(MAX_WAIT_REPLICAS)).contains(&replicas)) {
            return Err(StoreError::invalid(format!(
                "redisWaitReplicas must be a whole number from 0 to {MAX_WAIT_REPLICAS}, not {replicas}"
            )));
        }
        config.wait_replicas = replicas as u32;
    }
    if let Some(ms) = input.redis_wait_timeout_ms {
        if !(ms.fract() == 0.0 && ms >= 1.0 && ms <= MAX_WAIT_TIMEOUT.as_millis() as f64) {
            return Err(StoreError::invalid(format!(
                "redisWaitTimeoutMs must be a whole number of milliseconds from 1 to {}, not {ms}",
                MAX_WAIT_TIMEOUT.as_millis()
            )));
        }
        config.wait_timeout = std::time::Duration::from_millis(ms as u64);
    }
    Ok(BackendChoice::Redis(config))
}

fn duration_ms(
    what: &str,
    value: Option<f64>,
    default: std::time::Duration,
) -> Outcome<std::time::Duration> {
    match value {
        None => Ok(default),
        Some(ms) if ms.is_finite() && (0.0..=1e12).contains(&ms) => {
            Ok(std::time::Duration::from_millis(ms as u64))
        }
        Some(ms) => Err(StoreError::invalid(format!(
            "{what} must be a number of milliseconds >= 0, not {ms}"
        ))),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MergeOptionsJson {
    origin: Option<String>,
    return_session: Option<bool>,
    durable: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CleanupOptionsJson {
    ttl_days: Option<f64>,
    now: Option<f64>,
}

struct CleanupOptions {
    ttl_days: Option<f64>,
    now: Option<i64>,
}

fn cleanup_options(text: Option<&str>) -> Outcome<CleanupOptions> {
    let input: CleanupOptionsJson = parse_options(text)?;
    let now = match input.now {
        None => None,
        Some(ms) if ms.is_finite() && ms.abs() < 8.64e15 => Some(ms as i64),
        Some(ms) => {
            return Err(StoreError::invalid(format!(
                "now must be milliseconds since the epoch, not {ms}"
            )))
        }
    };
    Ok(CleanupOptions {
        ttl_days: input.ttl_days,
        now,
    })
}

/// Options as JavaScript passed them. An array is refused (serde would read it by position), and so
/// is a `null` value: `NaN` and `Infinity` become `null` in JSON, and must not pass for "default".
fn parse_options<T: for<'de> Deserialize<'de> + Default>(text: Option<&str>) -> Outcome<T> {
    let Some(text) = text else {
        return Ok(T::default());
    };
    let bad = |detail: String| StoreError::invalid(format!("bad options: {detail}"));
    let map: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err(bad("options must be a plain object".into())),
    };
    if let Some((key, _)) = map.iter().find(|(_, v)| v.is_null()) {
        return Err(bad(format!("{key} must not be null, NaN or Infinity")));
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| bad(e.to_string()))
}

/// A core result as JSON text for JavaScript.
fn json_of<T: serde::Serialize>(value: &T) -> Outcome<JsonText> {
    serde_json::to_string(value).map(JsonText).map_err(internal)
}

fn internal(err: serde_json::Error) -> StoreError {
    StoreError::internal(err.to_string())
}

/// Sets `object[name] = true`, best effort.
///
/// # Safety
/// `object` must be a live object of `env`, on the thread that owns `env`.
unsafe fn set_true(env: sys::napi_env, object: sys::napi_value, name: &std::ffi::CStr) {
    let mut value = std::ptr::null_mut();
    unsafe {
        if sys::napi_get_boolean(env, true, &mut value) == sys::Status::napi_ok {
            sys::napi_set_named_property(env, object, name.as_ptr(), value);
        }
    }
}

/// The one place a core error becomes a JavaScript error: `err.code` is the stable code.
fn coded_error(err: StoreError) -> Error<String> {
    Error::new(err.code.as_str().to_string(), err.message)
}

fn status_error(err: Error) -> Error<String> {
    coded_error(StoreError::internal(err.reason.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_slots_are_limited_and_given_back() {
        let held: Vec<BlockingSlot> = std::iter::from_fn(BlockingSlot::take).take(10).collect();
        assert_eq!(held.len(), MAX_BLOCKING_CALLS);
        assert!(BlockingSlot::take().is_none(), "no slot beyond the limit");
        drop(held);
        let again: Vec<BlockingSlot> = std::iter::from_fn(BlockingSlot::take).take(10).collect();
        assert_eq!(
            again.len(),
            MAX_BLOCKING_CALLS,
            "every slot comes back when dropped"
        );
    }
}
