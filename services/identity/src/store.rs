//! The identity service's own tables: the login index, pending logins, sessions (refresh
//! tokens), signing keys and the person keys of the vault. Users themselves are event-sourced.

use agora_eventstore::{Store, StoreError, on_backend};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use agora_vault::KeyOwner;

use crate::keys::KeyRecord;

pub const SCHEMA: &[&str] = &[
    // Which user a login reference (a pseudonym of the person or of the provider's subject) is.
    "CREATE TABLE IF NOT EXISTS identity_logins (
        login_ref TEXT PRIMARY KEY,
        user_id TEXT NOT NULL)",
    // Logins begun and not yet completed: single-use, short-lived.
    "CREATE TABLE IF NOT EXISTS identity_login_states (
        state TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        nonce TEXT NOT NULL,
        pkce_verifier TEXT NOT NULL,
        expires_at BIGINT NOT NULL)",
    // Refresh tokens by their SHA-256; a family is one session, rotated at every refresh.
    "CREATE TABLE IF NOT EXISTS identity_refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        family_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        state TEXT NOT NULL,
        expires_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS identity_refresh_tokens_family ON identity_refresh_tokens (family_id)",
    "CREATE INDEX IF NOT EXISTS identity_refresh_tokens_user ON identity_refresh_tokens (user_id)",
    "CREATE TABLE IF NOT EXISTS identity_signing_keys (
        kid TEXT PRIMARY KEY,
        sealed_seed TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        signs_from BIGINT NOT NULL,
        retired_at BIGINT)",
    // The vault: a person's data keys (their own record's, and one per hearing they took part
    // in) wrapped under the master key; NULL once destroyed. A destroyed row stays, so that no
    // key is made again for what was erased.
    "CREATE TABLE IF NOT EXISTS identity_person_keys (
        key_id TEXT PRIMARY KEY,
        person_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        wrapped_key TEXT,
        created_at BIGINT NOT NULL,
        erased_at BIGINT)",
    "CREATE INDEX IF NOT EXISTS identity_person_keys_person ON identity_person_keys (person_id)",
    "CREATE INDEX IF NOT EXISTS identity_person_keys_scope ON identity_person_keys (scope)",
    // Users for the administrators' list, kept with every user event.
    "CREATE TABLE IF NOT EXISTS identity_users (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS identity_companies (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL)",
];

pub async fn migrate(store: &Store) -> Result<(), StoreError> {
    store.execute_ddl(SCHEMA).await
}

fn time(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

/// The user a login reference belongs to, made `candidate` if it had none. Two first logins
/// at once agree on one user.
pub async fn user_for_login(store: &Store, login_ref: &str, candidate: Uuid) -> Result<Uuid, StoreError> {
    on_backend!(store.backend(), pool => {
        sqlx::query("INSERT INTO identity_logins (login_ref, user_id) VALUES ($1, $2) ON CONFLICT (login_ref) DO NOTHING")
            .bind(login_ref)
            .bind(candidate.to_string())
            .execute(pool)
            .await?;
        let (user_id,): (String,) = sqlx::query_as("SELECT user_id FROM identity_logins WHERE login_ref = $1")
            .bind(login_ref)
            .fetch_one(pool)
            .await?;
        Uuid::parse_str(&user_id).map_err(|e| StoreError::CorruptField { position: 0, field: "identity_logins.user_id", reason: e.to_string() })
    })
}

/// Forgets every login reference of a user (erasure: a later login makes a new account).
pub async fn forget_logins(store: &Store, user_id: Uuid) -> Result<(), StoreError> {
    on_backend!(store.backend(), pool => {
        sqlx::query("DELETE FROM identity_logins WHERE user_id = $1").bind(user_id.to_string()).execute(pool).await?;
    });
    Ok(())
}

/// A login begun: what completing it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    pub state: String,
    pub provider: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub expires_at: i64,
}

