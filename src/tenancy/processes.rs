//! The catalog's list of pgtenant processes (sql/0013), for passing cancel
//! requests between them (see fleet.rs).

use std::net::SocketAddr;

use super::catalog::{Catalog, CatalogError};

/// A row not refreshed for this long is a crashed process's.
const STALE_AFTER_SECS: f64 = 60.0;

impl Catalog {
    /// Adds this process, reachable for passed-on cancels at `cancel_addr`; returns its id.
    pub(crate) async fn register_process(&self, cancel_addr: SocketAddr) -> Result<String, CatalogError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO pgtenant.proxy_processes (cancel_addr) VALUES ($1) RETURNING id::text",
                &[&cancel_addr.to_string()],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Marks this process alive (re-adding it if its row was taken for a
    /// crashed one's), and forgets processes not seen for a minute.
    pub(crate) async fn touch_process(&self, id: &str, cancel_addr: SocketAddr) -> Result<(), CatalogError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO pgtenant.proxy_processes (id, cancel_addr) VALUES ($1::text::uuid, $2)
                 ON CONFLICT (id) DO UPDATE SET seen_at = now(), cancel_addr = EXCLUDED.cancel_addr",
                &[&id, &cancel_addr.to_string()],
            )
            .await?;
        client
            .execute(
                "DELETE FROM pgtenant.proxy_processes WHERE seen_at < now() - make_interval(secs => $1)",
                &[&STALE_AFTER_SECS],
            )
            .await?;
        Ok(())
    }

    /// Removes this process (it is stopping).
    pub(crate) async fn remove_process(&self, id: &str) -> Result<(), CatalogError> {
        let client = self.client().await?;
        client.execute("DELETE FROM pgtenant.proxy_processes WHERE id = $1::text::uuid", &[&id]).await?;
        Ok(())
    }

    /// Where the other live processes take passed-on cancels.
    pub(crate) async fn peer_cancel_addrs(&self, id: &str) -> Result<Vec<String>, CatalogError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT cancel_addr FROM pgtenant.proxy_processes
                  WHERE id <> $1::text::uuid AND seen_at >= now() - make_interval(secs => $2)",
                &[&id, &STALE_AFTER_SECS],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}
