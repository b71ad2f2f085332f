//! Public streams and handles can move between threads (futures `tests/auto_traits.rs`).

use mongotail::source::change_stream::ChangeStreamControl;
use mongotail::source::oplog::OplogControl;
use mongotail::{
    ChangeStreamSource, ClusterControl, ClusterOptions, ClusterStream, DirectReads, Error, Handle,
    Op, OpStream, OplogStream, TailOptions,
};

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}
fn assert_unpin<T: Unpin>() {}

#[test]
fn streams_are_send_and_unpin() {
    assert_send::<OplogStream>();
    assert_send::<ChangeStreamSource>();
    assert_send::<DirectReads>();
    assert_send::<OpStream>();
    assert_send::<ClusterStream>();
    assert_unpin::<OplogStream>();
    assert_unpin::<ClusterStream>();
    assert_unpin::<ChangeStreamSource>();
    assert_unpin::<DirectReads>();
    assert_unpin::<OpStream>();
}

#[test]
fn handles_ops_and_errors_are_send_and_sync() {
    assert_send::<Handle>();
    assert_sync::<Handle>();
    assert_send::<OplogControl>();
    assert_sync::<OplogControl>();
    assert_send::<ChangeStreamControl>();
    assert_sync::<ChangeStreamControl>();
    assert_send::<ClusterControl>();
    assert_sync::<ClusterControl>();
    assert_send::<ClusterOptions>();
    assert_sync::<ClusterOptions>();
    assert_send::<Op>();
    assert_sync::<Op>();
    assert_send::<Error>();
    assert_sync::<Error>();
    assert_send::<TailOptions>();
    assert_sync::<TailOptions>();
}
