//! Storage for media files (avatars, uploads), behind a small trait so that another backend
//! (S3 and the like) can replace the local directory later.
//!
//! Keys are server-made relative paths such as `avatars/<32 hex>.png` (see [`new_key`]).
//! Every store must refuse keys that [`validate_key`] rejects, so a key can never name a
//! file outside the store.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::FutureExt;
use futures::future::BoxFuture;
use rand::RngCore;
use tokio::io::AsyncWriteExt;

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// A place to keep media files by key. Object-safe: hold it as `Arc<dyn MediaStore>`.
pub trait MediaStore: Send + Sync {
    /// Store `bytes` under `key`, replacing any previous content. Readers see either the old
    /// content or the new, never a partial file.
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, anyhow::Result<()>>;

    /// The content stored under `key`, or `None` when there is none.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Vec<u8>>>>;

    /// Remove `key`. Removing a key that does not exist succeeds.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// A server-made key: `<prefix>/<32 hex digits>.<ext>` from 128 random bits, e.g.
/// `new_key("avatars", "png")` → `avatars/3f9c…e1.png`. An empty `prefix` or `ext` is left
/// out (no leading `/`, no trailing `.`).
pub fn new_key(prefix: &str, ext: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let name = hex::encode(bytes);
    let prefix = prefix.trim_matches('/');
    let ext = ext.trim_start_matches('.');
    let mut key = String::with_capacity(prefix.len() + name.len() + ext.len() + 2);
    if !prefix.is_empty() {
        key.push_str(prefix);
        key.push('/');
    }
    key.push_str(&name);
    if !ext.is_empty() {
        key.push('.');
        key.push_str(ext);
    }
    key
}

/// Check that `key` is a safe relative path: `/`-separated segments of ASCII letters, digits,
/// `-`, `_` and `.`, none empty and none starting with `.` (so no `.`, `..` or hidden files),
/// no leading `/`, no backslash, at most [`MAX_KEY_LEN`] bytes.
pub fn validate_key(key: &str) -> anyhow::Result<()> {
    if key.is_empty() {
        bail!("invalid media key: empty");
    }
    if key.len() > MAX_KEY_LEN {
        bail!("invalid media key: longer than {MAX_KEY_LEN} bytes");
    }
    if key.starts_with('/') {
        bail!("invalid media key {key:?}: absolute path");
    }
    if key.contains('\\') {
        bail!("invalid media key {key:?}: backslash");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            bail!("invalid media key {key:?}: empty path segment");
        }
        if segment.starts_with('.') {
            bail!("invalid media key {key:?}: segment starts with '.'");
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            bail!("invalid media key {key:?}: unexpected character");
        }
    }
    Ok(())
}

/// Media files in a local directory: key `avatars/x.png` is the file `<root>/avatars/x.png`.
#[derive(Debug, Clone)]
pub struct LocalMediaStore {
    root: PathBuf,
}

impl LocalMediaStore {
    /// A store under `root`. The directory is created on the first `put`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory holding the files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file for `key`, after validating it.
    fn path_for(&self, key: &str) -> anyhow::Result<PathBuf> {
        validate_key(key)?;
        let mut path = self.root.clone();
        path.extend(key.split('/'));
        Ok(path)
    }

    async fn put_impl(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        let path = self.path_for(key)?;
        let dir = path.parent().context("media key has no parent directory")?.to_path_buf();
        tokio::fs::create_dir_all(&dir).await.with_context(|| format!("creating media directory {}", dir.display()))?;

        // A dot-prefixed name can never be a valid key, so it never collides with one.
        let file_name = path.file_name().context("media key has no file name")?.to_string_lossy().into_owned();
        let tmp = dir.join(format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4().simple()));

        let written = write_and_sync(&tmp, &bytes).await;
        let renamed = match written {
            Ok(()) => tokio::fs::rename(&tmp, &path).await,
            Err(e) => Err(e),
        };
        if let Err(e) = renamed {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e).with_context(|| format!("writing media file {}", path.display()));
        }
        // Make the rename itself durable; best effort (not every platform can sync a directory).
        if let Ok(d) = tokio::fs::File::open(&dir).await {
            let _ = d.sync_all().await;
        }
        Ok(())
    }

    async fn get_impl(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let path = self.path_for(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading media file {}", path.display())),
        }
    }

    async fn delete_impl(&self, key: &str) -> anyhow::Result<()> {
        let path = self.path_for(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting media file {}", path.display())),
        }
    }
}

