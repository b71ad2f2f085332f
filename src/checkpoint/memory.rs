//! [`MemoryStore`]: checkpoints in memory, for tests and examples.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::{self, BoxFuture, FutureExt};

use super::{Checkpoint, CheckpointStore};
use crate::error::Result;

/// Checkpoints in memory: lost with the process. Clones share the same checkpoints.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    saved: Arc<Mutex<HashMap<String, Checkpoint>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Checkpoint>) -> T) -> T {
        // A panic while holding the lock cannot leave a map half-updated.
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut saved)
    }
}

impl CheckpointStore for MemoryStore {
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Checkpoint>>> {
        future::ready(Ok(self.with(|m| m.get(name).cloned()))).boxed()
    }

    fn save<'a>(&'a self, name: &'a str, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<()>> {
        self.with(|m| m.insert(name.to_owned(), checkpoint.clone()));
        future::ready(Ok(())).boxed()
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        self.with(|m| m.remove(name));
        future::ready(Ok(())).boxed()
    }
}
