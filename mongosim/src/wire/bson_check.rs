//! Validates raw BSON before it is decoded (SRV `src/mongo/bson/bson_validate.cpp`): element
//! framing, types, NUL-terminated keys, string lengths, and the nesting depth limit, without
//! recursion, so hostile input can neither overflow the stack nor be misread.

use crate::error::CommandError;
use crate::error::ErrorCode;

/// `BSONDepth::kDefaultMaxAllowableDepth` (reference §8.6).
pub(crate) const MAX_DEPTH: usize = 200;

fn invalid(msg: &str) -> CommandError {
    // 22 InvalidBSON, as `validateBSON` reports for malformed objects.
    CommandError::from_code(ErrorCode::InvalidBSON, msg.to_string())
}

fn i32_at(b: &[u8], at: usize) -> Result<i32, CommandError> {
    super::read_i32(b, at).ok_or_else(|| invalid("BSON object truncated"))
}

/// The offset after a fixed-size value of `n` bytes at `pos`, which must end before the
/// terminating NUL of the enclosing document (`end` is exclusive).
fn fixed(pos: usize, end: usize, n: usize) -> Result<usize, CommandError> {
    let next = pos
        .checked_add(n)
        .ok_or_else(|| invalid("BSON element size"))?;
    if next > end - 1 {
        Err(invalid("BSON element truncated"))
    } else {
        Ok(next)
    }
}

/// The offset after a BSON string (Int32 length incl. NUL, bytes, NUL) at `p`.
fn string_at(bytes: &[u8], p: usize, end: usize) -> Result<usize, CommandError> {
    let n = i32_at(bytes, p)?;
    if n < 1 {
        return Err(invalid("BSON string length invalid"));
    }
    let next = fixed(p, end, 4 + n as usize)?;
    if bytes[next - 1] != 0 {
        return Err(invalid("BSON string not NUL-terminated"));
    }
    Ok(next)
}

/// Validates one document occupying exactly `bytes`.
pub(crate) fn validate(bytes: &[u8]) -> Result<(), CommandError> {
    validate_at_depth(bytes, 1)
}

