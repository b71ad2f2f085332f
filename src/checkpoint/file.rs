//! [`FileStore`]: one file per checkpoint, replaced atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use bson::{Bson, Document};
use futures::future::{BoxFuture, FutureExt};

use super::{Checkpoint, CheckpointStore};
use crate::error::{Error, Result};

/// Checkpoints as files in a directory, one per name (`<name>.json`, the checkpoint in
/// canonical Extended JSON). A save writes a temporary file in the same directory, fsyncs
/// it, renames it over the previous checkpoint and fsyncs the directory, so a crash leaves
/// either the old checkpoint or the new one, never a torn file.
///
/// ```
/// use mongotail::checkpoint::{Checkpoint, CheckpointStore, FileStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> mongotail::Result<()> {
/// let dir = std::env::temp_dir().join(format!("mongotail-doc-{}", std::process::id()));
/// let store = FileStore::new(&dir)?;
/// store.save("indexer", &Checkpoint::new()).await?;
/// assert!(dir.join("indexer.json").exists());
/// assert_eq!(store.load("indexer").await?, Some(Checkpoint::new()));
/// assert!(store.save("../escape", &Checkpoint::new()).await.is_err());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir`, created when missing.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when the directory cannot be created.
    pub fn new(dir: impl AsRef<Path>) -> Result<FileStore> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| Error::Checkpoint {
            name: dir.display().to_string(),
            message: format!("cannot create the checkpoint directory: {e}"),
        })?;
        Ok(FileStore { dir })
    }

    /// The file of checkpoint `name`: names are letters, digits, `.`, `_` and `-`, not
    /// starting with a dot, so a name never leaves the directory.
    fn path(&self, name: &str) -> Result<PathBuf> {
        let ok = !name.is_empty()
            && !name.starts_with('.')
            && name.len() <= 200
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok {
            Ok(self.dir.join(format!("{name}.json")))
        } else {
            Err(Error::Config(format!(
                "checkpoint name {name:?}: use letters, digits, '.', '_' and '-' only"
            )))
        }
    }

    fn load_now(&self, name: &str) -> Result<Option<Checkpoint>> {
        let path = self.path(name)?;
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(name, &path, "read", e)),
        };
        let unreadable = |m: String| Error::Checkpoint {
            name: name.to_owned(),
            message: format!("{} is not a checkpoint: {m}", path.display()),
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        let doc = match Bson::try_from(json).map_err(|e| unreadable(e.to_string()))? {
            Bson::Document(d) => d,
            other => {
                return Err(unreadable(format!(
                    "a {:?}, not a document",
                    other.element_type()
                )))
            }
        };
        Checkpoint::from_document(name, doc).map(Some)
    }

    fn save_now(&self, name: &str, doc: Document) -> Result<()> {
        let path = self.path(name)?;
        let text = Bson::Document(doc).into_canonical_extjson().to_string();
        let tmp = self
            .dir
            .join(format!(".{name}.json.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename is durable once the directory is.
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_error(name, &path, "write", e)
        })
    }

    fn delete_now(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(name, &path, "delete", e)),
        }
    }
}

fn io_error(name: &str, path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Checkpoint {
        name: name.to_owned(),
        message: format!("cannot {what} {}: {e}", path.display()),
    }
}

/// Runs a file operation off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Error::Config(format!(
            "checkpoint file operation failed: {e}"
        )))
    })
}

impl CheckpointStore for FileStore {
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Checkpoint>>> {
        let (store, name) = (self.clone(), name.to_owned());
        blocking(move || store.load_now(&name)).boxed()
    }

    fn save<'a>(&'a self, name: &'a str, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<()>> {
        let doc = checkpoint.to_document();
        let (store, name) = (self.clone(), name.to_owned());
        async move {
            let doc = doc?;
            blocking(move || store.save_now(&name, doc)).await
        }
        .boxed()
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        let (store, name) = (self.clone(), name.to_owned());
        blocking(move || store.delete_now(&name)).boxed()
    }
}
