//! Where sessions live, and how a (user, workspace) pair becomes a file name.
//!
//! Ids come from clients and proxies; they never become path parts. A session's file name is the
//! hex SHA-256 of its ids, so `../../etc/passwd` as a user id is just another 64-character name.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::model::check_id;

/// The application name code-server's env-paths would use for this fork.
pub const APP_NAME: &str = "mia-code-server";

/// The default sessions directory, where code-server's `getEnvPaths().data` puts data:
/// `$XDG_DATA_HOME/mia-code-server/sessions` (or `~/.local/share/...`) on Linux and macOS,
/// `%LOCALAPPDATA%\mia-code-server\Data\sessions` on Windows.
pub fn default_data_dir() -> PathBuf {
    data_home().join("sessions")
}

#[cfg(windows)]
fn data_home() -> PathBuf {
    let local = std::env::var_os("LOCALAPPDATA")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join("AppData").join("Local")))
        .unwrap_or_else(|| PathBuf::from("."));
    local.join(APP_NAME).join("Data")
}

#[cfg(not(windows))]
fn data_home() -> PathBuf {
    // The XDG spec ignores a relative XDG_DATA_HOME.
    let xdg = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = xdg.unwrap_or_else(|| {
        std::env::home_dir()
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join(".local")
            .join("share")
    });
    base.join(APP_NAME)
}

/// The workspace id of a session opened without a folder.
pub const NO_WORKSPACE: &str = "(none)";

/// A workspace path as a stable id: absolute, `.` and `..` resolved, no trailing slash, `/` as the
/// separator. A Windows path keeps its drive (`c:\\a\\..\\b` becomes `C:/b`). An empty path is
/// [`NO_WORKSPACE`]. Lexical only: the file system is never asked, so a client cannot probe it.
pub fn normalize_workspace(raw: &str) -> String {
    let raw = raw.trim();
    if raw.is_empty() {
        return NO_WORKSPACE.to_string();
    }
    let unified = raw.replace('\\', "/");
    let (prefix, rest) = match unified.as_bytes() {
        [drive, b':', ..] if drive.is_ascii_alphabetic() => (
            format!("{}:", drive.to_ascii_uppercase() as char),
            &unified[2..],
        ),
        _ => (String::new(), unified.as_str()),
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    format!("{prefix}/{}", parts.join("/"))
}

/// The identity of one session: a user in a workspace, with the hash that names its files.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub user_id: String,
    pub workspace_id: String,
    digest: [u8; 32],
}

impl SessionKey {
    /// Checks both ids (non-empty, at most 1 KiB) and hashes them.
    pub fn new(user_id: &str, workspace_id: &str) -> Result<SessionKey> {
        check_id("userId", user_id)?;
        check_id("workspaceId", workspace_id)?;
        let mut hasher = Sha256::new();
        hasher.update(b"mia-narrative-session/v1\0");
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        for id in [user_id, workspace_id] {
            hasher.update((id.len() as u64).to_le_bytes());
            hasher.update(id.as_bytes());
        }
        Ok(SessionKey {
            user_id: user_id.to_string(),
            workspace_id: workspace_id.to_string(),
            digest: hasher.finalize().into(),
        })
    }

    /// The stem of every file of this session: 64 lowercase hex digits.
    pub fn file_stem(&self) -> String {
        hex(&self.digest)
    }

    /// The session's id, stable for (user, workspace): 32 hex digits.
    pub fn session_id(&self) -> String {
        hex(&self.digest[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a name is a session file stem (what [`SessionKey::file_stem`] makes).
pub fn is_file_stem(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_ids_become_plain_hex_names() {
        for user in [
            "../../etc/passwd",
            "C:\\x",
            "a/../../b",
            "/",
            ".",
            "nul\0byte",
        ] {
            let key = SessionKey::new(user, "/home/me/proj").unwrap();
            assert!(is_file_stem(&key.file_stem()), "{user}");
            assert_eq!(key.session_id().len(), 32);
        }
    }

    #[test]
    fn the_hash_separates_ids_that_concatenate_alike() {
        let a = SessionKey::new("ab", "c").unwrap();
        let b = SessionKey::new("a", "bc").unwrap();
        assert_ne!(a.file_stem(), b.file_stem());
        assert_eq!(
            a.file_stem(),
            SessionKey::new("ab", "c").unwrap().file_stem()
        );
    }

    #[test]
    fn empty_and_huge_ids_are_refused() {
        assert!(SessionKey::new("", "w").is_err());
        assert!(SessionKey::new("u", "").is_err());
        assert!(SessionKey::new(&"x".repeat(1025), "w").is_err());
        assert!(SessionKey::new(&"x".repeat(1024), "w").is_ok());
    }

    #[test]
    fn workspaces_normalise_to_absolute_paths() {
        for (raw, id) in [
            ("/home/me/proj/", "/home/me/proj"),
            ("/home/me/./proj/../proj", "/home/me/proj"),
            ("home/me", "/home/me"),
            ("/../../etc", "/etc"),
            ("/", "/"),
            ("", NO_WORKSPACE),
            ("c:\\Users\\me\\..\\you\\", "C:/Users/you"),
            // Only a letter makes a drive: `1:` is an ordinary first component.
            ("1:\\a", "/1:/a"),
        ] {
            assert_eq!(normalize_workspace(raw), id, "{raw:?}");
        }
    }

    #[test]
    fn only_64_lowercase_hex_digits_are_a_file_stem() {
        let stem = SessionKey::new("u", "w").unwrap().file_stem();
        assert!(is_file_stem(&stem));
        assert!(!is_file_stem(&stem[..63]), "too short, all hex");
        assert!(!is_file_stem(&format!("{stem}0")), "too long, all hex");
        assert!(!is_file_stem(&stem.to_uppercase()), "upper case");
        assert!(!is_file_stem(&"g".repeat(64)), "64 long, not hex");
        assert!(
            !is_file_stem(&format!("{}.json", &stem[..59])),
            "64 long with a dot"
        );
    }

    #[test]
    fn default_dir_follows_xdg_like_code_server() {
        let dir = default_data_dir();
        assert!(dir.ends_with("mia-code-server/sessions") || cfg!(windows));
    }
}
