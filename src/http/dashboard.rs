//! The merchant dashboard over HTTP (issue 13): `GET /admin/dashboard?from=&to=` (the admin bearer or the login
//! cookie), `GET`/`POST /admin/login` and `POST /admin/logout`.
//!
//! The cookie authorizes `GET /admin/dashboard` and nothing else: every other admin route uses the [`Admin`]
//! extractor, which reads only the bearer. Login CSRF: the cookie is `SameSite=Strict`, and the login and logout
//! POSTs are refused (403) when the browser says they come from another site (`Sec-Fetch-Site` other than
//! `same-origin`/`none`, or an `Origin` that is neither this host nor `ACP_PUBLIC_BASE_URL`).

use axum::{
    Router,
    body::to_bytes,
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};

use super::{
    AppState,
    admin::Admin,
    extract::{bearer, secrets_equal},
};
use crate::{
    dashboard::{self, page, session},
    error::ApiError,
};

/// The default period: the last 30 days.
const DEFAULT_PERIOD_DAYS: i64 = 30;
/// A login form is one short field.
const LOGIN_BODY_LIMIT: usize = 4096;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/dashboard", get(dashboard_page))
        .route("/admin/login", get(login_form).post(login))
        .route("/admin/logout", post(logout))
}

/// Who may see the dashboard: a bearer is checked as the admin API checks it (a wrong one is the API's 401); without
/// one, a valid login cookie; without either, the login form (401).
enum Viewer {
    Allowed,
    SignInFirst,
}

async fn viewer(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Viewer, ApiError> {
    if bearer(&parts.headers).is_some() {
        return Admin::from_request_parts(parts, state)
            .await
            .map(|Admin| Viewer::Allowed);
    }
    let valid = match (&state.settings.admin_token, session::from_headers(&parts.headers)) {
        (Some(key), Some(cookie)) => session::verify(key.expose(), &cookie, Utc::now()),
        _ => false,
    };
    Ok(if valid { Viewer::Allowed } else { Viewer::SignInFirst })
}

async fn dashboard_page(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (mut parts, _) = request.into_parts();
    if let Viewer::SignInFirst = viewer(&mut parts, &state).await? {
        return Ok(html(StatusCode::UNAUTHORIZED, page::login(false)));
    }
    let (from, to) = period(parts.uri.query())?;
    let data = dashboard::load(&state.db, from, to).await?;
    Ok(html(StatusCode::OK, page::render(&data)))
}

/// `from`/`to` (RFC 3339); `to` defaults to now and `from` to 30 days before `to`.
fn period(query: Option<&str>) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let mut from = None;
    let mut to = None;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "from" if from.is_none() => from = Some(timestamp("from", &value)?),
            "to" if to.is_none() => to = Some(timestamp("to", &value)?),
            _ => {}
        }
    }
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - chrono::Duration::days(DEFAULT_PERIOD_DAYS));
    Ok((from, to))
}

fn timestamp(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("`{name}` must be an RFC 3339 timestamp"),
            )
            .with_param(name)
        })
}

async fn login_form() -> Response {
    html(StatusCode::OK, page::login(false))
}

/// Checks the `token` field in constant time; a right one sets the cookie and sends the browser to the dashboard,
/// a wrong one (or none, or an admin API without a token) shows the form again with 401 and no detail.
async fn login(State(state): State<AppState>, request: Request) -> Response {
    if !same_site(request.headers(), &state) {
        return html(StatusCode::FORBIDDEN, page::login(true));
    }
    let Ok(body) = to_bytes(request.into_body(), LOGIN_BODY_LIMIT).await else {
        return html(StatusCode::UNAUTHORIZED, page::login(true));
    };
    let presented = url::form_urlencoded::parse(&body)
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let cookie = state
        .settings
        .admin_token
        .as_ref()
        .filter(|token| !presented.is_empty() && secrets_equal(&presented, token.expose()))
        .and_then(|token| {
            let ttl = state.settings.dashboard_session_ttl;
            let expires = Utc::now() + chrono::Duration::from_std(ttl).ok()?;
            session::issue(token.expose(), expires).map(|value| session::set_cookie(&value, ttl.as_secs()))
        });
    match cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        Some(cookie) => redirect("/admin/dashboard", cookie),
        None => html(StatusCode::UNAUTHORIZED, page::login(true)),
    }
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !same_site(&headers, &state) {
        return html(StatusCode::FORBIDDEN, page::login(false));
    }
    match HeaderValue::from_str(&session::clear_cookie()) {
        Ok(cookie) => redirect("/admin/login", cookie),
        Err(_) => html(StatusCode::OK, page::login(false)),
    }
}

/// False when the browser tells us the form was posted from another site; clients that send neither header
/// (scripts, curl) pass, which is fine: they hold the token already.
fn same_site(headers: &HeaderMap, state: &AppState) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = text("origin") else {
        return true;
    };
    let Ok(origin) = url::Url::parse(origin) else {
        return false;
    };
    let authority = match (origin.host_str(), origin.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => return false,
    };
    text("host").is_some_and(|host| host.eq_ignore_ascii_case(&authority))
        || origin.origin() == state.settings.public_base_url.origin()
}

fn redirect(location: &'static str, cookie: HeaderValue) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, HeaderValue::from_static(location)),
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    crate::html::response(status, body, &page::content_security_policy())
}
