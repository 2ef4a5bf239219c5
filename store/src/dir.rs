//! The local store's files: locked, atomic reads and writes of a store directory.
//!
//! Writers take an exclusive lock on `.lock`, check the optimistic-concurrency token, and replace
//! files atomically (temporary file, fsync, rename), so a reader never sees a half-written file
//! and two writers never lose an update. A file that does not parse is reported with its name
//! and line and is never overwritten.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::document::{DocumentError, FunctionDocument, RouterDocument};

/// Why the local store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file is broken or invalid; it is left untouched.
    #[error(transparent)]
    Document(#[from] DocumentError),
    /// Another writer held the store's lock for longer than the caller would wait.
    #[error("timed out after {waited:?} waiting for the lock {path} (another writer holds it; nothing was written)")]
    LockTimeout {
        /// The lock file.
        path: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The store directory does not exist (a mistyped path, most often).
    #[error("store dir:{path} does not exist (a first deploy creates it)")]
    Missing {
        /// The directory.
        path: String,
    },
    /// Someone else wrote the function since it was read.
    #[error("function {name} was changed by someone else since it was read (expected revision {expected}, found {actual})")]
    Conflict {
        /// The function.
        name: String,
        /// The revision the writer read.
        expected: String,
        /// The revision on disk.
        actual: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the `--store` flag of both binaries: `dir:PATH` → `PATH` (the prefix leaves room for
/// other kinds of store).
pub fn parse_store_flag(value: &str) -> Result<PathBuf, String> {
    match value.strip_prefix("dir:") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(format!("expected dir:PATH, got {value:?}")),
    }
}

/// File access to a local store directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// How long a writer waits for another writer's lock; `None`: as long as it takes.
    lock_wait: Option<Duration>,
    /// Called once when a writer has waited [`LOCK_NOTICE`] for the lock, with its path.
    on_lock_wait: Option<fn(&Path)>,
}

/// How long a writer waits for the lock before [`LocalStore::bounded_lock_wait`]'s notice.
pub const LOCK_NOTICE: Duration = Duration::from_secs(1);

/// How often a bounded writer retries a held lock.
const LOCK_POLL: Duration = Duration::from_millis(10);

impl LocalStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalStore, StoreError> {
        let store = LocalStore {
            root: root.into(),
            lock_wait: None,
            on_lock_wait: None,
        };
        for dir in [store.functions_dir(), store.routers_dir()] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(store)
    }

    /// Opens the store at `root`, which must exist: for readers, where creating a mistyped
    /// path would hide the typo behind an empty store.
    pub fn open_existing(root: impl Into<PathBuf>) -> Result<LocalStore, StoreError> {
        let root = root.into();
        if !root.join("functions").is_dir() {
            return Err(StoreError::Missing {
                path: root.display().to_string(),
            });
        }
        LocalStore::open(root)
    }

    /// Bounds how long a write waits for another writer's lock to `wait`
    /// ([`StoreError::LockTimeout`] after that), calling `notice` with the lock's path once it
    /// has waited [`LOCK_NOTICE`], so that a person sees what the command waits for.
    pub fn bounded_lock_wait(mut self, wait: Duration, notice: fn(&Path)) -> LocalStore {
        self.lock_wait = Some(wait);
        self.on_lock_wait = Some(notice);
        self
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the function files (the one a follower watches).
    pub fn functions_dir(&self) -> PathBuf {
        self.root.join("functions")
    }

    fn routers_dir(&self) -> PathBuf {
        self.root.join("routers")
    }

    /// The file of function `name`.
    pub fn function_path(&self, name: &str) -> PathBuf {
        self.functions_dir().join(format!("{name}.yaml"))
    }

    /// Reads function `name`; a function without a file is an empty document.
    pub fn read(&self, name: &str) -> Result<FunctionDocument, StoreError> {
        let path = self.function_path(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(FunctionDocument::parse(
                name,
                &path.display().to_string(),
                &text,
            )?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FunctionDocument::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The names of every function with a file, sorted.
    pub fn function_names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.functions_dir();
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let file = entry.file_name();
            let file = file.to_string_lossy();
            if let Some(name) = file.strip_suffix(".yaml") {
                if !name.starts_with('.') {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Writes `doc` as function `name` if the file is still at revision `expected` (as returned
    /// by [`FunctionDocument::resource_version`] of what the caller read). Bumps the revision
    /// (and the generation when the spec changed) and returns what was written.
    pub fn write(
        &self,
        name: &str,
        expected: &str,
        doc: FunctionDocument,
    ) -> Result<FunctionDocument, StoreError> {
        let _lock = self.lock()?;
        // Reading under the lock also refuses to overwrite a broken file.
        let current = self.read(name)?;
        let actual = current.resource_version();
        if actual != expected {
            return Err(StoreError::Conflict {
                name: name.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
        let next = doc.next_revision(&current);
        let path = self.function_path(name);
        next.check(name, &path.display().to_string())?;
        atomic_write(&path, next.render().as_bytes())?;
        Ok(next)
    }

    /// Removes function `name`'s file if it is still at revision `expected`.
    pub fn remove(&self, name: &str, expected: &str) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let actual = self.read(name)?.resource_version();
        if actual != expected {
            return Err(StoreError::Conflict {
                name: name.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
        let path = self.function_path(name);
        fs::remove_file(&path).map_err(io_err(&path))
    }

    fn lock(&self) -> Result<File, StoreError> {
        let path = self.root.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let Some(wait) = self.lock_wait else {
            file.lock().map_err(io_err(&path))?;
            return Ok(file);
        };
        // flock has no timeout: poll a non-blocking attempt until the deadline.
        let started = std::time::Instant::now();
        let mut noticed = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
            }
            let waited = started.elapsed();
            if waited >= wait {
                return Err(StoreError::LockTimeout {
                    path: path.display().to_string(),
                    waited: wait,
                });
            }
            if !noticed && waited >= LOCK_NOTICE {
                noticed = true;
                if let Some(notice) = self.on_lock_wait {
                    notice(&path);
                }
            }
            std::thread::sleep(LOCK_POLL.min(wait - waited));
        }
    }

    fn router_path(&self, replica: &str) -> PathBuf {
        self.routers_dir().join(format!("{replica}.json"))
    }

    /// Writes a router replica's document (heartbeat, table, numbers, per-function entries),
    /// atomically.
    pub fn write_router(&self, doc: &RouterDocument) -> Result<(), StoreError> {
        let path = self.router_path(&doc.name);
        let text = serde_json::to_vec_pretty(doc).unwrap_or_default();
        atomic_write(&path, &text)
    }

    /// Removes a router replica's document (on clean shutdown).
    pub fn remove_router(&self, replica: &str) {
        let _ = fs::remove_file(self.router_path(replica));
    }

    /// Every router document that parses; a broken one is skipped (a router rewrites its own
    /// file every heartbeat).
    pub fn routers(&self) -> Result<Vec<RouterDocument>, StoreError> {
        let dir = self.routers_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = entry.map_err(io_err(&dir))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                if let Ok(doc) =
                    fs::read(&path).map(|b| serde_json::from_slice::<RouterDocument>(&b))
                {
                    match doc {
                        Ok(doc) => out.push(doc),
                        Err(e) => {
                            tracing::warn!(file = %path.display(), "skipping a broken router file: {e}")
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it, fsync, rename, and an
/// fsync of the directory so the rename survives a crash.
fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::{Function, FunctionVersion, TOTAL_PPM};

    fn temp_store() -> LocalStore {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("switchyard-store-{}-{nanos}", std::process::id()));
        LocalStore::open(dir).expect("store")
    }

    fn doc(weight_version: &str) -> FunctionDocument {
        let mut f = Function::test("hello").with_weight(weight_version, TOTAL_PPM);
        f.metadata.generation = None;
        FunctionDocument {
            function: Some(f),
            versions: vec![
                FunctionVersion::test_endpoint("hello", "1.0.0", "http://127.0.0.1:1"),
                FunctionVersion::test_endpoint("hello", "1.1.0", "http://127.0.0.1:2"),
            ],
        }
    }

    #[test]
    fn a_write_from_a_stale_read_is_refused_and_loses_nothing() {
        let store = temp_store();
        let first = store
            .write("hello", "0", doc("1.0.0"))
            .expect("first write");
        assert_eq!(first.resource_version(), "1");
        let stale = "0";
        let err = store
            .write("hello", stale, doc("1.1.0"))
            .expect_err("stale");
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        let second = store
            .write("hello", "1", doc("1.1.0"))
            .expect("fresh write");
        assert_eq!(
            second.function.as_ref().and_then(|f| f.metadata.generation),
            Some(2)
        );
        assert_eq!(store.read("hello").expect("read"), second);
    }

    #[test]
    fn a_broken_file_is_reported_and_never_overwritten() {
        let store = temp_store();
        store.write("hello", "0", doc("1.0.0")).expect("write");
        let path = store.function_path("hello");
        let text = fs::read_to_string(&path).expect("read");
        let truncated = &text[..text.len() / 2];
        fs::write(&path, truncated).expect("break it");
        let err = store
            .write("hello", "1", doc("1.1.0"))
            .expect_err("broken")
            .to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            truncated,
            "left untouched"
        );
    }

    #[test]
    fn concurrent_writers_lose_no_update() {
        let store = temp_store();
        store.write("hello", "0", doc("1.0.0")).expect("write");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut landed = 0;
                    for _ in 0..10 {
                        loop {
                            let current = store.read("hello").expect("read");
                            let mut next = current.clone();
                            let f = next.function.as_mut().expect("function");
                            f.spec.hosts = vec![format!("h{i}.example.com")];
                            match store.write("hello", &current.resource_version(), next) {
                                Ok(_) => {
                                    landed += 1;
                                    break;
                                }
                                Err(StoreError::Conflict { .. }) => continue,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    landed
                })
            })
            .collect();
        let landed: u64 = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(landed, 80);
        assert_eq!(store.read("hello").expect("read").resource_version(), "81");
    }

    #[test]
    fn router_documents_round_trip() {
        let store = temp_store();
        let doc = RouterDocument {
            name: "r1".into(),
            renewed_ms: 5,
            lease_duration_seconds: 10,
            listen: "127.0.0.1:8080".into(),
            functions: vec![crate::FunctionEntry {
                name: "hello".into(),
                observed_generation: 3,
                applied_at: "2026-12-02T10:00:00Z".into(),
                rejected: None,
                pending: Some("waiting for FunctionVersion hello-1-3-0".into()),
            }],
            ..Default::default()
        };
        store.write_router(&doc).expect("write");
        assert_eq!(store.routers().expect("read"), vec![doc]);
        store.remove_router("r1");
        assert!(store.routers().expect("read").is_empty());
    }
}
