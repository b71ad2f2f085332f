//! The one error type every command answers through.
//!
//! A real server's failed command is an `ok: 0.0` reply with an Int32 `code`, the symbolic
//! `codeName` from `src/mongo/base/error_codes.yml`, an `errmsg`, and `errorLabels` when a
//! label applies (reference §8.1). Building every error reply from [`CommandError`] keeps
//! that shape from drifting.

use bson::{doc, Bson, Document};

/// A command failure: code, codeName, errmsg, labels and extra fields merged into the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandError {
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

impl CommandError {
    /// An error with a code, its name and a message.
    pub fn new(code: i32, code_name: impl Into<String>, errmsg: impl Into<String>) -> Self {
        Self {
            code,
            code_name: code_name.into(),
            errmsg: errmsg.into(),
            labels: Vec::new(),
            extra: Document::new(),
        }
    }

    /// An error whose name is looked up in the table of known codes (`Location<code>` otherwise).
    pub fn from_code(code: i32, errmsg: impl Into<String>) -> Self {
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
        Self::from_code(2, msg)
    }
    /// 9 FailedToParse.
    pub fn failed_to_parse(msg: impl Into<String>) -> Self {
        Self::from_code(9, msg)
    }
    /// 14 TypeMismatch.
    pub fn type_mismatch(msg: impl Into<String>) -> Self {
        Self::from_code(14, msg)
    }
    /// 14 TypeMismatch as the server's IDL parsers word it (reference §8.3).
    pub fn wrong_type(field: &str, value: &Bson, expected: &str) -> Self {
        Self::type_mismatch(format!(
            "BSON field '{field}' is the wrong type '{}', expected type '{expected}'",
            crate::query::fmt::type_name(value)
        ))
    }
    /// 26 NamespaceNotFound.
    pub fn namespace_not_found(msg: impl Into<String>) -> Self {
        Self::from_code(26, msg)
    }
    /// 40415 unknown field (IDL strict parsing).
    pub fn unknown_field(field: &str, cmd: &str) -> Self {
        Self::from_code(
            40415,
            format!("BSON field '{cmd}.{field}' is an unknown field."),
        )
    }
    /// 59 CommandNotFound.
    pub fn command_not_found(name: &str) -> Self {
        Self::from_code(59, format!("no such command: '{name}'"))
    }
    /// 73 InvalidNamespace.
    pub fn invalid_namespace(msg: impl Into<String>) -> Self {
        Self::from_code(73, msg)
    }
    /// 11000 DuplicateKey.
    pub fn duplicate_key(msg: impl Into<String>) -> Self {
        Self::from_code(11000, msg)
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code_name, self.code, self.errmsg)
    }
}

impl std::error::Error for CommandError {}

/// Result of a command handler.
pub type CmdResult<T = Document> = Result<T, CommandError>;

/// The symbolic name of an error code, from the server's `src/mongo/base/error_codes.yml`.
/// Codes without an entry are assertion ids, named `Location<code>` as the server does.
pub fn code_name(code: i32) -> String {
    let name = match code {
        1 => "InternalError",
        2 => "BadValue",
        4 => "NoSuchKey",
        5 => "GraphContainsCycle",
        6 => "HostUnreachable",
        7 => "HostNotFound",
        8 => "UnknownError",
        9 => "FailedToParse",
        10 => "CannotMutateObject",
        11 => "UserNotFound",
        13 => "Unauthorized",
        14 => "TypeMismatch",
        15 => "Overflow",
        16 => "InvalidLength",
        17 => "ProtocolError",
        18 => "AuthenticationFailed",
        20 => "IllegalOperation",
        22 => "InvalidBSON",
        24 => "LockTimeout",
        26 => "NamespaceNotFound",
        27 => "IndexNotFound",
        28 => "PathNotViable",
        40 => "ConflictingUpdateOperators",
        43 => "CursorNotFound",
        46 => "LockBusy",
        48 => "NamespaceExists",
        50 => "MaxTimeMSExpired",
        51 => "ManualInterventionRequired",
        52 => "DollarPrefixedFieldName",
        53 => "InvalidIdField",
        54 => "NotSingleValueField",
        55 => "InvalidDBRef",
        56 => "EmptyFieldName",
        57 => "DottedFieldName",
        59 => "CommandNotFound",
        61 => "ShardKeyNotFound",
        63 => "StaleShardVersion",
        64 => "WriteConcernFailed",
        66 => "ImmutableField",
        67 => "CannotCreateIndex",
        68 => "IndexAlreadyExists",
        72 => "InvalidOptions",
        73 => "InvalidNamespace",
        79 => "UnknownReplWriteConcern",
        85 => "IndexOptionsConflict",
        86 => "IndexKeySpecsConflict",
        89 => "NetworkTimeout",
        91 => "ShutdownInProgress",
        96 => "OperationFailed",
        100 => "UnsatisfiableWriteConcern",
        112 => "WriteConflict",
        115 => "CommandNotSupported",
        117 => "ConflictingOperationInProgress",
        125 => "CommandFailed",
        133 => "FailedToSatisfyReadPreference",
        134 => "ReadConcernMajorityNotAvailableYet",
        136 => "CappedPositionLost",
        150 => "StaleEpoch",
        166 => "CommandNotSupportedOnView",
        167 => "OptionNotSupportedOnView",
        168 => "InvalidPipelineOperator",
        175 => "QueryPlanKilled",
        189 => "PrimarySteppedDown",
        216 => "ElectionInProgress",
        225 => "TransactionTooOld",
        234 => "RetryChangeStream",
        237 => "CursorKilled",
        239 => "SnapshotTooOld",
        244 => "TransactionAborted",
        246 => "SnapshotUnavailable",
        251 => "NoSuchTransaction",
        256 => "TransactionCommitted",
        257 => "TransactionTooLarge",
        260 => "InvalidResumeToken",
        262 => "ExceededTimeLimit",
        263 => "OperationNotSupportedInTransaction",
        266 => "FailPointSetFailed",
        267 => "PreparedTransactionInProgress",
        280 => "ChangeStreamFatalError",
        286 => "ChangeStreamHistoryLost",
        292 => "QueryExceededMemoryLimitNoDiskUseAllowed",
        322 => "TooManyFilesOpen",
        352 => "UnsupportedOpQueryCommand",
        384 => "ConnectionPoolExpired",
        9001 => "SocketException",
        10107 => "NotWritablePrimary",
        10334 => "BSONObjectTooLarge",
        11000 => "DuplicateKey",
        11600 => "InterruptedAtShutdown",
        11601 => "Interrupted",
        11602 => "InterruptedDueToReplStateChange",
        12586 => "BackgroundOperationInProgressForDatabase",
        13297 => "DatabaseDifferCase",
        13388 => "StaleConfig",
        13435 => "NotPrimaryNoSecondaryOk",
        13436 => "NotPrimaryOrSecondary",
        14031 => "OutOfDiskSpace",
        46841 => "ClientMarkedKilled",
        _ => return format!("Location{code}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_shape() {
        let e = CommandError::command_not_found("foo").with_label("L");
        let r = e.to_reply();
        assert_eq!(r.get_f64("ok").unwrap(), 0.0);
        assert_eq!(r.get_i32("code").unwrap(), 59);
        assert_eq!(r.get_str("codeName").unwrap(), "CommandNotFound");
        assert_eq!(r.get_array("errorLabels").unwrap().len(), 1);
        assert_eq!(code_name(40573), "Location40573");
    }
}
