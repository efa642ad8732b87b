//! CPU-heavy password maths (PBKDF2: 4,096 HMAC rounds, milliseconds) off the
//! async workers, so one login or admin call does not stall every session on
//! its worker thread; a few at a time, so a flood of them cannot take every
//! blocking thread either.

use tokio::sync::Semaphore;

/// Password computations running at once.
static SLOTS: Semaphore = Semaphore::const_new(4);

/// Runs `work` on the blocking pool; `None` when the runtime is shutting down.
pub(crate) async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _slot = SLOTS.acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

/// A SCRAM-SHA-256 verifier of `password` with a fresh salt.
pub(crate) async fn scram_verifier(password: &str) -> Option<String> {
    let password = password.to_owned();
    run(move || postgres_protocol::password::scram_sha_256(password.as_bytes())).await
}
