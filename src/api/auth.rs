//! Authentication: `Authorization: Bearer <key>` (or `?token=` on WebSocket upgrades only,
//! since browsers cannot set headers there) resolves to a tenant. Verified keys are cached
//! for two seconds so the hot path skips the store and a revoked key stops working soon.
//! A request another node forwarded carries that node's signed hop instead, naming the
//! tenant it authenticated (and the hash of the key, for later re-checks).

use super::{ApiError, AppState};
use crate::domain::{ApiKey, TenantId};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CACHE_TTL: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (TenantId, Instant)>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<TenantId> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(t, _)| t.clone())
    }

    fn put(&self, hash: String, tenant: TenantId) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(hash, (tenant, Instant::now()));
    }
}

/// The authenticated tenant of a request. Every `/v1` handler takes one.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantId);

fn presented_key(parts: &Parts) -> Option<String> {
    presented(&parts.headers, &parts.uri)
}

/// The hash of the key a request was authenticated with (a request extension the
/// `Tenant` extractor sets), for re-checking it later, as an open terminal does.
#[derive(Debug, Clone)]
pub struct KeyHash(pub String);

/// Whether the key with `hash` still belongs to `tenant`, through the key cache. A store
/// that cannot answer leaves the key standing (a database hiccup closes no terminal).
pub async fn key_still_names(state: &AppState, hash: &str, tenant: &TenantId) -> bool {
    if let Some(cached) = state.keys.get(hash) {
        return &cached == tenant;
    }
    match state.service.tenant_for_key(hash).await {
        Ok(Some(found)) => {
            state.keys.put(hash.to_string(), found.clone());
            &found == tenant
        }
        Ok(None) => false,
        Err(_) => true,
    }
}

fn presented(headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    let upgrade = headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return None;
    }
    let query = uri.query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(header) = parts.headers.get(crate::cluster::hop::AUTH_HEADER) {
            return from_hop(parts, header.clone(), state);
        }
        let Some(key) = presented_key(parts).filter(|k| !k.is_empty()) else {
            return Err(ApiError::unauthorized(
                "missing API key: send `Authorization: Bearer <key>`",
            ));
        };
        let hash = ApiKey::from_presented(&key).hash();
        parts.extensions.insert(KeyHash(hash.clone()));
        if let Some(tenant) = state.keys.get(&hash) {
            return Ok(Tenant(tenant));
        }
        match state.service.tenant_for_key(&hash).await? {
            Some(tenant) => {
                state.keys.put(hash, tenant.clone());
                Ok(Tenant(tenant))
            }
            None => Err(ApiError::unauthorized("invalid API key")),
        }
    }
}

/// The tenant of a request another node forwarded: its hop must verify under this
/// node's cluster secret.
fn from_hop(
    parts: &mut Parts,
    header: axum::http::HeaderValue,
    state: &AppState,
) -> Result<Tenant, ApiError> {
    use crate::cluster::hop;
    // Taken once per request (a second extraction finds what the first verified).
    if let Some(HopTenant(tenant)) = parts.extensions.get::<HopTenant>() {
        return Ok(Tenant(tenant.clone()));
    }
    let text = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let identity = state.service.hop_identity();
    let (me, secret) = match identity {
        Some((me, secret)) => (me, Some(secret)),
        None => (String::new(), None),
    };
    // As the sender signed it: the whole path (a nested router sees its tail).
    let uri = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(&parts.uri, |o| &o.0);
    let path = uri
        .path_and_query()
        .map_or(uri.path(), |p| p.as_str())
        .to_string();
    let now = chrono::Utc::now().timestamp();
    let header = header.to_str().unwrap_or_default();
    let verified = hop::verify(
        secret.as_ref(),
        &me,
        now,
        header,
        &text(hop::TENANT_HEADER),
        &text(hop::KEY_HASH_HEADER),
        parts.method.as_str(),
        &path,
    )
    .and_then(|verified| {
        let at = hop::signed_at(header).unwrap_or(now);
        state.hops_taken.take(&verified.nonce, at, now)?;
        Ok(verified)
    })
    .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let tenant = TenantId::parse(&verified.tenant)
        .map_err(|_| ApiError::unauthorized("the node credential names no tenant"))?;
    if !verified.key_hash.is_empty() {
        parts.extensions.insert(KeyHash(verified.key_hash));
    }
    parts.extensions.insert(HopTenant(tenant.clone()));
    Ok(Tenant(tenant))
}

/// The tenant of a hop already verified for this request.
#[derive(Clone)]
struct HopTenant(TenantId);
