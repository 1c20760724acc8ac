//! The outbound HTTP client for webhooks: SSRF-guarded, never redirected, never proxied, and
//! keeping only the start of each answer.

use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};

use crate::address_policy::AddressPolicy;
use crate::error::{DispatchError, ErrorKind};
use crate::resolver::{GuardedResolver, resolve_checked};
use crate::validation::{WEBHOOK_ALLOWED_ORIGIN, WEBHOOK_ALLOWED_RATE};

/// How much of a response body is kept for the attempts log. Receivers are told to answer with
/// a short body; anything longer is cut, not buffered.
pub const MAX_KEPT_BODY: usize = 1024;

/// Settings of the client as a whole; per-request settings are arguments of the calls.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest wait for a TCP connection (and TLS handshake) before the attempt fails.
    pub connect_timeout: Duration,
    /// The `User-Agent` header of every request.
    pub user_agent: String,
    /// How long an idle pooled connection is kept for the next delivery to the same host.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host; bounds the sockets a burst to one endpoint leaves open.
    /// At least an endpoint's `max_in_flight` (up to 1000): with fewer, every round of
    /// deliveries closes connections only to open them again.
    pub pool_max_idle_per_host: usize,
    /// Extra trusted roots added to the platform's (for receivers with a private CA).
    pub extra_root_certificates: Vec<reqwest::Certificate>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("Opal-Webhooks/", env!("CARGO_PKG_VERSION")).to_owned(),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 1_024,
            extra_root_certificates: Vec::new(),
        }
    }
}

/// What an endpoint answered, reduced to what the dispatcher decides on and logs.
#[derive(Debug, Clone)]
pub struct PushResponse {
    /// The response status.
    pub status: StatusCode,
    /// The `Retry-After` header, unparsed (see [`crate::retry_after`]).
    pub retry_after: Option<String>,
    /// The `WebHook-Allowed-Origin` header.
    pub allowed_origin: Option<String>,
    /// The `WebHook-Allowed-Rate` header.
    pub allowed_rate: Option<String>,
    /// The address the request went to.
    pub remote_addr: Option<SocketAddr>,
    /// Time from starting the request (connecting included) until the response headers arrived.
    pub latency: Duration,
    /// The first [`MAX_KEPT_BODY`] bytes of the body.
    pub body: Bytes,
    /// Whether the body may go on past `body`: it was longer, its length was unknown when the
    /// limit was reached, or reading it failed (a status already received still counts).
    pub body_truncated: bool,
}

/// The webhook client. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct PushClient {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

