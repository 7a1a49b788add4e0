//! API tokens. Only a SHA-256 of each token is stored: a leaked database does not leak access.
//!
//! A token is 32 random bytes, hex-encoded behind a `sb_` prefix that makes it recognisable to
//! secret scanners. SHA-256 without salt is right here (unlike for passwords): the input has 256
//! bits of entropy, so there is nothing to brute-force, and an unsalted hash can be looked up by
//! index.

use rand::RngCore;
use sqlx::Row;

use super::{now_ms, Result, Store, StoreError};
use crate::directory::{Principal, Scope};
use crate::sip::auth::{hex, Algorithm};

const PREFIX: &str = "sb_";

fn hash(token: &str) -> String {
    Algorithm::Sha256.hash_hex(token.as_bytes())
}

impl Store {
    /// Creates a token and returns it in clear; this is the only time it can be seen.
    /// A `User` scope needs `user_id`; an `Admin` scope ignores it.
    pub async fn create_token(
        &self,
        scope: Scope,
        user_id: Option<i64>,
        label: &str,
    ) -> Result<String> {
        let user_id = match scope {
            Scope::Admin => None,
            Scope::User => {
                let id = user_id.ok_or(StoreError::NotFound)?;
                if self.get_user(id).await?.is_none() {
                    return Err(StoreError::NotFound);
                }
                Some(id)
            }
        };
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let token = format!("{PREFIX}{}", hex(&bytes));
        sqlx::query(
            "INSERT INTO api_tokens (token_hash, scope, user_id, label, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash(&token))
        .bind(scope.as_str())
        .bind(user_id)
        .bind(label)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// Who holds `token`, or `None` when it is unknown.
    pub async fn verify_token(&self, token: &str) -> Result<Option<Principal>> {
        if !token.starts_with(PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT scope, user_id FROM api_tokens WHERE token_hash = $1")
            .bind(hash(token))
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let scope: String = row.try_get("scope")?;
        let user_id: Option<i64> = row.try_get("user_id")?;
        Ok(match (Scope::parse(&scope), user_id) {
            (Some(Scope::Admin), _) => Some(Principal::Admin),
            (Some(Scope::User), Some(id)) => Some(Principal::User(id)),
            _ => None,
        })
    }

    /// Number of admin tokens; zero on a fresh install.
    pub async fn admin_token_count(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE scope = 'admin'")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
