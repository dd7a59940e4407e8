//! Guards that keep CPR and CVR numbers out of tokens.
//!
//! `sub` is a UUID and so can never be a CPR number; the free-text claims
//! `company` and `name` are checked here, both when a token is issued and
//! when it is verified. The checks are deliberately narrow (whole-value for
//! `company`, so opaque ids such as UUIDs are never mistaken for a number) to
//! avoid refusing legitimate values.

use crate::AuthError;

/// Checks the free-text claims of a principal.
pub(crate) fn check_claims(company: Option<&str>, name: Option<&str>) -> Result<(), AuthError> {
    if let Some(company) = company {
        if company.trim().is_empty() {
            return Err(AuthError::InvalidClaims("company reference is empty".into()));
        }
        if looks_like_cvr(company) {
            return Err(AuthError::InvalidClaims(
                "company looks like a CVR number; it must be an opaque pseudonymous reference".into(),
            ));
        }
        if looks_like_cpr(company) {
            return Err(AuthError::InvalidClaims(
                "company looks like a CPR number; it must be an opaque pseudonymous reference".into(),
            ));
        }
    }
    if let Some(name) = name
        && contains_cpr_like(name)
    {
        return Err(AuthError::InvalidClaims("name contains what looks like a CPR number".into()));
    }
    Ok(())
}

/// The whole value is a CVR number: 8 digits, optionally prefixed `DK` or
/// `CVR` (any case), with optional spaces, `:` or `-`.
pub(crate) fn looks_like_cvr(value: &str) -> bool {
    let compact: String =
        value.chars().filter(|c| !c.is_whitespace() && *c != ':' && *c != '-').collect::<String>().to_ascii_uppercase();
    let digits = compact.strip_prefix("DK").or_else(|| compact.strip_prefix("CVR")).unwrap_or(&compact);
    digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The whole value is a CPR number: `DDMMYY-SSSS` or `DDMMYYSSSS`.
pub(crate) fn looks_like_cpr(value: &str) -> bool {
    let digits: Vec<char> = value.trim().chars().filter(|c| *c != '-' && *c != ' ').collect();
    digits.len() == 10 && digits.iter().all(char::is_ascii_digit) && plausible_date(&digits[..6])
}

/// The text contains a CPR-like number: ten digits (or six, a `-` or space,
/// and four) not part of a longer run of digits, starting with a plausible
/// day and month.
pub(crate) fn contains_cpr_like(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let n = chars.len();
    let mut i = 0;
    while i < n {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && chars[i].is_ascii_digit() {
            i += 1;
        }
        let run = &chars[start..i];
        if run.len() == 10 && plausible_date(&run[..6]) {
            return true;
        }
        if run.len() == 6 && plausible_date(run) && i < n && (chars[i] == '-' || chars[i] == ' ') {
            let tail = i + 1;
            let mut j = tail;
            while j < n && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j - tail == 4 {
                return true;
            }
        }
    }
    false
}

fn plausible_date(ddmmyy: &[char]) -> bool {
    let two = |a: &char, b: &char| a.to_digit(10).zip(b.to_digit(10)).map(|(a, b)| a * 10 + b);
    let [d1, d2, m1, m2, ..] = ddmmyy else {
        return false;
    };
    match (two(d1, d2), two(m1, m2)) {
        (Some(day), Some(month)) => (1..=31).contains(&day) && (1..=12).contains(&month),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvr_detection() {
        assert!(looks_like_cvr("12345678"));
        assert!(looks_like_cvr("DK12345678"));
        assert!(looks_like_cvr("cvr: 1234 5678"));
        assert!(!looks_like_cvr("c-12345678"));
        assert!(!looks_like_cvr("123456789"));
        assert!(!looks_like_cvr("12345678-9abc-4def-8123-456789abcdef"));
    }

    #[test]
    fn cpr_detection() {
        assert!(looks_like_cpr("010190-1234"));
        assert!(looks_like_cpr("0101901234"));
        assert!(!looks_like_cpr("3213901234"));
        assert!(contains_cpr_like("Jens 010190-1234"));
        assert!(contains_cpr_like("0101901234"));
        assert!(contains_cpr_like("x 311299 1234"));
        assert!(!contains_cpr_like("Jens Hansen"));
        assert!(!contains_cpr_like("Tlf 12345678"));
        assert!(!contains_cpr_like("01019012345"));
        assert!(!contains_cpr_like("010190-12345"));
    }

    #[test]
    fn claim_check() {
        assert!(check_claims(Some("org-4f1c"), Some("Jens Hansen")).is_ok());
        assert!(check_claims(None, None).is_ok());
        assert!(check_claims(Some("12345678"), None).is_err());
        assert!(check_claims(Some("010190-1234"), None).is_err());
        assert!(check_claims(Some("  "), None).is_err());
        assert!(check_claims(None, Some("Jens 0101901234")).is_err());
    }
}