fn validate_at_depth(bytes: &[u8], base_depth: usize) -> Result<(), CommandError> {
    let len = i32_at(bytes, 0)?;
    if len < 5 || len as usize != bytes.len() || bytes[bytes.len() - 1] != 0 {
        return Err(invalid("BSON object size mismatch"));
    }
    // Stack of the end offsets (exclusive) of the open documents.
    let mut ends: Vec<usize> = vec![bytes.len()];
    let mut pos = 4;
    while let Some(&end) = ends.last() {
        if base_depth + ends.len() - 1 > MAX_DEPTH {
            return Err(CommandError::from_code(
                ErrorCode::Overflow,
                "BSONObj exceeds maximum nested object depth",
            ));
        }
        if pos >= end {
            return Err(invalid("BSON object truncated"));
        }
        let t = bytes[pos];
        pos += 1;
        if t == 0 {
            if pos != end {
                return Err(invalid("BSON object has trailing bytes"));
            }
            ends.pop();
            continue;
        }
        if pos >= end {
            return Err(invalid("BSON element truncated"));
        }
        // Keys and regex strings must end before the enclosing document's own NUL.
        let nul = bytes[pos..end - 1]
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| invalid("BSON field name not NUL-terminated"))?;
        pos += nul + 1;
        pos = match t {
            0x01 | 0x09 | 0x11 | 0x12 => fixed(pos, end, 8)?,
            0x02 | 0x0D | 0x0E => string_at(bytes, pos, end)?,
            0x03 | 0x04 => {
                let n = i32_at(bytes, pos)?;
                if n < 5 || pos + n as usize > end - 1 || bytes[pos + n as usize - 1] != 0 {
                    return Err(invalid("BSON embedded object size invalid"));
                }
                ends.push(pos + n as usize);
                pos + 4
            }
            0x05 => {
                let n = i32_at(bytes, pos)?;
                if n < 0 {
                    return Err(invalid("BSON binary length invalid"));
                }
                fixed(pos, end, 4 + 1 + n as usize)?
            }
            0x06 | 0x0A | 0x7F | 0xFF => pos,
            0x07 => fixed(pos, end, 12)?,
            0x08 => {
                let next = fixed(pos, end, 1)?;
                if bytes[pos] > 1 {
                    return Err(invalid("BSON bool value invalid"));
                }
                next
            }
            0x0B => {
                let p = bytes[pos..end - 1]
                    .iter()
                    .position(|&b| b == 0)
                    .map(|n| pos + n + 1)
                    .ok_or_else(|| invalid("BSON regex truncated"))?;
                bytes[p..end - 1]
                    .iter()
                    .position(|&b| b == 0)
                    .map(|n| p + n + 1)
                    .ok_or_else(|| invalid("BSON regex truncated"))?
            }
            0x0C => {
                let p = string_at(bytes, pos, end)?;
                fixed(p, end, 12)?
            }
            0x0F => {
                // Int32 total, string, scope document: at least 4 + 5 + 5 bytes. The string
                // must end inside the declared total (SRV bson_validate.cpp checks the
                // code-with-scope length before the parts), so the scope slice is never
                // inverted however the lengths lie.
                let total = i32_at(bytes, pos)?;
                let cws_end = usize::try_from(total)
                    .ok()
                    .filter(|&n| n >= 14)
                    .and_then(|n| pos.checked_add(n))
                    .filter(|&e| e < end)
                    .ok_or_else(|| invalid("BSON code with scope size invalid"))?;
                let scope_at = string_at(bytes, pos + 4, cws_end + 1)?;
                // The scope is one more nesting level; recursion is bounded by MAX_DEPTH.
                validate_at_depth(&bytes[scope_at..cws_end], base_depth + ends.len())?;
                cws_end
            }
            0x10 => fixed(pos, end, 4)?,
            0x13 => fixed(pos, end, 16)?,
            _ => return Err(invalid("BSON element type unknown")),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn bytes(d: &bson::Document) -> Vec<u8> {
        let mut v = Vec::new();
        d.to_writer(&mut v).unwrap();
        v
    }

    #[test]
    fn accepts_every_type() {
        let d = doc! {
            "a": 1.5, "b": "s", "c": {"x": [1, 2, {"y": null}]}, "d": bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic, bytes: vec![1, 2] },
            "e": bson::oid::ObjectId::new(), "f": true, "g": bson::DateTime::now(),
            "h": bson::Regex { pattern: "a".into(), options: "i".into() },
            "i": bson::Bson::JavaScriptCode("x".into()),
            "j": bson::Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
                code: "x".into(), scope: doc! {"k": 1} }),
            "l": 1i32, "m": bson::Timestamp { time: 1, increment: 2 }, "n": 3i64,
            "o": bson::Bson::MinKey, "p": bson::Bson::MaxKey, "q": bson::Bson::Undefined,
        };
        validate(&bytes(&d)).unwrap();
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        let good = bytes(&doc! {"a": "xyz", "b": {"c": 1}});
        for cut in 0..good.len() {
            let mut v = good[..cut].to_vec();
            if v.len() >= 4 {
                let n = v.len() as i32;
                v[..4].copy_from_slice(&n.to_le_bytes());
            }
            assert!(validate(&v).is_err(), "cut {cut}");
        }
        for i in 4..good.len() {
            for b in [0u8, 1, 0x7f, 0xff] {
                let mut v = good.clone();
                v[i] = b;
                let _ = validate(&v);
            }
        }
    }

    /// A code-with-scope whose declared total is smaller than the string inside it (found by
    /// mutating valid messages: it used to slice `scope_at..cws_end` inverted and panic).
    #[test]
    fn code_with_scope_lengths_that_lie() {
        let cws = bson::Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
            code: "function () { return 1; }".into(),
            scope: doc! {"k": 1},
        });
        let good = bytes(&doc! {"c": cws});
        // type byte, "c\0", then the Int32 total at offset 7.
        let at = 4 + 1 + 2;
        for total in [-1i32, 0, 5, 13, 14, 20, 30, i32::MAX] {
            let mut v = good.clone();
            v[at..at + 4].copy_from_slice(&total.to_le_bytes());
            assert!(validate(&v).is_err(), "total {total}");
        }
        // The string length lying instead.
        for len in [-1i32, 0, 1, 1000, i32::MAX] {
            let mut v = good.clone();
            v[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
            assert!(validate(&v).is_err(), "string length {len}");
        }
        validate(&good).unwrap();
    }

    #[test]
    fn depth_limit() {
        let mut d = doc! {"x": 1};
        for _ in 0..(MAX_DEPTH - 1) {
            d = doc! {"x": d};
        }
        validate(&bytes(&d)).unwrap();
        let d = doc! {"x": d};
        assert_eq!(validate(&bytes(&d)).unwrap_err().code, 15);
    }
}