pub async fn save_pending_login(store: &Store, login: &PendingLogin, now: DateTime<Utc>) -> Result<(), StoreError> {
    on_backend!(store.backend(), pool => {
        // Abandoned logins are cleared as new ones begin.
        sqlx::query("DELETE FROM identity_login_states WHERE expires_at < $1").bind(now.timestamp()).execute(pool).await?;
        sqlx::query("INSERT INTO identity_login_states (state, provider, nonce, pkce_verifier, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&login.state)
            .bind(&login.provider)
            .bind(&login.nonce)
            .bind(&login.pkce_verifier)
            .bind(login.expires_at)
            .execute(pool)
            .await?;
    });
    Ok(())
}

/// Takes a pending login: it is gone afterwards, so a replayed state finds nothing.
pub async fn take_pending_login(store: &Store, state: &str) -> Result<Option<PendingLogin>, StoreError> {
    on_backend!(store.backend(), pool => {
        let row: Option<(String, String, String, String, i64)> = sqlx::query_as(
            "DELETE FROM identity_login_states WHERE state = $1 RETURNING state, provider, nonce, pkce_verifier, expires_at",
        )
        .bind(state)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|(state, provider, nonce, pkce_verifier, expires_at)| PendingLogin { state, provider, nonce, pkce_verifier, expires_at }))
    })
}

/// What happened to a refresh token presented for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// It was good and is now used: a new one follows in the same family.
    Rotated { family_id: String, user_id: String },
    /// It had been used before: someone holds a copy, and the whole session is revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

pub async fn save_refresh_token(
    store: &Store,
    token_hash: &str,
    family_id: &str,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    on_backend!(store.backend(), pool => {
        // Not into a session revoked meanwhile (a reuse found, a logout).
        let saved = sqlx::query(
            "INSERT INTO identity_refresh_tokens (token_hash, family_id, user_id, state, expires_at) \
             SELECT $1, $2, $3, 'active', $4 WHERE NOT EXISTS \
             (SELECT 1 FROM identity_refresh_tokens WHERE family_id = $2 AND state = 'revoked')",
        )
        .bind(token_hash)
        .bind(family_id)
        .bind(user_id.to_string())
        .bind(expires_at.timestamp())
        .execute(pool)
        .await?;
        Ok(saved.rows_affected() == 1)
    })
}

pub async fn use_refresh_token(
    store: &Store,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<RefreshOutcome, StoreError> {
    on_backend!(store.backend(), pool => {
        let used: Option<(String, String)> = sqlx::query_as(
            "UPDATE identity_refresh_tokens SET state = 'used' \
             WHERE token_hash = $1 AND state = 'active' AND expires_at > $2 RETURNING family_id, user_id",
        )
        .bind(token_hash)
        .bind(now.timestamp())
        .fetch_optional(pool)
        .await?;
        if let Some((family_id, user_id)) = used {
            return Ok(RefreshOutcome::Rotated { family_id, user_id });
        }
        let found: Option<(String, String)> =
            sqlx::query_as("SELECT family_id, state FROM identity_refresh_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(pool)
                .await?;
        match found {
            Some((family_id, state)) if state == "used" => {
                sqlx::query("UPDATE identity_refresh_tokens SET state = 'revoked' WHERE family_id = $1")
                    .bind(&family_id)
                    .execute(pool)
                    .await?;
                Ok(RefreshOutcome::Reused)
            }
            _ => Ok(RefreshOutcome::Invalid),
        }
    })
}

/// Revokes the session a refresh token belongs to; whether there was one.
pub async fn revoke_family_of(store: &Store, token_hash: &str) -> Result<bool, StoreError> {
    on_backend!(store.backend(), pool => {
        let done = sqlx::query(
            "UPDATE identity_refresh_tokens SET state = 'revoked' WHERE family_id = \
             (SELECT family_id FROM identity_refresh_tokens WHERE token_hash = $1)",
        )
        .bind(token_hash)
        .execute(pool)
        .await?;
        Ok(done.rows_affected() > 0)
    })
}

/// Revokes every session of a user.
pub async fn revoke_user_sessions(store: &Store, user_id: Uuid) -> Result<(), StoreError> {
    on_backend!(store.backend(), pool => {
        sqlx::query("UPDATE identity_refresh_tokens SET state = 'revoked' WHERE user_id = $1")
            .bind(user_id.to_string())
            .execute(pool)
            .await?;
    });
    Ok(())
}

pub async fn signing_keys(store: &Store) -> Result<Vec<KeyRecord>, StoreError> {
    on_backend!(store.backend(), pool => {
        let rows: Vec<(String, String, i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT kid, sealed_seed, created_at, signs_from, retired_at FROM identity_signing_keys ORDER BY signs_from, kid",
        )
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kid, sealed_seed, created_at, signs_from, retired_at)| KeyRecord {
                kid,
                sealed_seed,
                created_at: time(created_at),
                signs_from: time(signs_from),
                retired_at: retired_at.map(time),
            })
            .collect())
    })
}

