//! Change-stream resume tokens: the server's KeyString V1 format, hex encoded.
//!
//! A token is `{_data: "<uppercase hex>", _typeBits?: BinData(0)}` (reference §5.8). `_data`
//! is the KeyString (ascending ordering, version V1) of the tuple
//! `clusterTime, version, tokenType, txnOpIndex, fromInvalidate, uuid, eventIdentifier`
//! (SRV `src/mongo/db/pipeline/resume_token.cpp` `ResumeToken(const ResumeTokenData&)`), so
//! tokens compare byte-wise in event order. Values are encoded as
//! SRV `src/mongo/db/storage/key_string.cpp` (`_appendBsonValue` and friends) does, and
//! the numeric / string BSON types the encoding collapses are kept in `_typeBits`.
//!
//! Limitations (documented, not silent): `Decimal128` values inside an event identifier are
//! encoded through their nearest double (ordering approximated, type bits say Double), and
//! `DBPointer` values are encoded as an empty DBRef; neither appears in realistic `_id`s.

use bson::{spec::BinarySubtype, Binary, Bson, Document, RawBinaryRef, RawDocumentBuf, Timestamp};

use crate::error::ErrorCode;
use crate::error::{CmdResult, CommandError};

/// `tokenType` of an event token.
pub(crate) const EVENT_TOKEN: i32 = 128;
/// `tokenType` of a high-water-mark token.
pub(crate) const HIGH_WATER_MARK_TOKEN: i32 = 0;

/// Operation types whose v0/v1 event identifier is the bare `documentKey`
/// (SRV `change_stream_helpers_legacy.h` `kClassicOperationTypes`).
const CLASSIC_OPERATION_TYPES: &[&str] = &[
    "update",
    "replace",
    "insert",
    "delete",
    "drop",
    "rename",
    "dropDatabase",
    "invalidate",
];

// KeyString ctypes (SRV key_string.cpp `namespace CType`).
const K_MIN_KEY: u8 = 10;
const K_UNDEFINED: u8 = 15;
const K_NULLISH: u8 = 20;
const K_NUMERIC: u8 = 30;
const K_NUMERIC_NAN: u8 = K_NUMERIC;
const K_NUMERIC_NEG_LARGE: u8 = K_NUMERIC + 1;
const K_NUMERIC_NEG_8BYTE: u8 = K_NUMERIC + 2;
const K_NUMERIC_NEG_1BYTE: u8 = K_NUMERIC + 9;
const K_NUMERIC_NEG_SMALL: u8 = K_NUMERIC + 10;
const K_NUMERIC_ZERO: u8 = K_NUMERIC + 11;
const K_NUMERIC_POS_SMALL: u8 = K_NUMERIC + 12;
const K_NUMERIC_POS_1BYTE: u8 = K_NUMERIC + 13;
const K_NUMERIC_POS_8BYTE: u8 = K_NUMERIC + 20;
const K_NUMERIC_POS_LARGE: u8 = K_NUMERIC + 21;
const K_STRING_LIKE: u8 = 60;
const K_OBJECT: u8 = 70;
const K_ARRAY: u8 = 80;
const K_BIN_DATA: u8 = 90;
const K_OID: u8 = 100;
const K_BOOL_FALSE: u8 = 110;
const K_BOOL_TRUE: u8 = 111;
const K_DATE: u8 = 120;
const K_TIMESTAMP: u8 = 130;
const K_REGEX: u8 = 140;
const K_DBREF: u8 = 150;
const K_CODE: u8 = 160;
const K_CODE_WITH_SCOPE: u8 = 170;
const K_MAX_KEY: u8 = 240;
const K_END: u8 = 4;

// Type bits (SRV key_string.h `TypeBits`).
const TB_INT: u8 = 0;
const TB_LONG: u8 = 1;
const TB_DOUBLE: u8 = 2;
const TB_DECIMAL: u8 = 3;

/// Decimal continuation marker for doubles equal to themselves (SRV `kDCMEqualToDouble`).
const DCM_EQUAL_TO_DOUBLE: u64 = 0;
/// 2^63 as a double: the first double that is not an int64 (SRV `kMinLargeDouble`).
const MIN_LARGE_DOUBLE: f64 = 9_223_372_036_854_775_808.0;

/// The decoded content of a resume token (SRV `ResumeTokenData`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResumeTokenData {
    pub(crate) cluster_time: Timestamp,
    /// 0, 1 or 2.
    pub(crate) version: i32,
    /// [`EVENT_TOKEN`] or [`HIGH_WATER_MARK_TOKEN`].
    pub(crate) token_type: i32,
    /// Index of the op inside its transaction (0 outside transactions).
    pub(crate) txn_op_index: i32,
    pub(crate) from_invalidate: bool,
    /// Collection UUID bytes.
    pub(crate) uuid: Option<[u8; 16]>,
    /// `documentKey` (v0/v1 classic events) or `{operationType, documentKey|operationDescription}`.
    pub(crate) event_identifier: Option<Document>,
    /// `$changeStreamSplitLargeEvent` fragment number (v2 only; never generated here).
    pub(crate) fragment_num: Option<i32>,
}

