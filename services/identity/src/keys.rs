//! The token signing keys: which one signs, which are published, and how a rotation moves from
//! one to the next without a moment in which a valid token fails to verify.
//!
//! A new key is published at once but signs only after `publish_delay`, so that every service
//! has fetched the new JWKS before the first token signed with it arrives. The key it replaces
//! stays published until the last token it signed has expired. Pure; the store keeps the rows.

use chrono::{DateTime, Duration, Utc};

/// One signing key as stored (the seed is sealed under the master key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub kid: String,
    pub sealed_seed: String,
    pub created_at: DateTime<Utc>,
    /// From when it signs new tokens.
    pub signs_from: DateTime<Utc>,
    /// From when it is no longer published (its tokens have expired by then).
    pub retired_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    pub fn published_at(&self, now: DateTime<Utc>) -> bool {
        self.retired_at.is_none_or(|retired| now < retired)
    }
}

/// The key that signs at `now`: the newest published key whose time has come.
pub fn signing_key(keys: &[KeyRecord], now: DateTime<Utc>) -> Option<&KeyRecord> {
    keys.iter().filter(|k| k.published_at(now) && k.signs_from <= now).max_by_key(|k| (k.signs_from, k.created_at))
}

/// The keys verifiers must trust at `now`.
pub fn published_keys(keys: &[KeyRecord], now: DateTime<Utc>) -> Vec<&KeyRecord> {
    keys.iter().filter(|k| k.published_at(now)).collect()
}

/// What a rotation changes: the new key's times, and the retirement of those it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub signs_from: DateTime<Utc>,
    /// Keys to retire, with when.
    pub retire: Vec<(String, DateTime<Utc>)>,
}

/// Plans a rotation at `now`. Every key published now is retired once the new key has signed
/// for `token_ttl` (plus clock leeway): by then no token an old key signed is still valid.
pub fn plan_rotation(
    keys: &[KeyRecord],
    now: DateTime<Utc>,
    publish_delay: Duration,
    token_ttl: Duration,
    leeway: Duration,
) -> Rotation {
    let signs_from = now + publish_delay;
    let retire_at = signs_from + token_ttl + leeway;
    let retire = keys
        .iter()
        .filter(|k| k.published_at(now))
        .map(|k| (k.kid.clone(), k.retired_at.map_or(retire_at, |r| r.min(retire_at))))
        .collect();
    Rotation { signs_from, retire }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minutes * 60, 0).expect("time")
    }

    fn key(kid: &str, signs_from: i64, retired_at: Option<i64>) -> KeyRecord {
        KeyRecord {
            kid: kid.into(),
            sealed_seed: String::new(),
            created_at: t(signs_from),
            signs_from: t(signs_from),
            retired_at: retired_at.map(t),
        }
    }

    #[test]
    fn a_rotation_never_leaves_a_valid_token_without_its_key() {
        let ttl = Duration::minutes(15);
        let leeway = Duration::minutes(1);
        let mut keys = vec![key("a", 0, None)];
        let rotation = plan_rotation(&keys, t(100), Duration::minutes(10), ttl, leeway);
        assert_eq!(rotation.signs_from, t(110));
        assert_eq!(rotation.retire, vec![("a".to_string(), t(126))]);
        keys[0].retired_at = Some(t(126));
        keys.push(KeyRecord { created_at: t(100), ..key("b", 110, None) });

        // Before the new key's time, the old one still signs, and both are published.
        assert_eq!(signing_key(&keys, t(105)).map(|k| k.kid.as_str()), Some("a"));
        assert_eq!(published_keys(&keys, t(105)).len(), 2);
        // Then the new one signs; the old stays published while its last tokens live.
        assert_eq!(signing_key(&keys, t(110)).map(|k| k.kid.as_str()), Some("b"));
        // A token the old key signed at t(109) expires at t(124), within the leeway of t(126).
        assert!(published_keys(&keys, t(125)).iter().any(|k| k.kid == "a"));
        assert_eq!(published_keys(&keys, t(126)).iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), vec!["b"]);
    }

    #[test]
    fn two_rotations_in_a_row_retire_the_oldest_no_later_than_planned() {
        let keys = vec![key("a", 0, Some(50)), key("b", 20, None)];
        let rotation = plan_rotation(&keys, t(30), Duration::zero(), Duration::minutes(60), Duration::zero());
        assert_eq!(rotation.retire, vec![("a".to_string(), t(50)), ("b".to_string(), t(90))]);
    }

    #[test]
    fn no_key_signs_before_its_time() {
        let keys = vec![key("a", 10, None)];
        assert!(signing_key(&keys, t(5)).is_none());
    }
}
