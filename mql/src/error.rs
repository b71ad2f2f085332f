//! The error type: an error as a MongoDB server reports it.
//!
//! A real server's failed command is an `ok: 0.0` reply with an Int32 `code`, the symbolic
//! `codeName` from `src/mongo/base/error_codes.yml`, an `errmsg`, and `errorLabels` when a
//! label applies. Every error of this crate has that shape, with the code the server gives
//! for the same input, so a pipeline evaluated here fails the way it would on a server.

use bson::{doc, Bson, Document};

pub use crate::error_codes::{code_name, ErrorCode};

/// A command failure: code, codeName, errmsg, labels and extra fields merged into the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// Numeric error code (Int32 on the wire).
    pub code: i32,
    /// Symbolic name (`error_codes.yml`), or `Location<code>` for unnamed assertions.
    pub code_name: String,
    /// Human-readable message.
    pub errmsg: String,
    /// `errorLabels`, omitted from the reply when empty.
    pub labels: Vec<String>,
    /// Extra fields merged into the reply body (e.g. `keyPattern`, `errorExtraInfo`).
    pub extra: Document,
}

impl Error {
    /// An error with a code, its name and a message.
    fn new(code: i32, code_name: impl Into<String>, errmsg: impl Into<String>) -> Self {
        Self {
            code,
            code_name: code_name.into(),
            errmsg: errmsg.into(),
            labels: Vec::new(),
            extra: Document::new(),
        }
    }

    /// An error with a code of the table (its codeName comes from the same table).
    pub fn from_code(code: ErrorCode, errmsg: impl Into<String>) -> Self {
        Self::new(code.code(), code.name(), errmsg)
    }

    /// An error with any numeric code (e.g. a `failCommand` `errorCode`): codeName from the
    /// table, `Location<code>` for codes it does not know.
    pub fn from_number(code: i32, errmsg: impl Into<String>) -> Self {
        Self::new(code, code_name(code), errmsg)
    }

    /// Adds an error label.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        let label = label.into();
        if !self.labels.contains(&label) {
            self.labels.push(label);
        }
        self
    }

    /// Adds a field merged into the reply body.
    pub fn with_extra(mut self, key: &str, value: impl Into<Bson>) -> Self {
        self.extra.insert(key, value.into());
        self
    }

    /// The body of the `ok: 0` reply (without `$clusterTime`/`operationTime`, which the
    /// server layer appends).
    pub fn to_reply(&self) -> Document {
        let mut d = doc! {
            "ok": 0.0,
            "errmsg": self.errmsg.clone(),
            "code": self.code,
            "codeName": self.code_name.clone(),
        };
        for (k, v) in &self.extra {
            d.insert(k.clone(), v.clone());
        }
        if !self.labels.is_empty() {
            d.insert("errorLabels", self.labels.clone());
        }
        d
    }

    /// The `writeErrors` entry for this error at batch index `index` (reference §8.2).
    pub fn to_write_error(&self, index: usize) -> Document {
        let mut d = doc! {
            "index": index as i32,
            "code": self.code,
            "errmsg": self.errmsg.clone(),
        };
        for (k, v) in &self.extra {
            d.insert(k.clone(), v.clone());
        }
        d
    }

    // ---- constructors for the codes mongosim raises (reference §8.8) ----

    /// 2 BadValue.
    pub fn bad_value(msg: impl Into<String>) -> Self {
        Self::from_code(ErrorCode::BadValue, msg)
    }
    /// 9 FailedToParse.
    pub fn failed_to_parse(msg: impl Into<String>) -> Self {
        Self::from_code(ErrorCode::FailedToParse, msg)
    }
    /// 14 TypeMismatch.
    pub fn type_mismatch(msg: impl Into<String>) -> Self {
        Self::from_code(ErrorCode::TypeMismatch, msg)
    }
    /// 14 TypeMismatch as the server's IDL parsers word it (reference §8.3).
    pub fn wrong_type(field: &str, value: &Bson, expected: &str) -> Self {
        Self::type_mismatch(format!(
            "BSON field '{field}' is the wrong type '{}', expected type '{expected}'",
            crate::fmt::type_name(value)
        ))
    }
    /// 26 NamespaceNotFound.
    pub fn namespace_not_found(msg: impl Into<String>) -> Self {
        Self::from_code(ErrorCode::NamespaceNotFound, msg)
    }
    /// 40415 unknown field (IDL strict parsing).
    pub fn unknown_field(field: &str, cmd: &str) -> Self {
        Self::from_code(
            ErrorCode::IdlUnknownField,
            format!("BSON field '{cmd}.{field}' is an unknown field."),
        )
    }
    /// 59 CommandNotFound.
    pub fn command_not_found(name: &str) -> Self {
        Self::from_code(
            ErrorCode::CommandNotFound,
            format!("no such command: '{name}'"),
        )
    }
    /// 73 InvalidNamespace.
    pub fn invalid_namespace(msg: impl Into<String>) -> Self {
        Self::from_code(ErrorCode::InvalidNamespace, msg)
    }
    /// 11000 DuplicateKey.
    pub fn duplicate_key(msg: impl Into<String>) -> Self {
        Self::from_code(ErrorCode::DuplicateKey, msg)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code_name, self.code, self.errmsg)
    }
}

impl std::error::Error for Error {}

/// A result whose error is an [`Error`].
pub type Result<T = Document, E = Error> = std::result::Result<T, E>;

/// The name the server simulator and the engine modules use for [`Error`].
pub type CommandError = Error;
/// The name the server simulator and the engine modules use for [`Result`].
pub type CmdResult<T = Document> = Result<T>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_shape() {
        let e = Error::command_not_found("foo").with_label("L");
        let r = e.to_reply();
        assert_eq!(r.get_f64("ok").unwrap(), 0.0);
        assert_eq!(r.get_i32("code").unwrap(), 59);
        assert_eq!(r.get_str("codeName").unwrap(), "CommandNotFound");
        assert_eq!(r.get_array("errorLabels").unwrap().len(), 1);
        assert_eq!(code_name(40573), "Location40573");
    }
}
