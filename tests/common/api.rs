//! The HTTP API through its router, without a network, as the API tests call it.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The status and body of `request`.
pub async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

/// `method uri` with `token` as bearer and `body` as JSON; the answer's status and JSON
/// (`Null` when it is not JSON).
pub async fn call(
    app: &Router,
    token: &str,
    method: &str,
    uri: &str,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let (status, bytes) = send(app, request.body(body).unwrap()).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// GETs `uri` every 100 ms, each answer a 200, until `done` holds for one, and returns it;
/// fails naming `waiting_for` and the last answer after `timeout`.
pub async fn poll(
    app: &Router,
    token: &str,
    uri: &str,
    timeout: Duration,
    waiting_for: &str,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, answer) = call(app, token, "GET", uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {answer}");
        if done(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{waiting_for}: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
