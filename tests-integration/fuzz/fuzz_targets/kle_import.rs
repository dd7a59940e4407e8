//! The KLE tree as an administrator imports it (OS2agora's JSON): read whole or refused with a
//! message, never half; every main group, group and topic becomes one entry.
#![no_main]

use agora_hearing::domain::reference::parse_kle_hierarchy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|json: &str| {
    match parse_kle_hierarchy(json) {
        Ok(entries) => {
            for entry in &entries {
                assert_eq!(entry.title, entry.title.trim(), "titles are kept trimmed");
                assert_eq!(entry.retired, entry.title.ends_with("[udgår]"));
            }
        }
        Err(message) => assert!(message.starts_with("KLE-filen kan ikke læses"), "{message}"),
    }
});
