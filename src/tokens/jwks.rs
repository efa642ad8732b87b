//! A JWKS document fetched over HTTP(S) (`jwt.jwks_url`): fetched at start,
//! and again when a token names a key id pgtenant does not know — at most
//! once per `jwt.jwks_refresh_secs`, so a stream of made-up key ids cannot
//! turn pgtenant into a load generator against the identity provider. A
//! failed fetch keeps the last good set.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::keys::{self, KeyError, VerificationKey};

/// How long one fetch may take, and how large the document may be.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

pub(crate) struct RemoteJwks {
    url: hyper::Uri,
    refresh_every: Duration,
    client: HttpsClient,
    keys: RwLock<Arc<Vec<VerificationKey>>>,
    /// When a refresh for an unknown key id last went out (the fetch at start
    /// does not count); held across the fetch, so concurrent logins share one.
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
}

impl RemoteJwks {
    pub(crate) fn new(url: &str, refresh_every: Duration) -> Result<RemoteJwks, KeyError> {
        let bad = |message: String| KeyError { key: "jwt.jwks_url".into(), message };
        let uri: hyper::Uri = url.parse().map_err(|e| bad(format!("not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(bad("must be an http:// or https:// URL".into()));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| bad(format!("cannot load the system's CA certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(RemoteJwks {
            url: uri,
            refresh_every,
            client,
            keys: RwLock::new(Arc::new(Vec::new())),
            last_refresh: tokio::sync::Mutex::new(None),
        })
    }

    /// The keys of the last good document.
    pub(crate) fn keys(&self) -> Arc<Vec<VerificationKey>> {
        Arc::clone(&self.keys.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The first fetch, at start: a failure is logged, and token logins of
    /// these keys fail until a later fetch succeeds.
    pub(crate) async fn load(&self) {
        if let Err(e) = self.fetch().await {
            tracing::warn!(url = %self.url, error = %e, "cannot fetch jwt.jwks_url; token keys from it are missing");
        }
    }

    /// Fetches again for a key id nobody knows, unless a refresh went out in
    /// the last `jwks_refresh_secs`. True when a fresh document was loaded.
    pub(crate) async fn refresh(&self) -> bool {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.refresh_every) {
            return false;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(count) => {
                tracing::info!(url = %self.url, keys = count, "jwt.jwks_url fetched again for an unknown key id");
                true
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "refreshing jwt.jwks_url failed; the last keys stay");
                false
            }
        }
    }

    async fn fetch(&self) -> Result<usize, String> {
        let request = async {
            let response = self.client.get(self.url.clone()).await.map_err(|e| format!("request failed: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("the server answered {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the document failed: {e}"))?;
            Ok(body.to_bytes())
        };
        let document = tokio::time::timeout(FETCH_TIMEOUT, request)
            .await
            .map_err(|_| format!("no answer within {} s", FETCH_TIMEOUT.as_secs()))??;
        let keys = keys::jwks(&document, "jwt.jwks_url").map_err(|e| e.message)?;
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
        Ok(count)
    }
}
