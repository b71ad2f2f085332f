//! [`MongoStore`]: checkpoints as documents of a MongoDB collection.

use bson::{doc, Document};
use futures::future::{BoxFuture, FutureExt};
use mongodb::options::{Acknowledgment, WriteConcern};
use mongodb::Collection;

use super::{Checkpoint, CheckpointStore};
use crate::error::{Error, Result};

/// Checkpoints in a MongoDB collection (in the tailed deployment or another): one document
/// per name, `{_id: <name>, checkpoint: {…}}`, written with majority write concern so a
/// saved checkpoint survives a failover.
///
/// ```no_run
/// use mongotail::checkpoint::{CheckpointStore, MongoStore};
///
/// # async fn run(client: mongodb::Client) -> mongotail::Result<()> {
/// let store = MongoStore::new(client.database("ops").collection("checkpoints"));
/// let saved = store.load("indexer").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MongoStore {
    collection: Collection<Document>,
}

impl MongoStore {
    /// A store in `collection`.
    pub fn new(collection: Collection<Document>) -> MongoStore {
        MongoStore { collection }
    }

    fn failed(&self, name: &str, what: &str, e: mongodb::error::Error) -> Error {
        Error::Checkpoint {
            name: name.to_owned(),
            message: format!(
                "cannot {what} it in {}.{}: {e}",
                self.collection.namespace().db,
                self.collection.name()
            ),
        }
    }

    fn majority() -> WriteConcern {
        WriteConcern::builder().w(Acknowledgment::Majority).build()
    }
}

impl CheckpointStore for MongoStore {
    fn load<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Checkpoint>>> {
        async move {
            let found = self
                .collection
                .find_one(doc! {"_id": name})
                .await
                .map_err(|e| self.failed(name, "read", e))?;
            let Some(mut found) = found else {
                return Ok(None);
            };
            match found.remove("checkpoint") {
                Some(bson::Bson::Document(d)) => Checkpoint::from_document(name, d).map(Some),
                _ => Err(Error::Checkpoint {
                    name: name.to_owned(),
                    message: "the stored document has no `checkpoint` document".into(),
                }),
            }
        }
        .boxed()
    }

    fn save<'a>(&'a self, name: &'a str, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<()>> {
        async move {
            let doc = checkpoint.to_document()?;
            self.collection
                .replace_one(doc! {"_id": name}, doc! {"_id": name, "checkpoint": doc})
                .upsert(true)
                .write_concern(Self::majority())
                .await
                .map_err(|e| self.failed(name, "save", e))?;
            Ok(())
        }
        .boxed()
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        async move {
            self.collection
                .delete_one(doc! {"_id": name})
                .write_concern(Self::majority())
                .await
                .map_err(|e| self.failed(name, "delete", e))?;
            Ok(())
        }
        .boxed()
    }
}
