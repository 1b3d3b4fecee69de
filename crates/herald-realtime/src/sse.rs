//! Centrifugo's unidirectional SSE transport (`/connection/uni_sse`): the connect request comes
//! as the `cf_connect` query parameter (GET) or the JSON body (POST); every event's data is one
//! push (`{"connect":..}` first, then `{"channel":..,"pub":..}`; `{}` is a ping). Subscriptions
//! come from the token's `channels` claim or the server API.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json as AxumJson;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::Gateway;
use crate::hub::{ClientHandle, Control, Outbound};
use crate::proto::{Command, ConnectRequest, Disconnect};
use crate::session::{Outcome, Session};

#[derive(Deserialize)]
pub struct SseQuery {
    cf_connect: Option<String>,
}

pub async fn sse_get_handler(
    State(gw): State<Arc<Gateway>>,
    crate::Peer(source): crate::Peer,
    Query(q): Query<SseQuery>,
) -> Response {
    let req = match q.cf_connect.as_deref() {
        Some(s) => match serde_json::from_str::<ConnectRequest>(s) {
            Ok(r) => r,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("bad cf_connect: {e}")).into_response();
            }
        },
        None => ConnectRequest::default(),
    };
    start(gw, req, source).await
}

pub async fn sse_post_handler(
    State(gw): State<Arc<Gateway>>,
    crate::Peer(source): crate::Peer,
    body: Result<AxumJson<ConnectRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(AxumJson(req)) => start(gw, req, source).await,
        Err(e) => (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    }
}

struct Driver {
    session: Session,
    client: Arc<ClientHandle>,
    rx: mpsc::Receiver<Outbound>,
    ctl: mpsc::Receiver<Control>,
    first: Option<String>,
    ping: tokio::time::Interval,
    done: bool,
}

async fn start(gw: Arc<Gateway>, req: ConnectRequest, source: String) -> Response {
    let mut session = Session::new(Arc::clone(&gw), true, source);
    let cmd = Command {
        id: 1,
        connect: Some(req),
        ..Command::default()
    };
    let first = match session.handle(cmd).await {
        Outcome::Reply(r) if session.client.is_some() => r,
        Outcome::Close(_, d) if d == Disconnect::TOO_MANY_REQUESTS => {
            return StatusCode::TOO_MANY_REQUESTS.into_response();
        }
        Outcome::Reply(r) | Outcome::Close(Some(r), _) => {
            let status = if r.contains("\"code\":109") || r.contains("\"code\":101") {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::BAD_REQUEST
            };
            return (status, r).into_response();
        }
        _ => return StatusCode::BAD_REQUEST.into_response(),
    };
    let (Some(client), Some(rx), Some(ctl)) = (
        session.client.clone(),
        session.outbound.take(),
        session.control.take(),
    ) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let period = Duration::from_secs(gw.cfg.ping_interval_secs.max(1));
    let driver = Driver {
        session,
        client,
        rx,
        ctl,
        first: Some(first),
        ping: tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        done: false,
    };
    Sse::new(events(driver)).into_response()
}

fn events(d: Driver) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(d, |mut d| async move {
        if d.done {
            return None;
        }
        if let Some(first) = d.first.take() {
            return Some((Ok(Event::default().data(first)), d));
        }
        loop {
            if let Some(e) = d.session.on_expiry() {
                d.done = true;
                return Some((Ok(disconnect_event(e)), d));
            }
            tokio::select! {
                biased;
                c = d.ctl.recv() => {
                    if let Some(c) = c
                        && let Some(e) = Box::pin(d.session.on_control(c)).await
                    {
                        d.done = true;
                        return Some((Ok(disconnect_event(e)), d));
                    }
                }
                m = d.rx.recv() => {
                    let msg = m?;
                    d.client.taken(&msg);
                    if let Some(line) = d.session.admit(&msg) {
                        d.client.sent(1);
                        return Some((Ok(Event::default().data(&*line)), d));
                    }
                }
                _ = d.ping.tick() => return Some((Ok(Event::default().data("{}")), d)),
            }
        }
    })
}

fn disconnect_event(d: Disconnect) -> Event {
    Event::default().data(
        serde_json::json!({"disconnect": {"code": d.code, "reason": d.reason, "reconnect": d.reconnect()}})
            .to_string(),
    )
}