impl ResumeTokenData {
    /// A high-water-mark token: only clusterTime, version and tokenType are set.
    pub(crate) fn high_water_mark(cluster_time: Timestamp, version: i32) -> Self {
        Self {
            cluster_time,
            version,
            token_type: HIGH_WATER_MARK_TOKEN,
            txn_op_index: 0,
            from_invalidate: false,
            uuid: None,
            event_identifier: None,
            fragment_num: None,
        }
    }

    /// An event token, choosing the event identifier the way the server's `ResumeTokenData`
    /// constructor does: v0/v1 classic events use the `documentKey` (even when absent); v2 and
    /// expanded events use `{operationType, documentKey}` or `{operationType, operationDescription}`.
    pub(crate) fn event(
        cluster_time: Timestamp,
        version: i32,
        txn_op_index: i32,
        uuid: Option<[u8; 16]>,
        operation_type: &str,
        document_key: Option<&Document>,
        operation_description: Option<&Document>,
    ) -> Self {
        let event_identifier = if CLASSIC_OPERATION_TYPES.contains(&operation_type) && version <= 1
        {
            document_key.cloned()
        } else {
            let mut id = Document::new();
            id.insert("operationType", operation_type);
            if let Some(key) = document_key {
                id.insert("documentKey", key.clone());
            } else if let Some(desc) = operation_description {
                id.insert("operationDescription", desc.clone());
            }
            Some(id)
        };
        Self {
            cluster_time,
            version,
            token_type: EVENT_TOKEN,
            txn_op_index,
            from_invalidate: false,
            uuid,
            event_identifier,
            fragment_num: None,
        }
    }

    /// Whether this is a high-water-mark token.
    pub(crate) fn is_high_water_mark(&self) -> bool {
        self.token_type == HIGH_WATER_MARK_TOKEN
    }

    /// Encodes the token (SRV `ResumeToken(const ResumeTokenData&)`).
    pub(crate) fn encode(&self) -> ResumeToken {
        let mut enc = Encoder::default();
        // an event token's KeyString: ~40 bytes, then its event identifier
        enc.buf.reserve(256);
        enc.timestamp(self.cluster_time);
        enc.int(i64::from(self.version), TB_INT);
        if self.version >= 1 {
            enc.int(i64::from(self.token_type), TB_INT);
        }
        enc.int(i64::from(self.txn_op_index), TB_INT);
        if self.version >= 1 {
            enc.buf.push(if self.from_invalidate {
                K_BOOL_TRUE
            } else {
                K_BOOL_FALSE
            });
        }
        match &self.uuid {
            Some(uuid) => enc.bin_data(BinarySubtype::Uuid, uuid),
            None if self.version >= 2 => enc.buf.push(K_NULLISH),
            None => {}
        }
        if let Some(id) = &self.event_identifier {
            enc.buf.push(K_OBJECT);
            enc.object(id);
        }
        if let Some(n) = self.fragment_num {
            enc.int(i64::from(n), TB_INT);
        }
        enc.buf.push(K_END);
        let type_bits = enc.type_bits.serialize();
        ResumeToken {
            data: hex_upper(&enc.buf),
            type_bits,
        }
    }

    /// The token document `{_data, _typeBits?}`.
    pub(crate) fn to_document(&self) -> Document {
        self.encode().to_document()
    }
}

/// An empty document whose buffer has room for `capacity` bytes (appends do not
/// reallocate until then).
pub(crate) fn empty_with_capacity(capacity: usize) -> RawDocumentBuf {
    let mut buf = Vec::with_capacity(capacity.max(5));
    buf.extend_from_slice(&[5, 0, 0, 0, 0]);
    RawDocumentBuf::from_bytes(buf).unwrap_or_default()
}

/// Uppercase hex of `bytes`, written straight into one `String`.
fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// A resume token as it travels: the hex KeyString and optional type bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResumeToken {
    /// Uppercase hex `_data`.
    pub(crate) data: String,
    /// Serialized `_typeBits` (absent when all zero).
    pub(crate) type_bits: Option<Vec<u8>>,
}

impl ResumeToken {
    /// [`ResumeToken::to_document`], encoded.
    pub(crate) fn to_raw(&self) -> RawDocumentBuf {
        let mut d = empty_with_capacity(self.data.len() + 48);
        d.append("_data", self.data.as_str());
        if let Some(bits) = &self.type_bits {
            d.append_ref(
                "_typeBits",
                RawBinaryRef {
                    subtype: BinarySubtype::Generic,
                    bytes: bits,
                },
            );
        }
        d
    }

    /// `{_data: <hex>, _typeBits?: BinData(0)}`.
    pub(crate) fn to_document(&self) -> Document {
        let mut d = Document::new();
        d.insert("_data", self.data.clone());
        if let Some(bits) = &self.type_bits {
            d.insert(
                "_typeBits",
                Binary {
                    subtype: BinarySubtype::Generic,
                    bytes: bits.clone(),
                },
            );
        }
        d
    }

