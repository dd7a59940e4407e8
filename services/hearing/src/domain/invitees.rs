//! Reading invitees from what owners type or upload: e-mail addresses, CPR and CVR numbers,
//! invitation groups, and CSV files with a report of every row that could not be used.

use super::{Invitee, InviteeKind};

/// Turns CPR and CVR numbers into stable pseudonymous references (keyed hashes held by the
/// service), so that no event or table ever holds the numbers themselves.
pub trait Pseudonymizer {
    fn person_reference(&self, cpr: &str) -> String;
    fn company_reference(&self, cvr: &str) -> String;
    fn email_reference(&self, email: &str) -> String;
}

/// A row that could not be read, by its number in the file (1-based, header included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub row: usize,
    pub message: String,
}

/// Reads one invitee from an identifier: an e-mail address, a CPR number (ddmmyy-xxxx or
/// 10 digits), a CVR number (8 digits) or `group:<id>`.
pub fn parse_invitee(identifier: &str, label: &str, pseudonymizer: &dyn Pseudonymizer) -> Result<Invitee, String> {
    let identifier = identifier.trim();
    let label = label.trim();
    if let Some(group) = identifier.strip_prefix("group:") {
        if group.trim().is_empty() {
            return Err("gruppen mangler et id".into());
        }
        return Ok(Invitee {
            reference: format!("group:{}", group.trim()),
            kind: InviteeKind::Group,
            label: if label.is_empty() { group.trim().to_string() } else { label.to_string() },
            address: None,
        });
    }
    if let Some(user) = identifier.strip_prefix("user:") {
        let id = uuid::Uuid::parse_str(user.trim()).map_err(|_| format!("'{user}' er ikke et bruger-id"))?;
        return Ok(Invitee {
            reference: format!("user:{id}"),
            kind: InviteeKind::User,
            label: if label.is_empty() { id.to_string() } else { label.to_string() },
            address: None,
        });
    }
    if identifier.contains('@') {
        if !super::looks_like_email(identifier) {
            return Err(format!("'{identifier}' er ikke en gyldig e-mailadresse"));
        }
        let email = identifier.to_lowercase();
        return Ok(Invitee {
            // A pseudonym, like the CPR number's: the same one the identity service gives the
            // person's token, so that the invitation finds them when they log in.
            reference: format!("email:{}", pseudonymizer.email_reference(&email)),
            kind: InviteeKind::Email,
            label: if label.is_empty() { email.clone() } else { label.to_string() },
            address: Some(email),
        });
    }
    let digits: String = identifier.chars().filter(|c| *c != '-' && *c != ' ').collect();
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        return match digits.len() {
            10 if plausible_cpr_date(&digits) => Ok(Invitee {
                reference: format!("person:{}", pseudonymizer.person_reference(&digits)),
                kind: InviteeKind::Person,
                // Never echo the number: the label is what the owner gave, or masked.
                label: if label.is_empty() { format!("{}-xxxx", &digits[..6]) } else { label.to_string() },
                // Digital Post reaches the person by their number; the app seals it for them.
                address: Some(digits.clone()),
            }),
            10 => Err("CPR-nummeret har ikke en gyldig dato".into()),
            8 => Ok(Invitee {
                reference: format!("company:{}", pseudonymizer.company_reference(&digits)),
                kind: InviteeKind::Company,
                label: if label.is_empty() { "Virksomhed".to_string() } else { label.to_string() },
                // Digital Post reaches the company by its number; the app seals it.
                address: Some(digits.clone()),
            }),
            n => Err(format!("{n} cifre er hverken et CPR-nummer (10) eller et CVR-nummer (8)")),
        };
    }
    if identifier.is_empty() {
        return Err("tom række".into());
    }
    Err("ukendt modtager: angiv e-mail, CPR, CVR eller group:<id>".into())
}

fn plausible_cpr_date(digits: &str) -> bool {
    let day: u32 = digits[0..2].parse().unwrap_or(0);
    let month: u32 = digits[2..4].parse().unwrap_or(0);
    (1..=31).contains(&day) && (1..=12).contains(&month)
}