/// Adds a key and retires the ones it replaces, in one transaction. `only_if_none`: the first
/// key of a fresh store, which replicas starting together must not make twice.
pub async fn add_signing_key(
    store: &Store,
    key: &KeyRecord,
    retire: &[(String, DateTime<Utc>)],
    only_if_none: bool,
) -> Result<bool, StoreError> {
    on_backend!(store.backend(), pool => {
        let mut tx = pool.begin().await?;
        if only_if_none {
            // Replicas starting together serialise here; the loser sees the winner's key.
            if store.is_postgres() {
                sqlx::query("LOCK TABLE identity_signing_keys IN EXCLUSIVE MODE").execute(&mut *tx).await.ok();
            }
            let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM identity_signing_keys").fetch_one(&mut *tx).await?;
            if count > 0 {
                return Ok(false);
            }
        }
        sqlx::query("INSERT INTO identity_signing_keys (kid, sealed_seed, created_at, signs_from, retired_at) VALUES ($1, $2, $3, $4, NULL)")
            .bind(&key.kid)
            .bind(&key.sealed_seed)
            .bind(key.created_at.timestamp())
            .bind(key.signs_from.timestamp())
            .execute(&mut *tx)
            .await?;
        for (kid, at) in retire {
            sqlx::query("UPDATE identity_signing_keys SET retired_at = $1 WHERE kid = $2")
                .bind(at.timestamp())
                .bind(kid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    })
}

/// On PostgreSQL, makes a person's key changes take turns: otherwise a key made in the same
/// instant as their erasure would not see the erasure's mark (read committed) and escape it.
/// SQLite has one writer, so they take turns already. The number is of our own making, so it
/// may stand in the text.
fn person_lock(person: Uuid) -> String {
    // The id's last bytes: random in every UUID version used here (the first are a time).
    let [.., a, b, c, d] = *person.as_bytes();
    format!("SELECT pg_advisory_xact_lock(1769238880, {})", i32::from_be_bytes([a, b, c, d]))
}

/// A wrapped key by its id: `Some(Some(_))` live, `Some(None)` destroyed, `None` never made.
pub async fn person_key(store: &Store, key_id: Uuid) -> Result<Option<Option<String>>, StoreError> {
    on_backend!(store.backend(), pool => {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT wrapped_key FROM identity_person_keys WHERE key_id = $1")
                .bind(key_id.to_string())
                .fetch_optional(pool)
                .await?;
        Ok(row.map(|(wrapped,)| wrapped))
    })
}

/// The wrapped keys among `key_ids` that are still there (neither destroyed nor never made),
/// in one query per [`agora_eventstore::STREAMS_AT_ONCE`] ids.
pub async fn person_keys(store: &Store, key_ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, StoreError> {
    let mut found = Vec::with_capacity(key_ids.len());
    for chunk in key_ids.chunks(agora_eventstore::STREAMS_AT_ONCE) {
        let sql = format!(
            "SELECT key_id, wrapped_key FROM identity_person_keys WHERE wrapped_key IS NOT NULL AND key_id IN {}",
            agora_eventstore::placeholders(store.is_postgres(), 1, chunk.len())
        );
        let rows: Vec<(String, String)> = on_backend!(store.backend(), pool => {
            let mut query = sqlx::query_as(&sql);
            for key_id in chunk {
                query = query.bind(key_id.to_string());
            }
            query.fetch_all(pool).await?
        });
        for (key_id, wrapped) in rows {
            let key_id = Uuid::parse_str(&key_id).map_err(|e| StoreError::CorruptField {
                position: 0,
                field: "identity_person_keys.key_id",
                reason: e.to_string(),
            })?;
            found.push((key_id, wrapped));
        }
    }
    Ok(found)
}

/// Stores a new key for `owner` unless one is there already, or the person was erased; returns
/// what is stored (`None`: erased, or the scope ended).
pub async fn insert_person_key(
    store: &Store,
    owner: &KeyOwner,
    wrapped: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let key_id = owner.key_id();
    on_backend!(store.backend(), pool => {
        let mut tx = pool.begin().await?;
        if store.is_postgres() {
            sqlx::query(&person_lock(owner.person)).execute(&mut *tx).await?;
        }
        sqlx::query(
            "INSERT INTO identity_person_keys (key_id, person_id, scope, wrapped_key, created_at) \
             SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS \
             (SELECT 1 FROM identity_person_keys WHERE key_id = $2 AND erased_at IS NOT NULL) \
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(key_id.to_string())
        .bind(owner.person.to_string())
        .bind(&owner.scope)
        .bind(wrapped)
        .bind(now.timestamp())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    });
    Ok(person_key(store, key_id).await?.flatten())
}

/// Destroys every key of a person; `forever` leaves a mark so that none is made for them again.
pub async fn destroy_person_keys(
    store: &Store,
    person: Uuid,
    forever: bool,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    on_backend!(store.backend(), pool => {
        let mut tx = pool.begin().await?;
        if store.is_postgres() {
            sqlx::query(&person_lock(person)).execute(&mut *tx).await?;
        }
        if !forever {
            // The keys leave the table: a later invitation of the same address gets a new one.
            sqlx::query("DELETE FROM identity_person_keys WHERE person_id = $1")
                .bind(person.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(());
        }
        sqlx::query("UPDATE identity_person_keys SET wrapped_key = NULL, erased_at = $2 WHERE person_id = $1")
            .bind(person.to_string())
            .bind(now.timestamp())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO identity_person_keys (key_id, person_id, scope, wrapped_key, created_at, erased_at) \
             VALUES ($1, $1, '', NULL, $2, $2) ON CONFLICT (key_id) DO UPDATE SET wrapped_key = NULL, erased_at = $2",
        )
        .bind(person.to_string())
        .bind(now.timestamp())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    });
    Ok(())
}

/// Destroys every key of a scope (a hearing past its retention period); how many there were.
pub async fn destroy_scope(store: &Store, scope: &str, now: DateTime<Utc>) -> Result<u64, StoreError> {
    on_backend!(store.backend(), pool => {
        let done = sqlx::query(
            "UPDATE identity_person_keys SET wrapped_key = NULL, erased_at = $2 WHERE scope = $1 AND wrapped_key IS NOT NULL",
        )
        .bind(scope)
        .bind(now.timestamp())
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
    })
}

pub async fn list_users(store: &Store) -> Result<Vec<serde_json::Value>, StoreError> {
    on_backend!(store.backend(), pool => {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, state FROM identity_users ORDER BY id").fetch_all(pool).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, state)| {
                let mut state: serde_json::Value = serde_json::from_str(&state).ok()?;
                // The state is folded without its stream's id; the row has it.
                state["id"] = serde_json::Value::String(id);
                Some(state)
            })
            .collect())
    })
}

pub async fn list_companies(store: &Store) -> Result<Vec<serde_json::Value>, StoreError> {
    on_backend!(store.backend(), pool => {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT state FROM identity_companies ORDER BY id").fetch_all(pool).await?;
        Ok(rows.into_iter().filter_map(|(state,)| serde_json::from_str(&state).ok()).collect())
    })
}

/// Wrapped keys not yet under the master key `kid`, a batch at a time: (key id, wrapping).
pub async fn person_keys_not_under(store: &Store, kid: &str, limit: i64) -> Result<Vec<(String, String)>, StoreError> {
    let current = format!("{}{kid}.%", agora_vault::WRAPPED_PREFIX);
    on_backend!(store.backend(), pool => {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT key_id, wrapped_key FROM identity_person_keys \
             WHERE wrapped_key IS NOT NULL AND wrapped_key NOT LIKE $1 ORDER BY key_id LIMIT $2",
        )
        .bind(&current)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        Ok(rows)
    })
}

/// Replaces a key's wrapping, unless it changed meanwhile (an erasure destroys it, and must
/// win); whether it was replaced.
pub async fn replace_person_key_wrapping(
    store: &Store,
    key_id: &str,
    was: &str,
    now: &str,
) -> Result<bool, StoreError> {
    replace_if_unchanged(
        store,
        "UPDATE identity_person_keys SET wrapped_key = $1 WHERE key_id = $2 AND wrapped_key = $3",
        key_id,
        was,
        now,
    )
    .await
}

/// Replaces a signing key's sealed seed, unless it changed meanwhile.
pub async fn replace_signing_key_seal(store: &Store, kid: &str, was: &str, now: &str) -> Result<bool, StoreError> {
    replace_if_unchanged(
        store,
        "UPDATE identity_signing_keys SET sealed_seed = $1 WHERE kid = $2 AND sealed_seed = $3",
        kid,
        was,
        now,
    )
    .await
}

async fn replace_if_unchanged(store: &Store, update: &str, id: &str, was: &str, now: &str) -> Result<bool, StoreError> {
    on_backend!(store.backend(), pool => {
        let done = sqlx::query(update).bind(now).bind(id).bind(was).execute(pool).await?;
        Ok(done.rows_affected() == 1)
    })
}