    /// Parses a token document (SRV `ResumeToken(const Document&)`: 40647 / 40648).
    pub(crate) fn parse(doc: &Document) -> CmdResult<Self> {
        let data = match doc.get("_data") {
            Some(Bson::String(s)) => s.clone(),
            _ => {
                return Err(CommandError::from_code(
                    ErrorCode::ResumeTokenDataWrongType,
                    format!(
                        "Bad resume token: _data of missing or of wrong type. Expected string, got {doc}"
                    ),
                ))
            }
        };
        let type_bits = match doc.get("_typeBits") {
            None => None,
            Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Generic => Some(b.bytes.clone()),
            Some(_) => {
                return Err(CommandError::from_code(
                    ErrorCode::ResumeTokenTypeBitsInvalid,
                    format!("Bad resume token: _typeBits of wrong type {doc}"),
                ))
            }
        };
        Ok(Self { data, type_bits })
    }

    /// Decodes the token (SRV `ResumeToken::getData`), with the server's error codes.
    pub(crate) fn decode(&self) -> CmdResult<ResumeTokenData> {
        let mut it = self.key_string_values()?.into_iter();
        let mut data = decode_header(&mut it)?;
        decode_body(&mut it, &mut data)?;
        Ok(data)
    }

    /// The values of the `_data` KeyString, with the types the type bits restore.
    fn key_string_values(&self) -> CmdResult<Vec<Bson>> {
        let bytes = hex::decode(&self.data).map_err(|_| {
            CommandError::failed_to_parse("resume token string was not a valid hex string")
        })?;
        let mut bits = TypeBitsReader::new(self.type_bits.as_deref().unwrap_or(&[]))?;
        let mut dec = Decoder {
            buf: &bytes,
            pos: 0,
            bits: &mut bits,
        };
        let mut values = Vec::new();
        while let Some(ctype) = dec.peek() {
            if ctype == K_END {
                break;
            }
            dec.pos += 1;
            values.push(dec.value(ctype, 0)?);
        }
        Ok(values)
    }
}

/// The decoded values of a token, consumed in order.
type TokenValues = std::vec::IntoIter<Bson>;

/// Reads the fields every token has: clusterTime, version, tokenType (v1+), txnOpIndex and
/// fromInvalidate (v1+).
fn decode_header(it: &mut TokenValues) -> CmdResult<ResumeTokenData> {
    let Some(first) = it.next() else {
        return Err(CommandError::from_code(
            ErrorCode::ResumeTokenEmptyOrBadClusterTime,
            "invalid empty resume token",
        ));
    };
    let cluster_time = match first {
        Bson::Timestamp(ts) => ts,
        other => {
            return Err(CommandError::from_code(
                ErrorCode::ResumeTokenEmptyOrBadClusterTime,
                format!("invalid resume token: clusterTime is not a timestamp: {other}"),
            ))
        }
    };
    let version = decode_version(it.next())?;
    let mut data = ResumeTokenData {
        cluster_time,
        version,
        token_type: EVENT_TOKEN,
        txn_op_index: 0,
        from_invalidate: false,
        uuid: None,
        event_identifier: None,
        fragment_num: None,
    };
    if version >= 1 {
        data.token_type = decode_token_type(it.next())?;
    }
    data.txn_op_index = decode_txn_op_index(it.next())?;
    if version >= 1 {
        data.from_invalidate = match it.next() {
            None => {
                return Err(CommandError::from_code(
                    ErrorCode::ResumeTokenMissingFromInvalidate,
                    "Resume Token does not contain fromInvalidate",
                ))
            }
            Some(Bson::Boolean(b)) => b,
            Some(_) => {
                return Err(CommandError::from_code(
                    ErrorCode::ResumeTokenFromInvalidateWrongType,
                    "Resume Token fromInvalidate is not a boolean.",
                ))
            }
        };
    }
    Ok(data)
}

/// The token version: an int of 0, 1 or 2.
fn decode_version(v: Option<Bson>) -> CmdResult<i32> {
    let version = match v {
        None => {
            return Err(CommandError::from_code(
                ErrorCode::ResumeTokenMissingVersion,
                "Resume Token does not contain version",
            ))
        }
        Some(Bson::Int32(v)) => v,
        Some(_) => {
            return Err(CommandError::from_code(
                ErrorCode::ResumeTokenVersionWrongType,
                "Invalid resume token: wrong type for version",
            ))
        }
    };
    if !(0..=2).contains(&version) {
        return Err(CommandError::from_code(
            ErrorCode::ResumeTokenUnsupportedVersion,
            "Invalid Resume Token: only supports version 0, 1 and 2",
        ));
    }
    Ok(version)
}

/// The token type: [`EVENT_TOKEN`] or [`HIGH_WATER_MARK_TOKEN`].
fn decode_token_type(v: Option<Bson>) -> CmdResult<i32> {
    match v {
        None => Err(CommandError::from_code(
            ErrorCode::ResumeTokenMissingTokenType,
            "Resume Token does not contain tokenType",
        )),
        Some(Bson::Int32(t)) if t == EVENT_TOKEN || t == HIGH_WATER_MARK_TOKEN => Ok(t),
        Some(Bson::Int32(t)) => Err(CommandError::from_code(
            ErrorCode::ResumeTokenUnknownTokenType,
            format!("Token type {t} not recognized"),
        )),
        Some(_) => Err(CommandError::from_code(
            ErrorCode::ResumeTokenTokenTypeWrongType,
            "Resume Token tokenType is not an int.",
        )),
    }
}

