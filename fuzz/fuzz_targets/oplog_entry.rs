//! Feeds arbitrary bytes, as an oplog entry, to the oplog decoder (filtered by namespace
//! or not, updates as deltas or not: the first byte chooses). Any panic is a bug: a
//! malformed entry is an error or a skipped entry.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, entry)) = data.split_first() else {
        return;
    };
    mongotail::source::fuzz_oplog_entry(entry, mode & 1 != 0, mode & 2 != 0);
});
