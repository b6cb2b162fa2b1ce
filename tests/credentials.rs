//! The client-side key file: 0600, atomic, tightened, and overridden by `HAPND_API_KEY`.

mod skip;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use hapnd_auth::credentials::{self, CredentialsError, Source};
use hapnd_auth::{ApiKey, Environment};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hapnd-cred-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn save_writes_0600_in_a_0700_directory_and_loads_back() {
    let tmp = TempDir::new("save");
    let path = tmp.0.join(".hapnd").join("config.json");
    // An existing, too open ~/.hapnd is tightened too.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        path.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let key = ApiKey::generate(Environment::Live);
    credentials::save(&key, &path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let found = credentials::resolve(None, &path).unwrap();
    assert_eq!(found.key.expose_secret(), key.expose_secret());
    assert_eq!(found.source, Source::File(path.clone()));
    // No temporary file left behind.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
}

#[test]
fn a_looser_existing_file_is_tightened() {
    let tmp = TempDir::new("tighten");
    let path = tmp.0.join("config.json");
    credentials::save(&ApiKey::generate(Environment::Sandbox), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    credentials::resolve(None, &path).unwrap();
    assert_eq!(mode(&path), 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    credentials::save(&ApiKey::generate(Environment::Sandbox), &path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn the_environment_variable_wins_and_bad_keys_are_refused() {
    let tmp = TempDir::new("env");
    let path = tmp.0.join("config.json");
    let file_key = ApiKey::generate(Environment::Sandbox);
    credentials::save(&file_key, &path).unwrap();
    let env_key = ApiKey::generate(Environment::Live);
    let found = credentials::resolve(Some(env_key.expose_secret()), &path).unwrap();
    assert_eq!(found.source, Source::Environment);
    assert_eq!(found.key.hash(), env_key.hash());

    let bad = format!("pk_live_{}", &env_key.expose_secret()[8..]);
    let err = credentials::resolve(Some(&bad), &path).unwrap_err();
    assert!(matches!(
        err,
        CredentialsError::InvalidKey {
            source: Source::Environment,
            ..
        }
    ));
    assert!(!err.to_string().contains(&bad[8..40]), "{err}");

    std::fs::write(&path, format!("{{\"api_key\": \"{bad}\"}}")).unwrap();
    assert!(matches!(
        credentials::resolve(None, &path),
        Err(CredentialsError::InvalidKey { .. })
    ));
    std::fs::write(&path, "not json").unwrap();
    assert!(matches!(
        credentials::resolve(None, &path),
        Err(CredentialsError::Malformed(_))
    ));
    // Not UTF-8: the error reading a file to a string gives, naming the file.
    std::fs::write(&path, b"{\"api_key\": \"\xff\"}").unwrap();
    let err = credentials::resolve(None, &path).unwrap_err();
    assert!(matches!(err, CredentialsError::Io(..)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{}: stream did not contain valid UTF-8", path.display())
    );
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        credentials::resolve(None, &path),
        Err(CredentialsError::NotFound(_))
    ));
}

#[test]
fn a_symlinked_key_file_is_refused_and_its_target_left_alone() {
    let tmp = TempDir::new("symlink");
    let target = tmp.0.join("elsewhere.json");
    credentials::save(&ApiKey::generate(Environment::Live), &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = tmp.0.join(".hapnd").join("config.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let err = credentials::resolve(None, &path).unwrap_err();
    assert!(matches!(err, CredentialsError::Insecure { .. }), "{err:?}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    // The link's target was not chmodded through it.
    assert_eq!(mode(&target), 0o644);
}

#[test]
fn a_key_file_that_is_not_a_regular_file_is_refused_without_hanging() {
    let tmp = TempDir::new("fifo");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let path = tmp.0.join("config.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let err = credentials::resolve(None, &path).unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn a_key_file_owned_by_someone_else_is_refused() {
    let tmp = TempDir::new("owner");
    let path = tmp.0.join("config.json");
    credentials::save(&ApiKey::generate(Environment::Live), &path).unwrap();
    // uid 65534 is `nobody`. Changing a file's owner needs root, which CI is.
    if let Err(e) = std::os::unix::fs::chown(&path, Some(65534), None) {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs as root: chown must work ({e})"
        );
        skip::skipped(&format!("not root, cannot chown to nobody: {e}"));
        return;
    }
    let err = credentials::resolve(None, &path).unwrap_err();
    assert!(matches!(err, CredentialsError::Insecure { .. }), "{err:?}");
    assert!(err.to_string().contains("belongs to user 65534"), "{err}");
}

#[test]
fn reading_tightens_a_loose_key_directory() {
    let tmp = TempDir::new("dir");
    let path = tmp.0.join(".hapnd").join("config.json");
    credentials::save(&ApiKey::generate(Environment::Live), &path).unwrap();
    let dir = path.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    credentials::resolve(None, &path).unwrap();
    assert_eq!(mode(dir), 0o700);
}
