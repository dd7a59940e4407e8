//! An owner's invitation file, as uploaded: every non-blank row after an optional header is an
//! invitee or an error reported by its row number, and a recipient is known by a pseudonym.
#![no_main]

use agora_hearing::domain::invitees::{Pseudonymizer, parse_csv};
use libfuzzer_sys::fuzz_target;

/// References that keep nothing of what they stand for, as the vault's keyed hash would.
struct Opaque;

impl Pseudonymizer for Opaque {
    fn person_reference(&self, cpr: &str) -> String {
        format!("p{}", cpr.len())
    }
    fn company_reference(&self, cvr: &str) -> String {
        format!("c{}", cvr.len())
    }
    fn email_reference(&self, email: &str) -> String {
        format!("e{}", email.len())
    }
}

fuzz_target!(|text: &str| {
    let (invitees, errors) = parse_csv(text, &Opaque);
    let rows: Vec<usize> = text
        .trim_start_matches('\u{feff}')
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, _)| i + 1)
        .collect();
    let read = invitees.len() + errors.len();
    assert!(read <= rows.len() && rows.len() - read <= 1, "rows vanished: {} of {}", rows.len() - read, rows.len());
    for error in &errors {
        assert!(rows.contains(&error.row), "an error for row {}, which is blank or absent", error.row);
    }
    for invitee in &invitees {
        // A recipient is known by the vault's pseudonym only, never by the number or address.
        let (kind, pseudonym) = invitee.reference.split_once(':').expect("a reference is kind:id");
        match kind {
            "person" => assert!(pseudonym.starts_with('p'), "{}", invitee.reference),
            "company" => assert!(pseudonym.starts_with('c'), "{}", invitee.reference),
            "email" => assert!(pseudonym.starts_with('e'), "{}", invitee.reference),
            _ => {}
        }
    }
});
