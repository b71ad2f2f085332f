//! Size limits every layer shares (reference §8.5): what `hello` advertises, what the wire layer
//! enforces on incoming messages, and what the commands check on documents.

/// `maxMessageSizeBytes` advertised in hello; a longer message closes the connection.
pub(crate) const MAX_MESSAGE_SIZE: usize = 48_000_000;
/// `BSONObjMaxUserSize`.
pub(crate) const MAX_BSON_OBJECT_SIZE: usize = 16 * 1024 * 1024;
/// `BSONObjMaxInternalSize`: the largest command body.
pub(crate) const MAX_INTERNAL_BSON_SIZE: usize = MAX_BSON_OBJECT_SIZE + 16 * 1024;
/// `maxWriteBatchSize`.
pub(crate) const MAX_WRITE_BATCH_SIZE: i32 = 100_000;
