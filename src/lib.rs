//! mongotail: tail MongoDB as a `futures::Stream` of ops (being built).
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
