//! A device's endpoint: an `http` or `https` base URL, checked as text and
//! against the address rules ([`super::address`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::Url;

use super::address::AddressPolicy;
use super::config::NameLookup;

/// The longest endpoint accepted.
pub const MAX_ENDPOINT_LEN: usize = 2048;
/// How long registration waits for an endpoint's name to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// `text` as an endpoint URL, or what is wrong with it (for a 400 at
/// `/endpoint`).
pub fn parse(text: &str) -> Result<Url, String> {
    if text.len() > MAX_ENDPOINT_LEN {
        return Err(format!("must be at most {MAX_ENDPOINT_LEN} characters"));
    }
    let url = Url::parse(text).map_err(|e| format!("is not a URL ({e})"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err("must be an http or https URL".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials (user:password@); give them as `headers`".into());
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or a fragment: requests bring their own query".into());
    }
    Ok(url)
}

/// `{endpoint}/{path}?{query}`: `path` (as sent, percent-encoded) below
/// the endpoint's own path.
pub fn target(endpoint: &str, path: &str, query: Option<&str>) -> Result<Url, String> {
    let mut url = parse(endpoint)?;
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}/{path}"));
    url.set_query(query);
    Ok(url)
}

/// The host of `url` as an address when it is an IP literal.
pub fn literal(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// The addresses `url` reaches now: its literal address, or its name
/// resolved; each checked against `policy`. `Err` says why not, for a 400
/// at registration or a 502 at connect time.
pub async fn resolve(url: &Url, policy: &AddressPolicy, lookup: &dyn NameLookup) -> Result<Vec<SocketAddr>, String> {
    let port = url.port_or_known_default().unwrap_or(80);
    let ips = match (literal(url), url.host_str()) {
        (Some(ip), _) => vec![ip],
        (None, Some(host)) => match tokio::time::timeout(LOOKUP_TIMEOUT, lookup.lookup(host)).await {
            Ok(Ok(ips)) if !ips.is_empty() => ips,
            Ok(Ok(_)) | Ok(Err(_)) => return Err(format!("names a host that does not resolve ({host})")),
            Err(_) => return Err(format!("names a host that did not resolve in time ({host})")),
        },
        (None, None) => return Err("must name a host".into()),
    };
    let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
    // Every address must pass: a name with one good and one refused address
    // could be steered to the refused one.
    for addr in &addrs {
        policy
            .check(*addr)
            .map_err(|refusal| format!("reaches {}: {refusal}", addr.ip()))?;
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls_without_credentials_query_or_fragment() {
        assert!(parse("http://10.0.0.1:8443/api").is_ok());
        assert!(parse("https://fw.example").is_ok());
        for bad in [
            "not a url",
            "ftp://10.0.0.1/",
            "file:///etc/passwd",
            "http://user:pass@10.0.0.1/",
            "http://user@10.0.0.1/",
            "http://10.0.0.1/?a=1",
            "http://10.0.0.1/#x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse(&format!("http://a/{}", "x".repeat(MAX_ENDPOINT_LEN))).is_err());
    }
}
