//! Feeds arbitrary bytes to mongosim's wire layer: message framing, OP_MSG and OP_QUERY
//! parsing, and the BSON validator that runs before any document is decoded. Any panic is a
//! bug (a real server answers malformed input with an error reply or closes the connection).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mongosim::fuzz_wire(data);
});