/// Reads a CSV of invitees: `identifier[;name]` or `identifier[,name]` per row, an optional
/// header row. Returns what could be read and an error per row that could not.
pub fn parse_csv(text: &str, pseudonymizer: &dyn Pseudonymizer) -> (Vec<Invitee>, Vec<RowError>) {
    let mut invitees = Vec::new();
    let mut errors = Vec::new();
    let text = text.trim_start_matches('\u{feff}');
    for (index, line) in text.lines().enumerate() {
        let row = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let separator = if line.contains(';') { ';' } else { ',' };
        let mut columns = line.splitn(2, separator);
        let identifier = columns.next().unwrap_or_default().trim().trim_matches('"');
        let label = columns.next().unwrap_or_default().trim().trim_matches('"');
        if row == 1
            && matches!(
                identifier.to_lowercase().as_str(),
                "identifier" | "id" | "email" | "e-mail" | "modtager" | "identifikation"
            )
        {
            continue;
        }
        match parse_invitee(identifier, label, pseudonymizer) {
            Ok(invitee) if invitees.iter().any(|i: &Invitee| i.reference == invitee.reference) => {
                errors.push(RowError { row, message: "modtageren står allerede i filen".into() })
            }
            Ok(invitee) => invitees.push(invitee),
            Err(message) => errors.push(RowError { row, message }),
        }
    }
    (invitees, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl Pseudonymizer for Fake {
        fn person_reference(&self, cpr: &str) -> String {
            format!("ref{}", cpr.len())
        }
        fn company_reference(&self, cvr: &str) -> String {
            format!("cref{}", cvr.len())
        }
        fn email_reference(&self, email: &str) -> String {
            format!("eref{}", email.len())
        }
    }

    #[test]
    fn a_csv_with_good_and_bad_rows_reports_each_bad_row() {
        let csv = "identifier;navn\nanna@example.dk;Anna\n0101801234;Bo\n12345678;Firma A/S\nnot-an-email@\n123\nanna@example.dk\n3213801234\n";
        let (invitees, errors) = parse_csv(csv, &Fake);
        assert_eq!(invitees.len(), 3);
        assert_eq!(invitees[0].reference, "email:eref15");
        assert_eq!(invitees[0].address.as_deref(), Some("anna@example.dk"));
        assert_eq!(invitees[1].reference, "person:ref10");
        assert_eq!(invitees[2].reference, "company:cref8");
        let rows: Vec<usize> = errors.iter().map(|e| e.row).collect();
        assert_eq!(rows, vec![5, 6, 7, 8], "{errors:?}");
        assert!(errors[2].message.contains("allerede"));
    }

    #[test]
    fn a_cpr_number_never_reaches_the_invitee() {
        let invitee = parse_invitee("010180-1234", "", &Fake).expect("valid");
        assert_eq!(invitee.kind, InviteeKind::Person);
        assert!(!invitee.reference.contains("1234") && !invitee.label.contains("1234"), "{invitee:?}");
    }

    #[test]
    fn groups_and_emails() {
        assert_eq!(parse_invitee("group:naboer", "", &Fake).expect("group").kind, InviteeKind::Group);
        let email = parse_invitee("Anna@Example.DK", "", &Fake).expect("email");
        assert_eq!((email.reference.as_str(), email.address.as_deref()), ("email:eref15", Some("anna@example.dk")));
        assert!(parse_invitee("group:", "", &Fake).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A CPR number with a plausible date, as an owner might type it.
        fn cpr() -> impl Strategy<Value = String> {
            (1u32..=28, 1u32..=12, 0u32..100, 0u32..10_000, any::<bool>()).prop_map(|(d, m, y, serial, dash)| {
                format!("{d:02}{m:02}{y:02}{}{serial:04}", if dash { "-" } else { "" })
            })
        }

        /// What a row of an uploaded file may hold: recipients of every kind, and rubbish.
        fn identifier() -> impl Strategy<Value = String> {
            prop_oneof![
                cpr(),
                "[0-9]{8}",
                "[a-z]{1,8}@[a-z]{1,8}\\.dk",
                "group:[a-z]{0,6}",
                "[0-9 -]{0,14}",
                "\\PC{0,20}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            /// Whatever the file holds, no row is lost: each non-blank row after the header is
            /// an invitee or a reported error, by its own row number.
            #[test]
            fn every_row_is_an_invitee_or_a_reported_error(
                rows in proptest::collection::vec((identifier(), "\\PC{0,12}", prop_oneof![Just(';'), Just(',')]), 0..30)
            ) {
                let text: String = rows
                    .iter()
                    .map(|(id, label, sep)| format!("{id}{sep}{}\n", label.replace([';', ',', '\n', '\r'], " ")))
                    .collect();
                let (invitees, errors) = parse_csv(&text, &Fake);
                let counted: Vec<usize> = text
                    .lines()
                    .enumerate()
                    .filter(|(_, line)| !line.trim().is_empty())
                    .map(|(i, _)| i + 1)
                    .collect();
                prop_assert!(invitees.len() + errors.len() <= counted.len());
                // Only a header on the first row may be skipped without a word.
                let skipped = counted.len() - invitees.len() - errors.len();
                prop_assert!(skipped <= 1, "{skipped} rows vanished from {text:?}");
                for error in &errors {
                    prop_assert!(counted.contains(&error.row), "error for row {} that is blank or absent", error.row);
                }
            }

            /// A CPR number is never echoed: not in a reference, a label made for it, or an error.
            #[test]
            fn a_cpr_number_is_never_echoed(number in cpr(), dup in any::<bool>()) {
                let text = if dup { format!("{number}\n{number}\n") } else { format!("{number}\n") };
                let (invitees, errors) = parse_csv(&text, &Fake);
                let digits: String = number.chars().filter(char::is_ascii_digit).collect();
                let serial = &digits[6..];
                for invitee in &invitees {
                    // The label made for it keeps the date and masks the rest ("010180-xxxx").
                    prop_assert!(!invitee.reference.contains(&digits), "{invitee:?}");
                    prop_assert!(!invitee.label.contains(&digits) && !invitee.label.ends_with(serial), "{invitee:?}");
                }
                for error in &errors {
                    prop_assert!(!error.message.contains(&digits) && !error.message.contains(&number), "{error:?}");
                }
                prop_assert_eq!(invitees.len(), 1);
            }

            /// Any text at all is read without a panic.
            #[test]
            fn any_text_is_read(text in "\\PC{0,400}") {
                let _ = parse_csv(&text, &Fake);
            }
        }
    }
}
