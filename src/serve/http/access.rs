//! Who may do what over HTTP: the request's token for the role it needs, the `Host` a
//! tokenless request may name, and the checks a write or a WebSocket takes beyond its token.

use std::collections::HashMap;

use axum::http::{header, HeaderMap};

use super::error::ApiError;
use super::HttpConfig;
use crate::protocol::ErrorCode;
use crate::serve::auth::one_of;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Streams and REST reads: a monitor or an admin token.
    Read,
    /// REST writes: an admin token.
    Write,
    /// An agent's own routes (register, heartbeat, jobs, deregister): an agent token, as an
    /// agent's `hello` on the TCP listener.
    Agent,
}

pub(super) fn token<'a>(
    headers: &'a HeaderMap,
    query: &'a HashMap<String, String>,
) -> Option<&'a str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or(query.get("token").map(String::as_str))
}

/// Checks the request's token for `access`; for reads, whether it is an admin's too. Another
/// role's known token is `forbidden`, an unknown or missing one `unauthorized`.
pub(super) fn authorize(
    cfg: &HttpConfig,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    access: Access,
) -> Result<bool, ApiError> {
    let given = token(headers, query);
    let admin_token = one_of(&cfg.admin_tokens, given);
    let monitor_token = one_of(&cfg.monitor_tokens, given);
    let agent_token = one_of(&cfg.agent_tokens, given);
    let admin = cfg.admin_tokens.is_empty() || admin_token;
    let monitor = cfg.monitor_tokens.is_empty() || monitor_token;
    let agent = cfg.agent_tokens.is_empty() || agent_token;
    // Let in without a token (a role left open, loopback only): only when asked by a name of
    // this machine, so that a page whose name was rebound to 127.0.0.1 gets nothing.
    let by_token = match access {
        Access::Write => admin_token,
        Access::Read => admin_token || monitor_token,
        Access::Agent => agent_token,
    };
    let granted = match access {
        Access::Write => admin,
        Access::Read => admin || monitor,
        Access::Agent => agent,
    };
    if granted && !by_token {
        crate::serve::http::hosts::check(headers, &cfg.allowed_hosts)?;
    }
    match access {
        Access::Write if admin => Ok(true),
        // A monitor's own token: known, but not enough.
        Access::Write if one_of(&cfg.monitor_tokens, given) => Err(ApiError::new(
            ErrorCode::Forbidden,
            "this needs an admin token",
        )),
        Access::Read if admin || monitor => Ok(admin),
        Access::Agent if agent => Ok(false),
        // Another role's token: known, but not for an agent's routes.
        Access::Agent if admin_token || monitor_token => Err(ApiError::new(
            ErrorCode::Forbidden,
            "this needs an agent token",
        )),
        _ => Err(ApiError::new(
            ErrorCode::Unauthorized,
            match given {
                None => "a token is required (Authorization: Bearer TOKEN or ?token=TOKEN)",
                Some(_) => "the token is not valid here",
            },
        )),
    }
}

/// Whether a browser request comes from a page served elsewhere (its `Origin` names another
/// host than the one it asked). Such a page may not drive this API: with no tokens
/// configured (loopback), anything the operator's browser opened could otherwise evict agents.
pub(super) fn foreign_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    origin_host != host
}

/// A write's checks beyond its token: a JSON content type (so a cross-site form or
/// `text/plain` fetch cannot send one without a CORS preflight, which is never granted) and
/// no foreign `Origin`.
pub(super) fn write_guard(headers: &HeaderMap, has_body: bool) -> Result<(), ApiError> {
    if foreign_origin(headers) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "requests from pages of another origin are refused",
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if has_body && !json {
        return Err(ApiError::new(
            ErrorCode::BadFrame,
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    Ok(())
}
