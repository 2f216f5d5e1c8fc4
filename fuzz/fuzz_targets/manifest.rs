//! Arbitrary bytes into `Manifest::parse`: no panic; an accepted manifest keeps
//! the model's promises and `to_json()` re-parses to the same manifest.
#![no_main]

#[path = "../properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    properties::check_manifest_bytes(data);
});
