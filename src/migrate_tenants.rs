//! `pgtenant migrate --tenants`: brings every schema and database tenant to
//! the newest tenant migration, a bounded number at a time. Each tenant's
//! migrations commit one by one with their version (tenancy/provision.rs),
//! so a run that is interrupted resumes where it stopped.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::tenancy::catalog::Catalog;
use crate::tenancy::provision::{Provisioner, TenantMigration};

/// How one tenant's migration ended.
#[derive(Debug)]
pub struct TenantOutcome {
    pub slug: String,
    /// The version reached, or why it failed.
    pub result: Result<i32, String>,
}

/// Every tenant's outcome, in the order they finished.
#[derive(Debug, Default)]
pub struct TenantsReport {
    pub total: usize,
    pub outcomes: Vec<TenantOutcome>,
}

impl TenantsReport {
    pub fn failed(&self) -> impl Iterator<Item = &TenantOutcome> {
        self.outcomes.iter().filter(|o| o.result.is_err())
    }
}

/// Migrates every schema and database tenant, `jobs` at a time; `progress`
/// hears of each tenant as it finishes.
pub async fn migrate_tenants(
    config: &Config,
    jobs: usize,
    mut progress: impl FnMut(&TenantsReport, &TenantOutcome),
) -> anyhow::Result<TenantsReport> {
    let folder = config
        .provisioning
        .migrations
        .as_deref()
        .context("provisioning.migrations is not set: there are no tenant migrations to apply")?;
    let migrations =
        TenantMigration::load_folder(folder).map_err(|e| anyhow::anyhow!("provisioning.migrations: {e}"))?;
    let jobs = jobs.max(1);
    // One control connection per job holds that tenant's lock, and one more for the reads.
    let catalog = Catalog::new(&config.control.url, jobs + 1).context("control.url")?;
    catalog.check_migrated().await.context("control.url")?;
    let context_key = catalog.context_key().await.context("control.url")?;
    let provisioner = Provisioner::new(
        catalog.clone(),
        config.placements(),
        migrations,
        config.provisioning.template.clone(),
        context_key,
        Duration::from_secs(config.upstream.connect_timeout_secs),
    );
    let tenants = catalog.isolated_tenants().await.map_err(|e| anyhow::anyhow!("cannot list tenants: {e}"))?;
    let mut report = TenantsReport { total: tenants.len(), outcomes: Vec::new() };
    let permits = Arc::new(Semaphore::new(jobs));
    let mut running = JoinSet::new();
    for tenant in tenants {
        let (provisioner, catalog, permits) = (provisioner.clone(), catalog.clone(), Arc::clone(&permits));
        running.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = match provisioner.migrate(&tenant.id, tenant.isolation, &tenant.upstream).await {
                Ok(version) => match catalog.finish_provisioning(&tenant.id, Some(version)).await {
                    Ok(_) => Ok(version),
                    Err(e) => Err(format!("migrated to {version}, but the catalog was not updated: {e}")),
                },
                Err(e) => Err(e.to_string()),
            };
            TenantOutcome { slug: tenant.slug, result }
        });
    }
    while let Some(done) = running.join_next().await {
        let outcome = done.unwrap_or_else(|e| TenantOutcome { slug: "?".into(), result: Err(e.to_string()) });
        progress(&report, &outcome);
        report.outcomes.push(outcome);
    }
    Ok(report)
}
