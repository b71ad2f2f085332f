//! Feeds arbitrary bytes, as a change event, to the change-event decoder. Any panic is a
//! bug: a malformed event is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mongotail::source::fuzz_change_event(data);
});
