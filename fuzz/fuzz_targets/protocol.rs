//! Arbitrary bytes as a worker's line (`decode_worker_line`, `request_id`,
//! `dumps` of what was decoded), and as a stream read with `read_line` under
//! a small limit through a small buffer: no line longer than the limit, and
//! the lines are the input split on '\n' up to the first too long one.
#![no_main]

use std::sync::OnceLock;

#[path = "../properties.rs"]
mod properties;

static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    properties::check_worker_line(data);
    // The first two bytes choose the limit (0..=63) and the buffer size (1..=16).
    if let [max, cap, rest @ ..] = data {
        let rt = RT.get_or_init(properties::runtime);
        properties::check_read_line(rt, rest, usize::from(*max % 64), usize::from(*cap % 16) + 1);
    }
});