/// The transaction op index: a non-negative int.
fn decode_txn_op_index(v: Option<Bson>) -> CmdResult<i32> {
    match v {
        None => Err(CommandError::from_code(
            ErrorCode::ResumeTokenMissingTxnOpIndex,
            "Resume Token does not contain txnOpIndex",
        )),
        Some(Bson::Int32(i)) if i >= 0 => Ok(i),
        Some(Bson::Int32(_)) => Err(CommandError::from_code(
            ErrorCode::ResumeTokenNegativeTxnOpIndex,
            "Invalid Resume Token: txnOpIndex should be non-negative",
        )),
        Some(_) => Err(CommandError::from_code(
            ErrorCode::ResumeTokenTxnOpIndexWrongType,
            "Resume Token txnOpIndex is not an integer",
        )),
    }
}

/// Reads the optional tail: uuid, eventIdentifier and fragmentNum (v2), then checks that
/// nothing is left.
fn decode_body(it: &mut TokenValues, data: &mut ResumeTokenData) -> CmdResult<()> {
    let Some(uuid) = it.next() else {
        if data.version >= 2 {
            return Err(CommandError::from_code(
                ErrorCode::ResumeTokenBadUuid,
                "Expected UUID or null",
            ));
        }
        return Ok(());
    };
    data.uuid = decode_uuid(uuid)?;
    let Some(id) = it.next() else {
        if data.token_type == EVENT_TOKEN && data.version >= 2 {
            return Err(CommandError::from_code(
                ErrorCode::ResumeTokenMissingEventIdentifier,
                "Expected an eventIdentifier for an event resume token",
            ));
        }
        return Ok(());
    };
    if data.token_type == HIGH_WATER_MARK_TOKEN {
        return Err(CommandError::from_code(
            ErrorCode::ResumeTokenBadHighWaterMark,
            "Invalid high water mark token",
        ));
    }
    match id {
        Bson::Document(d) => data.event_identifier = Some(d),
        _ => {
            return Err(CommandError::from_code(
                ErrorCode::ResumeTokenEventIdentifierNotObject,
                "Resume Token eventIdentifier is not an object",
            ))
        }
    }
    if data.version >= 2 {
        if let Some(frag) = it.next() {
            match frag {
                Bson::Int32(n) if n >= 0 => data.fragment_num = Some(n),
                _ => {
                    return Err(CommandError::from_code(
                        ErrorCode::ResumeTokenBadFragmentNum,
                        "Resume token 'fragmentNum' must be a non-negative integer.",
                    ))
                }
            }
        }
    }
    if it.next().is_some() {
        return Err(CommandError::from_code(
            ErrorCode::ResumeTokenOversized,
            "invalid oversized resume token",
        ));
    }
    Ok(())
}

