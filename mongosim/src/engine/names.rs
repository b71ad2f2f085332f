//! Namespace rules (reference §8.4, SRV `namespace_string.h`, `ops/insert.cpp`,
//! `commands.cpp` `parseNsCollectionRequired`).

use crate::error::{CmdResult, CommandError};
use bson::Bson;

/// Longest fully qualified namespace for an unsharded collection (FCV >= 4.4).
pub(crate) const MAX_NS_LEN: usize = 255;

/// 73 "Invalid database name: '<db>'" unless `db` is a legal database name.
pub(crate) fn check_db(db: &str) -> CmdResult<()> {
    let bad = db.is_empty()
        || db.len() > 63
        || db
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '.' | '"' | '$' | ' ' | '\0'));
    if bad {
        return Err(CommandError::invalid_namespace(format!(
            "Invalid database name: '{db}'"
        )));
    }
    Ok(())
}

/// The collection name from a command's first field: a non-empty string without NUL or a
/// bad `$` (73 otherwise).
pub(crate) fn coll_arg<'a>(db: &str, v: Option<&'a Bson>) -> CmdResult<&'a str> {
    match v {
        Some(Bson::String(s)) => {
            check_coll(db, s)?;
            Ok(s.as_str())
        }
        Some(other) => Err(CommandError::invalid_namespace(format!(
            "collection name has invalid type {}",
            type_name(other)
        ))),
        None => Err(CommandError::invalid_namespace(format!(
            "Invalid namespace specified '{db}.'"
        ))),
    }
}

/// 73 "Invalid namespace specified '<db>.<coll>'" for an unusable collection name.
pub(crate) fn check_coll(db: &str, coll: &str) -> CmdResult<()> {
    check_db(db)?;
    let dollar_ok = coll == "oplog.$main" || coll.starts_with("$cmd");
    if coll.is_empty()
        || coll.contains('\0')
        || (coll.contains('$') && !dollar_ok)
        || coll.starts_with('.')
    {
        return Err(CommandError::invalid_namespace(format!(
            "Invalid namespace specified '{db}.{coll}'"
        )));
    }
    Ok(())
}

/// Checks a namespace about to be created (SRV `userAllowedCreateNS`).
pub(crate) fn check_create_ns(db: &str, coll: &str) -> CmdResult<()> {
    check_coll(db, coll)?;
    let ns = format!("{db}.{coll}");
    if ns.len() > MAX_NS_LEN {
        return Err(CommandError::invalid_namespace(format!(
            "Fully qualified namespace is too long. Namespace: {ns} Max: {MAX_NS_LEN}"
        )));
    }
    if coll.contains(".system.") {
        return Err(CommandError::bad_value(format!("Invalid namespace: {ns}")));
    }
    if let Some(rest) = coll.strip_prefix("system.") {
        let legal = matches!(rest, "views" | "js" | "profile" | "buckets")
            || rest.starts_with("buckets.")
            || (db == "admin" && matches!(rest, "version" | "users" | "roles"))
            || (db == "config" && rest == "sessions");
        if !legal {
            return Err(CommandError::invalid_namespace(format!(
                "Invalid system namespace: {ns}"
            )));
        }
    }
    Ok(())
}

/// Checks a namespace a user write targets (SRV `userAllowedWriteNS`): no writes to
/// `system.profile`, `system.views` or the oplog.
pub(crate) fn check_write_ns(db: &str, coll: &str, repl: bool) -> CmdResult<()> {
    check_coll(db, coll)?;
    if coll == "system.profile"
        || coll == "system.views"
        || (repl && db == "local" && coll == "oplog.rs")
    {
        return Err(CommandError::invalid_namespace(format!(
            "cannot write to {db}.{coll}"
        )));
    }
    check_create_ns(db, coll)
}

fn type_name(v: &Bson) -> &'static str {
    match v {
        Bson::Double(_) => "double",
        Bson::String(_) => "string",
        Bson::Document(_) => "object",
        Bson::Array(_) => "array",
        Bson::Binary(_) => "binData",
        Bson::ObjectId(_) => "objectId",
        Bson::Boolean(_) => "bool",
        Bson::DateTime(_) => "date",
        Bson::Null => "null",
        Bson::Int32(_) => "int",
        Bson::Int64(_) => "long",
        Bson::Timestamp(_) => "timestamp",
        Bson::Decimal128(_) => "decimal",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(check_db("a.b").unwrap_err().code, 73);
        assert_eq!(
            check_coll("test", "").unwrap_err().errmsg,
            "Invalid namespace specified 'test.'"
        );
        assert!(check_coll("test", "a.b").is_ok());
        assert_eq!(check_create_ns("test", "system.foo").unwrap_err().code, 73);
        assert_eq!(
            check_write_ns("local", "oplog.rs", true).unwrap_err().code,
            73
        );
        let long = "x".repeat(300);
        assert!(check_create_ns("test", &long)
            .unwrap_err()
            .errmsg
            .starts_with("Fully qualified namespace is too long"));
    }
}