impl PushClient {
    /// Builds the client. Redirects are not followed (Standard Webhooks treats 3xx as a failure,
    /// and a redirect to an IP literal such as `169.254.169.254` would never pass through the
    /// resolver's check), environment proxies are ignored (a proxy would make the connection
    /// for us, to addresses the resolver never saw), and reqwest's own retries are off so that
    /// each call is exactly one attempt.
    pub fn new(policy: AddressPolicy, options: ClientOptions) -> Result<Self, DispatchError> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .dns_resolver(GuardedResolver::new(Arc::clone(&policy)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .retry(reqwest::retry::never())
            .referer(false)
            .tls_backend_rustls()
            .tls_certs_merge(options.extra_root_certificates)
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(options.pool_idle_timeout)
            .pool_max_idle_per_host(options.pool_max_idle_per_host)
            .user_agent(options.user_agent)
            .build()
            .map_err(|e| DispatchError::config("push client", error_chain(&e)))?;
        Ok(PushClient { http, policy })
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Checks a callback URL without sending anything: http or https, no user name or
    /// password (they would be sent as Basic credentials to whoever answers), and a host whose
    /// addresses all pass the policy. Names are resolved here so a subscription can be refused
    /// when it is created; they are resolved and checked again on every connection, since DNS
    /// answers change.
    pub async fn check_url(&self, url: &Url) -> Result<(), DispatchError> {
        match check_url_form(&self.policy, url)? {
            Some(name) => {
                let port = url.port_or_known_default().unwrap_or(0);
                resolve_checked(&self.policy, name, port).await.map(drop)
            }
            None => Ok(()),
        }
    }

    /// Sends one webhook attempt: `POST url` with `headers` and `body`, the whole exchange
    /// (connecting, sending, and reading the kept part of the answer) bounded by `timeout`.
    pub async fn post(
        &self,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<PushResponse, DispatchError> {
        self.send(Method::POST, url, headers, Some(body), timeout)
            .await
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: HeaderMap,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<PushResponse, DispatchError> {
        // IP literals never reach the resolver, so they are checked here; names are checked by
        // the resolver, after resolution, on the addresses actually dialled.
        check_url_form(&self.policy, url)?;
        let mut request = self
            .http
            .request(method, url.clone())
            .headers(headers)
            .timeout(timeout);
        if let Some(body) = body {
            request = request.body(body);
        }
        let started = Instant::now();
        let mut response = request.send().await.map_err(classify)?;
        let latency = started.elapsed();
        let header = |name: &HeaderName| {
            response
                .headers()
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let retry_after = header(&RETRY_AFTER);
        let allowed_origin = header(&WEBHOOK_ALLOWED_ORIGIN);
        let allowed_rate = header(&WEBHOOK_ALLOWED_RATE);
        let status = response.status();
        let remote_addr = response.remote_addr();
        let (body, body_truncated) = read_start(&mut response).await;
        Ok(PushResponse {
            status,
            retry_after,
            allowed_origin,
            allowed_rate,
            remote_addr,
            latency,
            body,
            body_truncated,
        })
    }
}

/// Checks a callback URL as far as it can be without resolving names: it parses, is http or
/// https, carries no credentials, and, when its host is an IP address, the policy allows it.
/// For an early, clear refusal when an endpoint is configured; the dispatcher checks every
/// connection again.
pub fn check_callback_url(policy: &AddressPolicy, url: &str) -> Result<Url, DispatchError> {
    let parsed = Url::parse(url).map_err(|e| DispatchError::UrlRefused {
        reason: format!("not a valid URL: {e}"),
    })?;
    check_url_form(policy, &parsed)?;
    Ok(parsed)
}

/// The syntactic checks, and the policy for literal addresses. Returns the host name still to
/// be resolved, if the host is a name.
fn check_url_form<'u>(
    policy: &AddressPolicy,
    url: &'u Url,
) -> Result<Option<&'u str>, DispatchError> {
    let refused = |reason: &str| DispatchError::UrlRefused {
        reason: reason.to_owned(),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refused(&format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refused("the URL carries a user name or password"));
    }
    let host = match url.host_str() {
        None | Some("") => return Err(refused("the URL has no host")),
        Some(host) => host,
    };
    // For http(s) the URL parser has already turned every spelling of an IPv4 address
    // (`127.1`, `0x7f.0.0.1`, `2130706433`) into dotted form, and IPv6 comes in brackets, so
    // whatever does not parse as an address here is a name.
    let literal = match host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse::<IpAddr>()
    {
        Ok(ip) => ip,
        Err(_) => return Ok(Some(host)),
    };
    policy
        .check(literal)
        .map_err(|refusal| DispatchError::AddressRefused {
            host: literal.to_string(),
            addr: literal,
            refusal,
        })?;
    Ok(None)
}

/// Reads at most [`MAX_KEPT_BODY`] bytes, then stops: dropping the response closes the
/// connection instead of draining a body of any size.
async fn read_start(response: &mut reqwest::Response) -> (Bytes, bool) {
    // Asked before reading: reqwest answers from what is left of the body.
    let announced = response.content_length();
    let mut kept = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_KEPT_BODY - kept.len();
                if chunk.len() >= room {
                    kept.extend_from_slice(&chunk[..room]);
                    let exact = chunk.len() == room && announced == Some(MAX_KEPT_BODY as u64);
                    return (kept.freeze(), !exact);
                }
                kept.extend_from_slice(&chunk);
            }
            Ok(None) => return (kept.freeze(), false),
            Err(_) => return (kept.freeze(), true),
        }
    }
}

