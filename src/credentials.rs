//! Where client tools find their API key: `HAPND_API_KEY`, else `~/.hapnd/config.json`.
//!
//! The file is written atomically with mode 0600 in a 0700 directory; a file found with
//! looser permissions is tightened when it is read or written (through the open file, never
//! by path), and so is a looser `~/.hapnd`. The file is opened without following a symbolic
//! link, and refused unless it is a regular file owned by the user running the command: a
//! file planted by someone else, or a link to another file, is never read nor changed. A key whose prefix is
//! neither `sk_live_` nor `sk_test_` (or whose checksum is wrong) is refused on save and
//! on load.
//!
//! ```
//! use hapnd_auth::{ApiKey, Environment, credentials};
//!
//! let dir = std::env::temp_dir().join(format!("hapnd-doc-{}", std::process::id()));
//! let path = dir.join("config.json");
//! let key = ApiKey::generate(Environment::Sandbox);
//! credentials::save(&key, &path).unwrap();
//!
//! // The environment variable wins over the file.
//! let other = ApiKey::generate(Environment::Live);
//! let found = credentials::resolve(Some(other.expose_secret()), &path).unwrap();
//! assert_eq!(found.source, credentials::Source::Environment);
//! let found = credentials::resolve(None, &path).unwrap();
//! assert_eq!(found.key.hash(), key.hash());
//! # std::fs::remove_dir_all(dir).unwrap();
//! ```

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::key::{ApiKey, KeyFormatError};

/// The environment variable that overrides the config file.
pub const ENV_VAR: &str = "HAPND_API_KEY";

/// Where a key was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The `HAPND_API_KEY` environment variable.
    Environment,
    /// The config file at this path.
    File(PathBuf),
}

/// A key and where it came from.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The key.
    pub key: ApiKey,
    /// Where it was found.
    pub source: Source,
}

/// Why no usable key was found or saved. Never contains the key.
#[derive(Debug)]
#[non_exhaustive]
pub enum CredentialsError {
    /// Neither `HAPND_API_KEY` nor the config file holds a key.
    NotFound(PathBuf),
    /// No home directory to keep the config file in.
    NoHome,
    /// The key is not a well-formed Hapnd key.
    InvalidKey {
        /// Where the key came from.
        source: Source,
        /// What is wrong with it.
        error: KeyFormatError,
    },
    /// The config file is not the JSON it should be.
    Malformed(PathBuf),
    /// Reading or writing the config file failed.
    Io(PathBuf, std::io::Error),
    /// The config file is not safe to use: a symbolic link, not a regular file, or owned
    /// by another user. It was neither read nor changed.
    Insecure {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsError::NotFound(path) => write!(
                f,
                "no API key: set {ENV_VAR} or run `hapnd-auth login <key>` (looked in {})",
                path.display()
            ),
            CredentialsError::NoHome => {
                f.write_str("cannot find the home directory (HOME is not set)")
            }
            CredentialsError::InvalidKey { source, error } => {
                let from = match source {
                    Source::Environment => format!("in {ENV_VAR}"),
                    Source::File(path) => format!("in {}", path.display()),
                };
                write!(f, "refusing the API key {from}: {error}")
            }
            CredentialsError::Malformed(path) => write!(
                f,
                "{} is not a valid config file (expected {{\"api_key\": \"sk_...\"}})",
                path.display()
            ),
            CredentialsError::Io(path, e) => write!(f, "{}: {e}", path.display()),
            CredentialsError::Insecure { path, reason } => write!(
                f,
                "refusing the key file {}: {reason}; remove it and run `hapnd-auth login`",
                path.display()
            ),
        }
    }
}

impl std::error::Error for CredentialsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CredentialsError::InvalidKey { error, .. } => Some(error),
            CredentialsError::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

/// `~/.hapnd/config.json`.
pub fn default_path() -> Result<PathBuf, CredentialsError> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or(CredentialsError::NoHome)?;
    Ok(PathBuf::from(home).join(".hapnd").join("config.json"))
}

/// The key to use: `HAPND_API_KEY` if set, else the default config file.
pub fn load() -> Result<Credentials, CredentialsError> {
    let from_env = std::env::var(ENV_VAR).ok();
    let path = default_path();
    match (from_env.as_deref().filter(|k| !k.is_empty()), path) {
        (Some(key), path) => resolve(Some(key), &path.unwrap_or_default()),
        (None, Ok(path)) => resolve(None, &path),
        (None, Err(e)) => Err(e),
    }
}

