//! The push client against real HTTP receivers on loopback, each scripted to answer one way.
//!
//! Every receiver binds 127.0.0.1:0, and every URL here names 127.0.0.1 or localhost; the
//! client's allow list, when there is one, is loopback only. Decisions about other addresses
//! are unit tests of `AddressPolicy::check`, never requests.

use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use opal_dispatch::signing::{
    self, SigningSecret, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP,
};
use opal_dispatch::validation::{WEBHOOK_REQUEST_ORIGIN, WEBHOOK_REQUEST_RATE};
use opal_dispatch::{
    AddressPolicy, AllowedRate, ClientOptions, DispatchError, ErrorKind, Outcome, PushClient,
};
use reqwest::Url;
use tokio::net::TcpListener;

const LOOPBACK_ONLY: &str = "127.0.0.0/8, ::1/128";
const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    headers: HeaderMap,
    body: Bytes,
}

/// A loopback HTTP server answering every request with `answer`, recording what it got.
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Receiver {
    async fn start<F, Fut>(answer: F) -> Receiver
    where
        F: Fn(Recorded) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let app = Router::new().fallback(move |method: Method, headers: HeaderMap, body: Bytes| {
            let answer = answer.clone();
            let log = Arc::clone(&log);
            async move {
                let request = Recorded {
                    method,
                    headers,
                    body,
                };
                log.lock().unwrap().push(request.clone());
                answer(request).await
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { port, requests }
    }

    async fn status(status: u16) -> Receiver {
        Self::start(move |_| async move { StatusCode::from_u16(status).unwrap().into_response() })
            .await
    }

    fn url(&self, host: &str) -> Url {
        Url::parse(&format!("http://{host}:{}/hook", self.port)).unwrap()
    }

    fn ip_url(&self) -> Url {
        self.url("127.0.0.1")
    }

    fn hits(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn last(&self) -> Recorded {
        self.requests.lock().unwrap().last().cloned().unwrap()
    }
}

fn client(allow: &str) -> PushClient {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(2),
        user_agent: "opal-dispatch-test".into(),
        ..ClientOptions::default()
    };
    PushClient::new(AddressPolicy::parse_allow_list(allow).unwrap(), options).unwrap()
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

async fn post(
    client: &PushClient,
    url: &Url,
) -> Result<opal_dispatch::PushResponse, DispatchError> {
    client
        .post(
            url,
            json_headers(),
            Bytes::from_static(b"{\"n\":1}"),
            TIMEOUT,
        )
        .await
}

fn outcome(result: &Result<opal_dispatch::PushResponse, DispatchError>) -> Outcome {
    Outcome::from_result(result, jiff::Timestamp::now(), MAX_WAIT)
}

#[tokio::test]
async fn delivers_a_signed_webhook() {
    let receiver = Receiver::start(|_| async { (StatusCode::OK, "thanks").into_response() }).await;
    let secret = SigningSecret::generate();
    let body = Bytes::from_static(br#"{"type":"order.created"}"#);
    let now = jiff::Timestamp::now().as_second();
    let mut headers = json_headers();
    headers.insert(WEBHOOK_ID, HeaderValue::from_static("msg_1"));
    headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(now));
    let signature = signing::signature_header("msg_1", now, &body, std::slice::from_ref(&secret));
    headers.insert(
        WEBHOOK_SIGNATURE,
        HeaderValue::from_str(&signature).unwrap(),
    );

    let result = client(LOOPBACK_ONLY)
        .post(&receiver.ip_url(), headers, body.clone(), TIMEOUT)
        .await;
    assert_eq!(outcome(&result), Outcome::Delivered);
    let response = result.unwrap();
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(&response.body[..], b"thanks");
    assert!(!response.body_truncated);
    assert_eq!(response.remote_addr.map(|a| a.port()), Some(receiver.port));

    let got = receiver.last();
    assert_eq!(got.method, Method::POST);
    assert_eq!(got.body, body);
    assert_eq!(got.headers[header::USER_AGENT], "opal-dispatch-test");
    assert_eq!(got.headers[header::CONTENT_TYPE], "application/json");
    // What arrived verifies the way a Standard Webhooks receiver checks it.
    let h = |name: &str| got.headers[name].to_str().unwrap().to_owned();
    signing::verify(
        &secret,
        &h(WEBHOOK_ID),
        &h(WEBHOOK_TIMESTAMP),
        &h(WEBHOOK_SIGNATURE),
        &got.body,
        now,
        signing::DEFAULT_TOLERANCE,
    )
    .unwrap();
}

#[tokio::test]
async fn server_error_is_a_failure_with_the_start_of_the_body() {
    let receiver = Receiver::start(|_| async {
        (StatusCode::INTERNAL_SERVER_ERROR, "database down").into_response()
    })
    .await;
    let result = post(&client(LOOPBACK_ONLY), &receiver.ip_url()).await;
    assert_eq!(outcome(&result), Outcome::Failed { status: 500 });
    assert_eq!(&result.unwrap().body[..], b"database down");
}

#[tokio::test]
async fn too_many_requests_with_retry_after_seconds() {
    let receiver = Receiver::start(|_| async {
        (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "7")]).into_response()
    })
    .await;
    let result = post(&client(LOOPBACK_ONLY), &receiver.ip_url()).await;
    assert_eq!(result.as_ref().unwrap().retry_after.as_deref(), Some("7"));
    assert_eq!(
        outcome(&result),
        Outcome::RetryAfter(Duration::from_secs(7))
    );
}

#[tokio::test]
async fn unavailable_with_retry_after_date() {
    let receiver = Receiver::start(|_| async {
        let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
        let date = at.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, date)],
        )
            .into_response()
    })
    .await;
    let result = post(&client(LOOPBACK_ONLY), &receiver.ip_url()).await;
    match outcome(&result) {
        Outcome::RetryAfter(wait) => assert!(
            (Duration::from_secs(117)..=Duration::from_secs(120)).contains(&wait),
            "{wait:?}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn gone_asks_to_disable_the_endpoint() {
    let receiver = Receiver::status(410).await;
    let result = post(&client(LOOPBACK_ONLY), &receiver.ip_url()).await;
    assert_eq!(outcome(&result), Outcome::Gone);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = Receiver::status(200).await;
    let location = target.ip_url().to_string();
    let redirecting = Receiver::start(move |_| {
        let location = location.clone();
        async move { (StatusCode::FOUND, [(header::LOCATION, location)]).into_response() }
    })
    .await;
    let result = post(&client(LOOPBACK_ONLY), &redirecting.ip_url()).await;
    assert_eq!(outcome(&result), Outcome::Failed { status: 302 });
    assert_eq!(redirecting.hits(), 1);
    assert_eq!(target.hits(), 0, "the redirect was followed");
}

#[tokio::test]
async fn a_hanging_endpoint_times_out() {
    let receiver = Receiver::start(|_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        StatusCode::OK.into_response()
    })
    .await;
    let started = Instant::now();
    let result = client(LOOPBACK_ONLY)
        .post(
            &receiver.ip_url(),
            HeaderMap::new(),
            Bytes::new(),
            Duration::from_millis(300),
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(
        outcome(&result),
        Outcome::Error {
            kind: ErrorKind::Timeout
        },
        "{result:?}"
    );
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(receiver.hits(), 1);
}

#[tokio::test]
async fn a_slow_answer_within_the_timeout_is_delivered() {
    let receiver = Receiver::start(|_| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        StatusCode::NO_CONTENT.into_response()
    })
    .await;
    let result = client(LOOPBACK_ONLY)
        .post(
            &receiver.ip_url(),
            HeaderMap::new(),
            Bytes::new(),
            Duration::from_secs(3),
        )
        .await;
    assert_eq!(outcome(&result), Outcome::Delivered);
    let response = result.unwrap();
    assert!(
        response.latency >= Duration::from_millis(200),
        "{:?}",
        response.latency
    );
    assert!(response.body.is_empty());
    assert!(!response.body_truncated);
}

