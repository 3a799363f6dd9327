//! Registered clients, and the invite tokens that let them register.

use mlschat_wire::ClientId;

use super::{Database, StorageError, unix_now, with_pool};

impl Database {
    /// Registers a client; registering the same key again is a no-op. Returns whether it is new.
    pub async fn register_client(
        &self,
        client: &ClientId,
        signature_key: &[u8],
    ) -> Result<bool, StorageError> {
        const SQL: &str = "INSERT INTO clients (client_id, signature_key, registered_at)
                           VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        let client = client.as_slice();
        let done = with_pool!(self, |pool| {
            let q = sqlx::query(SQL)
                .bind(client)
                .bind(signature_key)
                .bind(unix_now());
            q.execute(pool).await?.rows_affected()
        });
        Ok(done == 1)
    }

    /// The signature key of a registered client.
    pub async fn client_key(&self, client: &ClientId) -> Result<Option<Vec<u8>>, StorageError> {
        const SQL: &str = "SELECT signature_key FROM clients WHERE client_id = $1";
        let client = client.as_slice();
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(SQL)
                .bind(client)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Stores the hash of a new invite token.
    pub async fn create_invite(&self, token_hash: &[u8; 32]) -> Result<(), StorageError> {
        const SQL: &str = "INSERT INTO invites (token_hash, created_at) VALUES ($1, $2)";
        with_pool!(self, |pool| {
            let q = sqlx::query(SQL)
                .bind(token_hash.as_slice())
                .bind(unix_now());
            q.execute(pool).await?;
        });
        Ok(())
    }

    /// Uses up an unused invite; false if there is no such unused invite.
    pub async fn use_invite(&self, token_hash: &[u8; 32]) -> Result<bool, StorageError> {
        const SQL: &str =
            "UPDATE invites SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL";
        let done = with_pool!(self, |pool| {
            let q = sqlx::query(SQL)
                .bind(token_hash.as_slice())
                .bind(unix_now());
            q.execute(pool).await?.rows_affected()
        });
        Ok(done == 1)
    }
}