/// The collection UUID value: null or a 16-byte UUID binary.
fn decode_uuid(uuid: Bson) -> CmdResult<Option<[u8; 16]>> {
    match uuid {
        Bson::Null => Ok(None),
        Bson::Binary(b) if b.subtype == BinarySubtype::Uuid && b.bytes.len() == 16 => {
            let mut u = [0u8; 16];
            u.copy_from_slice(&b.bytes);
            Ok(Some(u))
        }
        other => Err(CommandError::bad_value(format!(
            "Unexpected type for UUID: {other}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Type bits

#[derive(Default)]
struct TypeBits {
    bytes: Vec<u8>,
    len: usize,
}

impl TypeBits {
    fn bit(&mut self, one: bool) {
        if self.len.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if one {
            if let Some(last) = self.bytes.last_mut() {
                *last |= 1 << (self.len % 8);
            }
        }
        self.len += 1;
    }

    fn numeric(&mut self, t: u8) {
        self.bit(t >> 1 != 0);
        self.bit(t & 1 != 0);
    }

    /// The `_typeBits` payload, `None` when all zero. Short form: one data byte with the high
    /// bit clear; long form: `0x80 | len` then the data bytes (SRV key_string.h `TypeBits`).
    fn serialize(&self) -> Option<Vec<u8>> {
        if self.bytes.iter().all(|b| *b == 0) {
            return None;
        }
        let mut data = self.bytes.clone();
        while data.last() == Some(&0) {
            data.pop();
        }
        if data.len() == 1 && data[0] & 0x80 == 0 {
            return Some(data);
        }
        let mut out = Vec::with_capacity(data.len() + 1);
        out.push(0x80 | data.len() as u8);
        out.extend(data);
        Some(out)
    }
}

struct TypeBitsReader {
    data: Vec<u8>,
    pos: usize,
}

impl TypeBitsReader {
    fn new(raw: &[u8]) -> CmdResult<Self> {
        let data = match raw.first() {
            None => Vec::new(),
            Some(&b) if b & 0x80 == 0 => vec![b],
            Some(&b) => {
                let len = usize::from(b & 0x7F);
                if raw.len() < 1 + len {
                    return Err(CommandError::from_code(
                        ErrorCode::ResumeTokenTypeBitsInvalid,
                        "Bad resume token: _typeBits is truncated",
                    ));
                }
                raw[1..1 + len].to_vec()
            }
        };
        Ok(Self { data, pos: 0 })
    }

    /// Bits past the end read as zero, as the server's reader does for all-zero type bits.
    fn bit(&mut self) -> bool {
        let byte = self.data.get(self.pos / 8).copied().unwrap_or(0);
        let b = byte & (1 << (self.pos % 8)) != 0;
        self.pos += 1;
        b
    }

    fn numeric(&mut self) -> u8 {
        let hi = u8::from(self.bit());
        let lo = u8::from(self.bit());
        (hi << 1) | lo
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

#[derive(Default)]
struct Encoder {
    buf: Vec<u8>,
    type_bits: TypeBits,
}

impl Encoder {
    fn timestamp(&mut self, ts: Timestamp) {
        self.buf.push(K_TIMESTAMP);
        let v = (u64::from(ts.time) << 32) | u64::from(ts.increment);
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Int32 / Int64 (SRV `_appendInteger`), with its type bits.
    fn int(&mut self, v: i64, tb: u8) {
        self.type_bits.numeric(tb);
        if v == i64::MIN {
            self.large_double(v as f64, DCM_EQUAL_TO_DOUBLE);
        } else if v == 0 {
            self.buf.push(K_NUMERIC_ZERO);
        } else {
            self.preshifted_integer(v.unsigned_abs() << 1, v < 0);
        }
    }

    /// SRV `_appendPreshiftedIntegerPortion`.
    fn preshifted_integer(&mut self, value: u64, negative: bool) {
        let bytes_needed = (64 - value.leading_zeros() as usize).div_ceil(8);
        let be = value.to_be_bytes();
        let used = &be[8 - bytes_needed..];
        if negative {
            self.buf
                .push(K_NUMERIC_NEG_1BYTE - (bytes_needed as u8 - 1));
            self.buf.extend(used.iter().map(|b| !b));
        } else {
            self.buf
                .push(K_NUMERIC_POS_1BYTE + (bytes_needed as u8 - 1));
            self.buf.extend_from_slice(used);
        }
    }

    fn append_u64(&mut self, v: u64, invert: bool) {
        let v = if invert { !v } else { v };
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// SRV `_appendDoubleWithoutTypeBits` (V1).
    fn double(&mut self, num: f64) {
        let negative = num < 0.0;
        let magnitude = num.abs();
        if magnitude.is_nan() {
            self.buf.push(K_NUMERIC_NAN);
            return;
        }
        if magnitude < 1.0 {
            if magnitude > 0.0 {
                self.small_double(num);
            } else {
                self.buf.push(K_NUMERIC_ZERO);
            }
            return;
        }
        if magnitude < MIN_LARGE_DOUBLE {
            let integer_part = magnitude as u64;
            if integer_part as f64 == magnitude {
                self.preshifted_integer(integer_part << 1, negative);
                return;
            }
            let fractional_bytes = ((integer_part << 1).leading_zeros() / 8) as usize;
            let ctype = if negative {
                K_NUMERIC_NEG_8BYTE + fractional_bytes as u8
            } else {
                K_NUMERIC_POS_8BYTE - fractional_bytes as u8
            };
            self.buf.push(ctype);
            let scale = 256f64.powi(fractional_bytes as i32);
            let mut encoding = (magnitude * scale) as u64;
            encoding = encoding.wrapping_add((integer_part + 1) << (fractional_bytes * 8));
            encoding |= DCM_EQUAL_TO_DOUBLE;
            self.append_u64(encoding, negative);
        } else {
            self.large_double(num, DCM_EQUAL_TO_DOUBLE);
        }
    }

    /// SRV `_appendSmallDouble` (V1).
    fn small_double(&mut self, value: f64) {
        let negative = value < 0.0;
        let mut magnitude = value.abs();
        self.buf.push(if negative {
            K_NUMERIC_NEG_SMALL
        } else {
            K_NUMERIC_POS_SMALL
        });
        // 2^-255: smaller values only get a single DCM bit.
        let tiniest_2bit = 2f64.powi(-255);
        let encoded = if magnitude >= tiniest_2bit {
            (magnitude.to_bits() << 2) | DCM_EQUAL_TO_DOUBLE
        } else {
            magnitude *= 2f64.powi(256);
            let e = magnitude.to_bits() << 1;
            e.wrapping_add(1u64 << 62)
        };
        self.append_u64(encoded, negative);
    }

    /// SRV `_appendLargeDouble` (V1).
    fn large_double(&mut self, value: f64, dcm: u64) {
        self.buf.push(if value > 0.0 {
            K_NUMERIC_POS_LARGE
        } else {
            K_NUMERIC_NEG_LARGE
        });
        let encoded = if value.is_finite() {
            ((value.to_bits() << 1) & !(1u64 << 63)) | u64::from(dcm != DCM_EQUAL_TO_DOUBLE)
        } else {
            u64::MAX
        };
        self.append_u64(encoded, value < 0.0);
    }

    fn string_like(&mut self, s: &str) {
        for (i, part) in s.split('\0').enumerate() {
            if i > 0 {
                self.buf.extend_from_slice(&[0x00, 0xFF]);
            }
            self.buf.extend_from_slice(part.as_bytes());
        }
        self.buf.push(0);
    }

    fn bin_data(&mut self, subtype: BinarySubtype, bytes: &[u8]) {
        self.buf.push(K_BIN_DATA);
        if bytes.len() < 0xFF {
            self.buf.push(bytes.len() as u8);
        } else {
            self.buf.push(0xFF);
            self.buf
                .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        }
        self.buf.push(u8::from(subtype));
        self.buf.extend_from_slice(bytes);
    }

    /// SRV `_appendBson`: per field the generic ctype, the name, then the value.
    fn object(&mut self, doc: &Document) {
        for (name, value) in doc {
            self.buf.push(generic_ctype(value));
            self.buf.extend_from_slice(name.as_bytes());
            self.buf.push(0);
            self.value(value);
        }
        self.buf.push(0);
    }

    /// SRV `_appendBsonValue`.
    fn value(&mut self, value: &Bson) {
        match value {
            Bson::MinKey => self.buf.push(K_MIN_KEY),
            Bson::MaxKey => self.buf.push(K_MAX_KEY),
            Bson::Null => self.buf.push(K_NULLISH),
            Bson::Undefined => self.buf.push(K_UNDEFINED),
            Bson::Double(d) => {
                self.type_bits.numeric(TB_DOUBLE);
                self.double(*d);
            }
            Bson::Decimal128(d) => {
                // Limitation (module docs): encoded as the nearest double.
                self.type_bits.numeric(TB_DOUBLE);
                let approx = d.to_string().parse::<f64>().unwrap_or(f64::NAN);
                self.double(approx);
            }
            Bson::String(s) => {
                self.type_bits.bit(false);
                self.buf.push(K_STRING_LIKE);
                self.string_like(s);
            }
            Bson::Symbol(s) => {
                self.type_bits.bit(true);
                self.buf.push(K_STRING_LIKE);
                self.string_like(s);
            }
            Bson::Document(d) => {
                self.buf.push(K_OBJECT);
                self.object(d);
            }
            Bson::Array(a) => {
                self.buf.push(K_ARRAY);
                for v in a {
                    self.value(v);
                }
                self.buf.push(0);
            }
            Bson::Binary(b) => self.bin_data(b.subtype, &b.bytes),
            Bson::ObjectId(oid) => {
                self.buf.push(K_OID);
                self.buf.extend_from_slice(&oid.bytes());
            }
            Bson::Boolean(b) => self.buf.push(if *b { K_BOOL_TRUE } else { K_BOOL_FALSE }),
            Bson::DateTime(dt) => {
                self.buf.push(K_DATE);
                let v = (dt.timestamp_millis() as u64) ^ (1u64 << 63);
                self.buf.extend_from_slice(&v.to_be_bytes());
            }
            Bson::RegularExpression(re) => {
                self.buf.push(K_REGEX);
                self.buf.extend_from_slice(re.pattern.as_bytes());
                self.buf.push(0);
                self.buf.extend_from_slice(re.options.as_bytes());
                self.buf.push(0);
            }
            Bson::DbPointer(_) => {
                // Limitation (module docs): the bson crate keeps DBPointer fields private.
                self.buf.push(K_DBREF);
                self.buf.extend_from_slice(&0i32.to_be_bytes());
                self.buf.extend_from_slice(&[0u8; 12]);
            }
            Bson::JavaScriptCode(code) => {
                self.buf.push(K_CODE);
                self.string_like(code);
            }
            Bson::JavaScriptCodeWithScope(cws) => {
                self.buf.push(K_CODE_WITH_SCOPE);
                self.string_like(&cws.code);
                self.object(&cws.scope);
            }
            Bson::Int32(i) => self.int(i64::from(*i), TB_INT),
            Bson::Int64(i) => self.int(*i, TB_LONG),
            Bson::Timestamp(ts) => self.timestamp(*ts),
        }
    }
}

/// SRV `bsonTypeToGenericKeyStringType`.
fn generic_ctype(value: &Bson) -> u8 {
    match value {
        Bson::MinKey => K_MIN_KEY,
        Bson::Null => K_NULLISH,
        Bson::Undefined => K_UNDEFINED,
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_) => K_NUMERIC,
        Bson::String(_) | Bson::Symbol(_) => K_STRING_LIKE,
        Bson::Document(_) => K_OBJECT,
        Bson::Array(_) => K_ARRAY,
        Bson::Binary(_) => K_BIN_DATA,
        Bson::ObjectId(_) => K_OID,
        Bson::Boolean(_) => 110,
        Bson::DateTime(_) => K_DATE,
        Bson::Timestamp(_) => K_TIMESTAMP,
        Bson::RegularExpression(_) => K_REGEX,
        Bson::DbPointer(_) => K_DBREF,
        Bson::JavaScriptCode(_) => K_CODE,
        Bson::JavaScriptCodeWithScope(_) => K_CODE_WITH_SCOPE,
        Bson::MaxKey => K_MAX_KEY,
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    bits: &'a mut TypeBitsReader,
}

/// SRV `BSONDepth::kDefaultMaxAllowableDepth`.
const MAX_DEPTH: u32 = 200;

fn format_error(code: ErrorCode, msg: &str) -> CommandError {
    CommandError::from_code(code, format!("KeyString format error: {msg}"))
}

impl Decoder<'_> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn byte(&mut self) -> CmdResult<u8> {
        let b = self.peek().ok_or_else(|| {
            format_error(
                ErrorCode::KeyStringBufferExhausted,
                "Reached end of the KeyString buffer",
            )
        })?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> CmdResult<&[u8]> {
        if self.buf.len() < self.pos + n {
            return Err(format_error(
                ErrorCode::KeyStringBufferExhausted,
                "Reached end of the KeyString buffer",
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u64(&mut self, invert: bool) -> CmdResult<u64> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        let v = u64::from_be_bytes(a);
        Ok(if invert { !v } else { v })
    }

    fn cstring(&mut self) -> CmdResult<Vec<u8>> {
        let rest = &self.buf[self.pos..];
        let end = rest.iter().position(|b| *b == 0).ok_or_else(|| {
            format_error(
                ErrorCode::KeyStringMissingNullTerminator,
                "Failed to find null terminator in string.",
            )
        })?;
        let s = rest[..end].to_vec();
        self.pos += end + 1;
        Ok(s)
    }

    /// A string whose NULs are encoded as `00 FF`.
    fn string_with_nuls(&mut self) -> CmdResult<String> {
        let mut out = self.cstring()?;
        while self.peek() == Some(0xFF) {
            self.pos += 1;
            out.push(0);
            out.extend(self.cstring()?);
        }
        String::from_utf8(out).map_err(|_| {
            CommandError::from_code(ErrorCode::InvalidBSON, "Invalid UTF-8 in resume token")
        })
    }

    fn object(&mut self, depth: u32) -> CmdResult<Document> {
        let mut doc = Document::new();
        loop {
            let ctype = self.byte()?;
            if ctype == 0 {
                return Ok(doc);
            }
            let name = String::from_utf8(self.cstring()?).map_err(|_| {
                CommandError::from_code(ErrorCode::InvalidBSON, "Invalid UTF-8 in resume token")
            })?;
            let vtype = self.byte()?;
            let v = self.value(vtype, depth + 1)?;
            doc.insert(name, v);
        }
    }

    /// SRV `toBsonValue` (V1, ascending).
    fn value(&mut self, ctype: u8, depth: u32) -> CmdResult<Bson> {
        if depth > MAX_DEPTH {
            return Err(format_error(
                ErrorCode::Overflow,
                "KeyString encoding exceeded maximum allowable BSON nesting depth",
            ));
        }
        Ok(match ctype {
            K_MIN_KEY => Bson::MinKey,
            K_MAX_KEY => Bson::MaxKey,
            K_NULLISH => Bson::Null,
            K_UNDEFINED => Bson::Undefined,
            K_BOOL_TRUE => Bson::Boolean(true),
            K_BOOL_FALSE => Bson::Boolean(false),
            K_DATE => {
                let v = self.u64(false)? ^ (1u64 << 63);
                Bson::DateTime(bson::DateTime::from_millis(v as i64))
            }
            K_TIMESTAMP => {
                let v = self.u64(false)?;
                Bson::Timestamp(Timestamp {
                    time: (v >> 32) as u32,
                    increment: v as u32,
                })
            }
            K_OID => {
                let s = self.take(12)?;
                let mut a = [0u8; 12];
                a.copy_from_slice(s);
                Bson::ObjectId(bson::oid::ObjectId::from_bytes(a))
            }
            K_STRING_LIKE => {
                let s = self.string_with_nuls()?;
                if self.bits.bit() {
                    Bson::Symbol(s)
                } else {
                    Bson::String(s)
                }
            }
            K_CODE => Bson::JavaScriptCode(self.string_with_nuls()?),
            K_CODE_WITH_SCOPE => {
                let code = self.string_with_nuls()?;
                let scope = self.object(depth + 2)?;
                Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope { code, scope })
            }
            K_BIN_DATA => {
                let mut len = usize::from(self.byte()?);
                if len == 0xFF {
                    let s = self.take(4)?;
                    let mut a = [0u8; 4];
                    a.copy_from_slice(s);
                    len = usize::try_from(i32::from_be_bytes(a)).map_err(|_| {
                        format_error(
                            ErrorCode::KeyStringBufferExhausted,
                            "Invalid BinData length",
                        )
                    })?;
                }
                let subtype = BinarySubtype::from(self.byte()?);
                let bytes = self.take(len)?.to_vec();
                Bson::Binary(Binary { subtype, bytes })
            }
            K_REGEX => {
                let pattern = String::from_utf8(self.cstring()?).map_err(|_| {
                    CommandError::from_code(ErrorCode::InvalidBSON, "Invalid UTF-8 in resume token")
                })?;
                let options = String::from_utf8(self.cstring()?).map_err(|_| {
                    CommandError::from_code(ErrorCode::InvalidBSON, "Invalid UTF-8 in resume token")
                })?;
                Bson::RegularExpression(bson::Regex { pattern, options })
            }
            K_OBJECT => Bson::Document(self.object(depth)?),
            K_ARRAY => {
                let mut arr = Vec::new();
                loop {
                    let t = self.byte()?;
                    if t == 0 {
                        break;
                    }
                    arr.push(self.value(t, depth + 1)?);
                }
                Bson::Array(arr)
            }
            K_NUMERIC_NAN..=K_NUMERIC_POS_LARGE => self.number(ctype)?,
            other => {
                return Err(format_error(
                    ErrorCode::KeyStringUnknownType,
                    &format!("Unknown type: {other}"),
                ))
            }
        })
    }

    fn number(&mut self, ctype: u8) -> CmdResult<Bson> {
        let tb = self.bits.numeric();
        if tb == TB_DECIMAL {
            return Err(format_error(
                ErrorCode::KeyStringUnsupportedDecimal,
                "Decimal128 values in resume tokens are not supported by mongosim",
            ));
        }
        let as_type = |v: f64, exact_int: Option<i64>| -> Bson {
            match (tb, exact_int) {
                (TB_INT, Some(i)) if i32::try_from(i).is_ok() => Bson::Int32(i as i32),
                (TB_LONG, Some(i)) => Bson::Int64(i),
                _ => Bson::Double(v),
            }
        };
        match ctype {
            K_NUMERIC_NAN => Ok(Bson::Double(f64::NAN)),
            K_NUMERIC_ZERO => Ok(as_type(0.0, Some(0))),
            K_NUMERIC_POS_SMALL | K_NUMERIC_NEG_SMALL => {
                let negative = ctype == K_NUMERIC_NEG_SMALL;
                let enc = self.u64(negative)?;
                let magnitude = match enc >> 62 {
                    0b11 => f64::from_bits(enc >> 2),
                    0b01 | 0b10 => {
                        let e = enc.wrapping_sub(1u64 << 62);
                        f64::from_bits(e >> 1) * 2f64.powi(-256)
                    }
                    _ => {
                        return Err(format_error(
                            ErrorCode::KeyStringUnsupportedDecimal,
                            "Unsupported tiny decimal encoding",
                        ))
                    }
                };
                Ok(Bson::Double(if negative { -magnitude } else { magnitude }))
            }
            K_NUMERIC_POS_LARGE | K_NUMERIC_NEG_LARGE => {
                let negative = ctype == K_NUMERIC_NEG_LARGE;
                let enc = self.u64(negative)?;
                let magnitude = if enc == u64::MAX {
                    f64::INFINITY
                } else if enc >> 63 == 1 {
                    return Err(format_error(
                        ErrorCode::KeyStringUnsupportedDecimal,
                        "Unsupported huge decimal encoding",
                    ));
                } else {
                    // The encoder dropped the sign and cleared the exponent's top bit, which
                    // is always set for magnitudes >= 2^63.
                    f64::from_bits((enc >> 1) | (1u64 << 62))
                };
                let v = if negative { -magnitude } else { magnitude };
                if v == i64::MIN as f64 && tb == TB_LONG {
                    return Ok(Bson::Int64(i64::MIN));
                }
                Ok(Bson::Double(v))
            }
            _ => {
                let negative = ctype < K_NUMERIC_ZERO;
                let n = if negative {
                    usize::from(K_NUMERIC_NEG_1BYTE - ctype) + 1
                } else {
                    usize::from(ctype - K_NUMERIC_POS_1BYTE) + 1
                };
                if n > 8 {
                    return Err(format_error(
                        ErrorCode::KeyStringUnknownType,
                        &format!("Unknown type: {ctype}"),
                    ));
                }
                let mut v: u64 = 0;
                for b in self.take(n)?.to_vec() {
                    v = (v << 8) | u64::from(if negative { !b } else { b });
                }
                if v & 1 == 0 {
                    let magnitude = v >> 1;
                    let signed = if negative {
                        -(magnitude as i128)
                    } else {
                        magnitude as i128
                    };
                    let exact = i64::try_from(signed).ok();
                    return Ok(as_type(signed as f64, exact));
                }
                // A double with a fractional part: 8 - n more fraction bytes follow.
                let fb = 8 - n;
                let mut frac: u64 = 0;
                for b in self.take(fb)?.to_vec() {
                    frac = (frac << 8) | u64::from(if negative { !b } else { b });
                }
                let integer_part = (v - 1) / 2;
                let frac = frac & !3u64;
                let magnitude = integer_part as f64 + frac as f64 / 256f64.powi(fb as i32);
                Ok(Bson::Double(if negative { -magnitude } else { magnitude }))
            }
        }
    }
}

#[cfg(test)]
mod tests;