#[tokio::test]
async fn only_the_first_kibibyte_of_a_huge_body_is_read() {
    // 256 MiB, produced lazily: reading it all would take far longer than the bound below.
    let receiver = Receiver::start(|_| async {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::repeat_with(move || {
            Ok::<_, std::convert::Infallible>(chunk.clone())
        })
        .take(4 * 1024);
        Response::new(Body::from_stream(stream))
    })
    .await;
    let started = Instant::now();
    let result = post(&client(LOOPBACK_ONLY), &receiver.ip_url()).await;
    let response = result.unwrap();
    assert_eq!(response.body.len(), opal_dispatch::client::MAX_KEPT_BODY);
    assert!(response.body.iter().all(|&b| b == b'x'));
    assert!(response.body_truncated);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_whole() {
    let receiver =
        Receiver::start(|_| async { (StatusCode::OK, vec![b'y'; 1024]).into_response() }).await;
    let response = post(&client(LOOPBACK_ONLY), &receiver.ip_url())
        .await
        .unwrap();
    assert_eq!(response.body.len(), 1024);
    assert!(!response.body_truncated);
}

#[tokio::test]
async fn a_closed_port_is_connection_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = Url::parse(&format!("http://127.0.0.1:{port}/hook")).unwrap();
    let started = Instant::now();
    let result = post(&client(LOOPBACK_ONLY), &url).await;
    assert_eq!(
        outcome(&result),
        Outcome::Error {
            kind: ErrorKind::ConnectionRefused
        },
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn tls_to_a_plain_http_server_is_a_tls_error() {
    let receiver = Receiver::status(200).await;
    let url = Url::parse(&format!("https://127.0.0.1:{}/hook", receiver.port)).unwrap();
    let result = post(&client(LOOPBACK_ONLY), &url).await;
    assert_eq!(
        outcome(&result),
        Outcome::Error {
            kind: ErrorKind::Tls
        },
        "{result:?}"
    );
}

fn handshake_receiver(
    allowed_origin: Option<&'static str>,
    allowed_rate: Option<&'static str>,
) -> impl Future<Output = Receiver> {
    Receiver::start(move |request: Recorded| async move {
        if request.method != Method::OPTIONS {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        let mut headers = HeaderMap::new();
        if let Some(origin) = allowed_origin {
            headers.insert("webhook-allowed-origin", HeaderValue::from_static(origin));
        }
        if let Some(rate) = allowed_rate {
            headers.insert("webhook-allowed-rate", HeaderValue::from_static(rate));
        }
        (StatusCode::OK, headers).into_response()
    })
}

#[tokio::test]
async fn validation_handshake_accepts_our_origin_and_reads_the_rate() {
    let receiver = handshake_receiver(Some("opal.example.com"), Some("120")).await;
    let validation = client(LOOPBACK_ONLY)
        .validate_endpoint(
            &receiver.ip_url(),
            "opal.example.com",
            NonZeroU32::new(600),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(
        validation.allowed_rate,
        Some(AllowedRate::PerMinute(NonZeroU32::new(120).unwrap()))
    );
    let got = receiver.last();
    assert_eq!(got.method, Method::OPTIONS);
    assert_eq!(got.headers[WEBHOOK_REQUEST_ORIGIN], "opal.example.com");
    assert_eq!(got.headers[WEBHOOK_REQUEST_RATE], "600");
}

#[tokio::test]
async fn validation_handshake_accepts_any_origin_and_unlimited_rate() {
    let receiver = handshake_receiver(Some("*"), Some("*")).await;
    let validation = client(LOOPBACK_ONLY)
        .validate_endpoint(&receiver.ip_url(), "opal.example.com", None, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(validation.allowed_rate, Some(AllowedRate::Unlimited));
    assert!(!receiver.last().headers.contains_key(WEBHOOK_REQUEST_RATE));
}

#[tokio::test]
async fn validation_handshake_refuses_another_origin_or_none() {
    for allowed in [Some("other.example.com"), None] {
        let receiver = handshake_receiver(allowed, Some("10")).await;
        let result = client(LOOPBACK_ONLY)
            .validate_endpoint(&receiver.ip_url(), "opal.example.com", None, TIMEOUT)
            .await;
        assert!(
            matches!(result, Err(DispatchError::ValidationRefused { .. })),
            "{allowed:?}: {result:?}"
        );
    }
    // An endpoint that knows nothing of the handshake refuses OPTIONS.
    let receiver = Receiver::status(405).await;
    let result = client(LOOPBACK_ONLY)
        .validate_endpoint(&receiver.ip_url(), "opal.example.com", None, TIMEOUT)
        .await;
    assert!(matches!(
        result,
        Err(DispatchError::ValidationRefused { .. })
    ));
}

#[tokio::test]
async fn without_an_allow_list_loopback_is_refused_before_connecting() {
    let receiver = Receiver::status(200).await;
    let guarded = client("");
    for host in ["127.0.0.1", "localhost", "127.1", "[::ffff:127.0.0.1]"] {
        let url = receiver.url(host);
        let check = guarded.check_url(&url).await;
        assert!(
            matches!(check, Err(DispatchError::AddressRefused { .. })),
            "{host}: {check:?}"
        );
        let result = post(&guarded, &url).await;
        match &result {
            Err(DispatchError::AddressRefused {
                host: named,
                refusal,
                ..
            }) => {
                if host == "localhost" {
                    assert_eq!(named, "localhost");
                }
                assert!(refusal.to_string().contains("loopback"), "{refusal}");
            }
            other => panic!("{host}: {other:?}"),
        }
        assert_eq!(
            outcome(&result),
            Outcome::Error {
                kind: ErrorKind::RefusedByPolicy
            }
        );
        let handshake = guarded
            .validate_endpoint(&url, "opal.example.com", None, TIMEOUT)
            .await;
        assert!(matches!(
            handshake,
            Err(DispatchError::AddressRefused { .. })
        ));
    }
    assert_eq!(receiver.hits(), 0, "a refused URL reached the receiver");
}

#[tokio::test]
async fn the_refusal_names_host_address_and_range() {
    let receiver = Receiver::status(200).await;
    let err = post(&client(""), &receiver.url("localhost"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("refused localhost: "), "{text}");
    assert!(text.contains("loopback"), "{text}");
    assert!(text.contains("127.0.0.1") || text.contains("::1"), "{text}");
    assert_eq!(receiver.hits(), 0);
}

#[tokio::test]
async fn with_loopback_allowed_both_spellings_are_delivered() {
    let receiver = Receiver::status(200).await;
    let allowed = client(LOOPBACK_ONLY);
    for host in ["127.0.0.1", "localhost"] {
        let url = receiver.url(host);
        allowed.check_url(&url).await.unwrap();
        let result = post(&allowed, &url).await;
        assert_eq!(outcome(&result), Outcome::Delivered, "{host}: {result:?}");
    }
    assert_eq!(receiver.hits(), 2);
}

#[tokio::test]
async fn non_http_urls_and_credentials_are_refused() {
    let receiver = Receiver::status(200).await;
    let allowed = client(LOOPBACK_ONLY);
    for url in [
        format!("ftp://127.0.0.1:{}/", receiver.port),
        format!("http://user:pw@127.0.0.1:{}/", receiver.port),
    ] {
        let url = Url::parse(&url).unwrap();
        let result = post(&allowed, &url).await;
        assert!(
            matches!(result, Err(DispatchError::UrlRefused { .. })),
            "{url}: {result:?}"
        );
    }
    assert_eq!(receiver.hits(), 0);
}