async fn write_and_sync(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(path).await?;
    file.write_all(bytes).await?;
    file.sync_all().await?;
    Ok(())
}

impl MediaStore for LocalMediaStore {
    fn put<'a>(&'a self, key: &'a str, bytes: Vec<u8>) -> BoxFuture<'a, anyhow::Result<()>> {
        self.put_impl(key, bytes).boxed()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<Vec<u8>>>> {
        self.get_impl(key).boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        self.delete_impl(key).boxed()
    }
}

impl std::fmt::Debug for dyn MediaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MediaStore")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let path = std::env::temp_dir().join(format!("parley-media-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn put_get_delete_round_trip() {
        let dir = TempDir::new();
        let store: Arc<dyn MediaStore> = Arc::new(LocalMediaStore::new(dir.0.join("media")));
        let key = new_key("avatars", "png");

        assert_eq!(store.get(&key).await.unwrap(), None);
        store.put(&key, b"first".to_vec()).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().as_deref(), Some(&b"first"[..]));
        let on_disk = dir.0.join("media").join(&key);
        assert_eq!(std::fs::read(&on_disk).unwrap(), b"first");

        // Overwrite replaces the content and leaves no temporary file behind.
        store.put(&key, b"second".to_vec()).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().as_deref(), Some(&b"second"[..]));
        let entries: Vec<_> =
            std::fs::read_dir(dir.0.join("media/avatars")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries.len(), 1, "{entries:?}");

        store.delete(&key).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), None);
        assert!(!on_disk.exists());
        // Deleting again (missing) is fine.
        store.delete(&key).await.unwrap();
        store.delete("uploads/never-written").await.unwrap();
    }

    #[tokio::test]
    async fn nested_keys_create_directories() {
        let dir = TempDir::new();
        let store = LocalMediaStore::new(&dir.0);
        store.put("uploads/a/b/xyz", vec![1, 2, 3]).await.unwrap();
        assert_eq!(std::fs::read(dir.0.join("uploads/a/b/xyz")).unwrap(), [1, 2, 3]);
        assert_eq!(store.get("uploads/a/b/xyz").await.unwrap(), Some(vec![1, 2, 3]));
    }

    #[tokio::test]
    async fn traversal_keys_are_rejected() {
        let dir = TempDir::new();
        let root = dir.0.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.0.join("secret"), b"outside").unwrap();
        let store = LocalMediaStore::new(&root);

        let bad = [
            "",
            "..",
            "../secret",
            "avatars/../../secret",
            "avatars/..",
            "./x",
            "avatars/./x",
            "/etc/passwd",
            "/tmp/x",
            "avatars\\..\\secret",
            "avatars\\x.png",
            "avatars//x.png",
            "avatars/",
            "/",
            "avatars/.hidden",
            "avatars/x\0.png",
            "C:/x",
            "avatars/é.png",
        ];
        for key in bad {
            assert!(validate_key(key).is_err(), "{key:?} accepted");
            assert!(store.put(key, b"pwned".to_vec()).await.is_err(), "put {key:?}");
            assert!(store.get(key).await.is_err(), "get {key:?}");
            assert!(store.delete(key).await.is_err(), "delete {key:?}");
        }
        let long = "a".repeat(MAX_KEY_LEN + 1);
        assert!(store.put(&long, vec![]).await.is_err());

        // Nothing outside the root was touched, nothing was written inside it.
        assert_eq!(std::fs::read(dir.0.join("secret")).unwrap(), b"outside");
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn new_key_shape() {
        let key = new_key("avatars", "png");
        let name = key.strip_prefix("avatars/").unwrap();
        let hex = name.strip_suffix(".png").unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        validate_key(&key).unwrap();
        assert_ne!(new_key("avatars", "png"), key);

        let bare = new_key("uploads", "");
        assert_eq!(bare.len(), "uploads/".len() + 32);
        validate_key(&bare).unwrap();
        assert_eq!(new_key("", "png").len(), 32 + 4);
        assert!(new_key("avatars/", ".png").starts_with("avatars/"));
        assert!(!new_key("avatars/", ".png").contains(".."));
    }
}
