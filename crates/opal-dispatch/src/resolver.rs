//! Name resolution that enforces the address policy, for reqwest's `dns_resolver` hook.
//!
//! reqwest connects only to the addresses its resolver returns, so checking them here, after
//! resolution, leaves no gap for DNS rebinding: the address that was checked is the address
//! that is dialled. A name with any refused address is refused whole, rather than filtered,
//! so that a receiver's misconfigured DNS shows up as a clear error instead of a flaky one.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::address_policy::AddressPolicy;
use crate::error::DispatchError;

/// A [`Resolve`] implementation that resolves with the system resolver
/// (`tokio::net::lookup_host`) and fails unless every address passes the policy.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<AddressPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        GuardedResolver { policy }
    }

    /// Resolves `host` and checks every address. The ports of the result are `port`.
    pub async fn resolve_checked(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, DispatchError> {
        resolve_checked(&self.policy, host, port).await
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            // Port 0: reqwest puts in the URL's port (or the scheme's default) itself.
            let addrs = resolve_checked(&policy, name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub(crate) async fn resolve_checked(
    policy: &AddressPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, DispatchError> {
    let addrs: Vec<SocketAddr> = if policy.no_dns {
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name != "localhost" && !name.ends_with(".localhost") {
            return Err(DispatchError::Resolve {
                host: host.to_owned(),
                reason: "this server looks up no host names but localhost".to_owned(),
            });
        }
        vec![
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        ]
    } else {
        tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| DispatchError::Resolve {
                host: host.to_owned(),
                reason: e.to_string(),
            })?
            .collect()
    };
    if addrs.is_empty() {
        return Err(DispatchError::Resolve {
            host: host.to_owned(),
            reason: "no addresses".to_owned(),
        });
    }
    for addr in &addrs {
        policy
            .check(addr.ip())
            .map_err(|refusal| DispatchError::AddressRefused {
                host: host.to_owned(),
                addr: addr.ip(),
                refusal,
            })?;
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::address_policy::Range;

    // Only literal addresses and `localhost` (answered from the hosts file): no DNS traffic,
    // and nothing connects.

    #[tokio::test]
    async fn every_address_is_checked() {
        let guarded = GuardedResolver::new(Arc::new(AddressPolicy::new()));
        for host in ["127.0.0.1", "::1", "localhost"] {
            match guarded.resolve_checked(host, 80).await {
                Err(DispatchError::AddressRefused {
                    host: named,
                    refusal,
                    ..
                }) => {
                    assert_eq!(named, host);
                    assert_eq!(refusal.range, Range::Loopback);
                }
                other => panic!("{host}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn allowed_addresses_come_back_with_the_port() {
        let policy = AddressPolicy::parse_allow_list("127.0.0.0/8,::1/128").unwrap();
        let guarded = GuardedResolver::new(Arc::new(policy));
        let addrs = guarded.resolve_checked("localhost", 8080).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.port() == 8080 && a.ip().is_loopback())
        );
        let addrs = guarded.resolve_checked("127.0.0.1", 9).await.unwrap();
        assert_eq!(addrs, [SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 9)]);
    }

    #[tokio::test]
    async fn one_refused_address_refuses_the_name() {
        // Only 127.0.0.1 allowed: `localhost` passes only if it has no other address.
        let policy = AddressPolicy::parse_allow_list("127.0.0.1").unwrap();
        let guarded = GuardedResolver::new(Arc::new(policy));
        let all_v4 = tokio::net::lookup_host(("localhost", 0))
            .await
            .unwrap()
            .all(|a| a.ip() == IpAddr::from([127, 0, 0, 1]));
        let result = guarded.resolve_checked("localhost", 0).await;
        assert_eq!(result.is_ok(), all_v4, "{result:?}");
    }

    #[tokio::test]
    async fn without_dns_only_localhost_resolves_and_without_a_query() {
        let mut policy = AddressPolicy::parse_allow_list("127.0.0.0/8,::1/128").unwrap();
        policy.no_dns = true;
        let guarded = GuardedResolver::new(Arc::new(policy));
        let addrs = guarded.resolve_checked("LocalHost.", 7).await.unwrap();
        assert_eq!(
            addrs,
            [
                SocketAddr::from(([127, 0, 0, 1], 7)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 7))
            ]
        );
        assert!(guarded.resolve_checked("api.localhost", 7).await.is_ok());
        // Refused before any lookup: the name is never sent to a resolver.
        for host in ["example.com", "localhost.example.com", "internal"] {
            match guarded.resolve_checked(host, 7).await {
                Err(DispatchError::Resolve { reason, .. }) => {
                    assert!(reason.contains("no host names"), "{host}: {reason}");
                }
                other => panic!("{host}: {other:?}"),
            }
        }
    }
}