/// The key to use given the environment variable's value and the config file's path.
pub fn resolve(from_env: Option<&str>, path: &Path) -> Result<Credentials, CredentialsError> {
    if let Some(key) = from_env.filter(|k| !k.is_empty()) {
        let key = ApiKey::parse(key.trim()).map_err(|error| CredentialsError::InvalidKey {
            source: Source::Environment,
            error,
        })?;
        return Ok(Credentials {
            key,
            source: Source::Environment,
        });
    }
    parse(&read_private(path)?, path)
}

/// The key in the contents of the config file at `path` (which only names it in the result
/// and in errors): what [`resolve`] does once it has read the file. Public for the fuzz
/// target and the corpus replay test, which call it without touching the disk.
#[doc(hidden)]
pub fn parse(contents: &[u8], path: &Path) -> Result<Credentials, CredentialsError> {
    // Through `io::read_to_string` so that a file that is not UTF-8 gets the very error
    // reading it to a string always gave.
    let text =
        std::io::read_to_string(contents).map_err(|e| CredentialsError::Io(path.to_owned(), e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|_| CredentialsError::Malformed(path.to_owned()))?;
    let key = value["api_key"]
        .as_str()
        .ok_or_else(|| CredentialsError::Malformed(path.to_owned()))?;
    let source = Source::File(path.to_owned());
    let key = ApiKey::parse(key).map_err(|error| CredentialsError::InvalidKey {
        source: source.clone(),
        error,
    })?;
    Ok(Credentials { key, source })
}

/// Writes `key` to `path` atomically (a temporary file in the same directory, then a
/// rename), with mode 0600 in a directory of mode 0700.
pub fn save(key: &ApiKey, path: &Path) -> Result<(), CredentialsError> {
    let io = |e| CredentialsError::Io(path.to_owned(), e);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(io)?;
    // A fresh, unguessable name, created exclusively: in a shared directory nobody can
    // have planted a file or a symlink there for us to write the key through.
    let suffix = crate::key::hex(&crate::key::random::<8>());
    let tmp = dir.join(format!(".config.json.{suffix}.tmp"));
    let mut file = open_private(&tmp).map_err(io)?;
    let result = (|| {
        let body = serde_json::json!({ "api_key": key.expose_secret() });
        file.write_all(format!("{body:#}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    // The file was created 0600 and renamed over any older one: nothing to tighten.
    result.map_err(io)
}

/// Reads the key file: never through a symbolic link, only a regular file of ours, whose
/// permissions (and those of `~/.hapnd`) are tightened if anyone else could read it.
#[cfg(unix)]
fn read_private(path: &Path) -> Result<Vec<u8>, CredentialsError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let io = |e| CredentialsError::Io(path.to_owned(), e);
    let insecure = |reason: String| CredentialsError::Insecure {
        path: path.to_owned(),
        reason,
    };
    // O_NONBLOCK: a FIFO planted there must not hang the open; it is refused below.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredentialsError::NotFound(path.to_owned()));
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(insecure("it is a symbolic link".to_owned()));
        }
        Err(e) => return Err(io(e)),
    };
    // Checked on the open file, not the path: what we read is what we checked.
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(insecure("it is not a regular file".to_owned()));
    }
    let me = effective_uid();
    if meta.uid() != me {
        return Err(insecure(format!(
            "it belongs to user {}, not to you (user {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        tracing::warn!(path = %path.display(), "tightened the API key file's permissions to 0600");
    }
    tighten_own_dir(path, me).map_err(io)?;
    let mut contents = Vec::new();
    // A key file is a few dozen bytes; a huge one is not ours to load.
    file.take(64 * 1024)
        .read_to_end(&mut contents)
        .map_err(io)?;
    Ok(contents)
}

#[cfg(not(unix))]
fn read_private(path: &Path) -> Result<Vec<u8>, CredentialsError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CredentialsError::NotFound(path.to_owned()),
        _ => CredentialsError::Io(path.to_owned(), e),
    })
}

/// `~/.hapnd`, if that is the file's directory, made 0700 when it is ours and looser.
#[cfg(unix)]
fn tighten_own_dir(path: &Path, me: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    if dir.file_name() != Some(std::ffi::OsStr::new(".hapnd")) {
        return Ok(());
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_dir() && meta.uid() == me && meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        tracing::warn!(dir = %dir.display(), "tightened the key directory's permissions to 0700");
    }
    Ok(())
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no argument, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // Only the directory we own for this purpose is tightened, never a shared one that a
    // --config path points into.
    if dir.file_name() == Some(std::ffi::OsStr::new(".hapnd")) {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}