/// Turns reqwest's error into ours. A refusal or resolution failure from [`GuardedResolver`]
/// comes back wrapped inside reqwest's error and is unwrapped so callers see it as such.
fn classify(error: reqwest::Error) -> DispatchError {
    let error = error.without_url();
    if let Some(ours) = sources(&error).find_map(|e| e.downcast_ref::<DispatchError>()) {
        match ours {
            DispatchError::AddressRefused {
                host,
                addr,
                refusal,
            } => {
                return DispatchError::AddressRefused {
                    host: host.clone(),
                    addr: *addr,
                    refusal: *refusal,
                };
            }
            DispatchError::Resolve { host, reason } => {
                return DispatchError::Resolve {
                    host: host.clone(),
                    reason: reason.clone(),
                };
            }
            _ => {}
        }
    }
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else if sources(&error).any(|e| e.is::<rustls::Error>()) {
        ErrorKind::Tls
    } else if sources(&error).any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::ConnectionRefused)
    }) {
        ErrorKind::ConnectionRefused
    } else if error.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Other
    };
    DispatchError::Transport {
        kind,
        detail: error_chain(&error),
    }
}

/// The error and all its causes, outermost first. An `io::Error` wrapping another error
/// reports that error's cause as its `source`, skipping the wrapped error itself (where
/// tokio-rustls puts rustls' error), so step into it explicitly.
fn sources<'e>(
    error: &'e (dyn StdError + 'static),
) -> impl Iterator<Item = &'e (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| match e.downcast_ref::<io::Error>() {
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => e.source(),
    })
}

/// "outer: cause: root cause", skipping a cause whose text its wrapper already repeats.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = String::new();
    for e in sources(error) {
        let part = e.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn form(policy: &AddressPolicy, s: &str) -> Result<Option<String>, DispatchError> {
        let u = url(s);
        check_url_form(policy, &u).map(|name| name.map(str::to_owned))
    }

    #[test]
    fn only_http_and_https_without_credentials() {
        let p = AddressPolicy::new();
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
            "ws://example.com/",
            "https://user@example.com/",
            "https://user:pw@example.com/",
            "https://:pw@example.com/",
        ] {
            assert!(
                matches!(form(&p, bad), Err(DispatchError::UrlRefused { .. })),
                "{bad}"
            );
        }
        assert_eq!(
            form(&p, "https://example.com:8443/hook?x=1")
                .unwrap()
                .as_deref(),
            Some("example.com")
        );
        assert_eq!(form(&p, "http://8.8.8.8/").unwrap(), None);
    }

    #[test]
    fn literal_addresses_in_every_spelling_are_checked() {
        let p = AddressPolicy::new();
        // The URL parser normalises these to IP hosts, so none slips through as a "name".
        for bad in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://0x7f.0.0.1/",
            "http://2130706433/",
            "http://017700000001/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00::1]/",
        ] {
            match form(&p, bad) {
                Err(DispatchError::AddressRefused { .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        let allowed = AddressPolicy::parse_allow_list("127.0.0.0/8,::1/128").unwrap();
        assert_eq!(form(&allowed, "http://127.0.0.1:9/").unwrap(), None);
        assert_eq!(form(&allowed, "http://[::1]:9/").unwrap(), None);
    }

    #[test]
    fn refusals_read_well() {
        let p = AddressPolicy::new();
        let err = form(&p, "http://[::ffff:127.0.0.1]/").unwrap_err();
        assert_eq!(
            err.to_string(),
            "refused ::ffff:127.0.0.1: ::ffff:127.0.0.1 is in the IPv4-mapped loopback range"
        );
        assert_eq!(err.kind(), ErrorKind::RefusedByPolicy);
    }

    #[test]
    fn the_client_builds_with_defaults() {
        PushClient::new(AddressPolicy::new(), ClientOptions::default()).unwrap();
    }
}
