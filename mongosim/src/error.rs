//! The one error type every command answers through, and the table of error codes: both
//! live in the query crate (`mql`), which raises most of them; see `mql::error`.
//!
//! A real server's failed command is an `ok: 0.0` reply with an Int32 `code`, the symbolic
//! `codeName` from `src/mongo/base/error_codes.yml`, an `errmsg`, and `errorLabels` when a
//! label applies (reference §8.1). Building every error reply from [`CommandError`] keeps
//! that shape from drifting.

pub use mql::error::{code_name, CmdResult, CommandError, ErrorCode};
