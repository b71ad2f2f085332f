//! Change-stream pre- and post-images (reference §5): the catalog records the document before
//! (and after) each update or delete of a collection with `changeStreamPreAndPostImages`
//! enabled in an [`ImageLog`]; when the write's oplog entry is stamped the images move into
//! [`PreImages`] under the entry's timestamp, where change streams look them up. Images expire
//! with the oplog window.

use std::collections::{BTreeMap, VecDeque};

use bson::{Bson, Document, Timestamp};

use super::clock::ts_key;

/// Whether a collection's options ask for change-stream images
/// (`changeStreamPreAndPostImages: {enabled: true}`).
pub(crate) fn images_enabled(options: &Document) -> bool {
    matches!(
        options
            .get_document("changeStreamPreAndPostImages")
            .ok()
            .and_then(|d| d.get("enabled")),
        Some(Bson::Boolean(true))
    )
}

/// Key of a stored image (SRV `ChangeStreamPreImageId`: nsUUID, ts, applyOpsIndex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ImageKey {
    /// The write's timestamp (`engine::clock::ts_key`).
    pub(crate) ts: u64,
    /// The write's index inside its `applyOps` (0 for a plain entry).
    pub(crate) apply_ops_index: u32,
    /// The collection's UUID.
    pub(crate) uuid: [u8; 16],
}

/// The document before (and, for updates, after) one write.
#[derive(Debug, Clone)]
pub(crate) struct StoredImage {
    /// The document before the write.
    pub(crate) pre: Document,
    /// The document after an update.
    pub(crate) post: Option<Document>,
}

#[derive(Debug, Clone)]
struct PendingImage {
    uuid: bson::Uuid,
    id: Bson,
    image: StoredImage,
}

/// Images captured by the catalog while it applies a write, waiting for the write's oplog
/// entry to be stamped (`Catalog::images`).
#[derive(Debug, Clone, Default)]
pub(crate) struct ImageLog {
    pending: VecDeque<PendingImage>,
}

/// Bound of [`ImageLog`]: images whose write was never logged are dropped oldest first.
const MAX_PENDING_IMAGES: usize = 100_000;

impl ImageLog {
    /// Records the image of a write on `uuid`'s document `id`.
    pub(crate) fn push(
        &mut self,
        uuid: bson::Uuid,
        id: Bson,
        pre: Document,
        post: Option<Document>,
    ) {
        if self.pending.len() >= MAX_PENDING_IMAGES {
            self.pending.pop_front();
        }
        self.pending.push_back(PendingImage {
            uuid,
            id,
            image: StoredImage { pre, post },
        });
    }

    fn take(&mut self, uuid: &[u8], id: &Bson) -> Option<StoredImage> {
        let i = self
            .pending
            .iter()
            .position(|p| p.uuid.bytes() == uuid && &p.id == id)?;
        self.pending.remove(i).map(|p| p.image)
    }

    /// Drops every waiting image (a transaction's commit brings its own).
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }
}

/// Stored pre-/post-images (`Engine::pre_images`), bounded by the oplog window.
#[derive(Debug, Default)]
pub(crate) struct PreImages {
    map: BTreeMap<ImageKey, StoredImage>,
}

impl PreImages {
    /// Stores the images of the updates/deletes of a just-stamped oplog entry (inner ops of
    /// an `applyOps` by index), and expires images older than the oldest oplog entry.
    pub(crate) fn record(
        &mut self,
        entry: &Document,
        ts: Timestamp,
        log: &mut ImageLog,
        oldest: Option<Timestamp>,
    ) {
        if !log.pending.is_empty() {
            let inner = match entry.get_document("o").ok().and_then(|o| o.get("applyOps")) {
                Some(Bson::Array(ops)) => ops.iter().filter_map(Bson::as_document).collect(),
                _ => vec![entry],
            };
            for (i, op) in inner.into_iter().enumerate() {
                let id = match op.get_str("op") {
                    Ok("u") => op.get_document("o2").ok().and_then(|o| o.get("_id")),
                    Ok("d") => op.get_document("o").ok().and_then(|o| o.get("_id")),
                    _ => None,
                };
                let (Some(id), Some(Bson::Binary(ui))) = (id, op.get("ui")) else {
                    continue;
                };
                if let Some(image) = log.take(&ui.bytes, id) {
                    self.insert(ts, i as u32, &ui.bytes, image);
                }
            }
        }
        if let Some(oldest) = oldest {
            let keep = self.map.split_off(&ImageKey {
                ts: ts_key(oldest),
                apply_ops_index: 0,
                uuid: [0; 16],
            });
            self.map = keep;
        }
    }

    /// Stores an image under `(ts, applyOpsIndex, uuid)`.
    pub(crate) fn insert(&mut self, ts: Timestamp, index: u32, uuid: &[u8], image: StoredImage) {
        let mut u = [0u8; 16];
        for (d, s) in u.iter_mut().zip(uuid) {
            *d = *s;
        }
        self.map.insert(
            ImageKey {
                ts: ts_key(ts),
                apply_ops_index: index,
                uuid: u,
            },
            image,
        );
    }

    /// The image stored under `key`.
    pub(crate) fn get(&self, key: &ImageKey) -> Option<&StoredImage> {
        self.map.get(key)
    }

    /// The image of the single write logged at `ts` on `uuid` (index 0).
    pub(crate) fn get_at(&self, ts: Timestamp, uuid: &[u8]) -> Option<&StoredImage> {
        let mut u = [0u8; 16];
        for (d, s) in u.iter_mut().zip(uuid) {
            *d = *s;
        }
        self.map.get(&ImageKey {
            ts: ts_key(ts),
            apply_ops_index: 0,
            uuid: u,
        })
    }
}
