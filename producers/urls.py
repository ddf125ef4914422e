"""URL helpers: canonical form for dedup keys, hosts, and which addresses we may fetch."""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from newsflow.schemas import ascii_host, registrable_domain

# Query parameters that only track the click, never select content.
_TRACKING_EXACT = frozenset(
    {
        "fbclid", "gclid", "dclid", "gclsrc", "msclkid", "yclid", "twclid", "igshid",
        "mc_cid", "mc_eid", "_hsenc", "_hsmi", "mkt_tok", "ocid", "cmpid", "ito",
        "ns_mchannel", "ns_source", "ns_campaign", "ns_linkname", "ns_fee",
        "wt.mc_id", "at_medium", "at_campaign", "ref_src", "spm", "guccounter",
        "_ga", "_gl", "ncid", "sr_share", "ref", "cmp",
    }
)
_TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "__twitter_impression", "oly_", "vero_")

# Addresses that are cloud-instance metadata services: never fetched, whatever the settings.
# Two of them pass for public: Azure's WireServer (168.63.129.16, the VM agent's goal state
# and extension settings) and Oracle Cloud Classic's metadata (192.0.0.192).
_METADATA = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("100.100.100.200"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("168.63.129.16"),
        ipaddress.ip_address("192.0.0.192"),
    }
)

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_tracking(name: str) -> bool:
    low = name.lower()
    return low in _TRACKING_EXACT or low.startswith(_TRACKING_PREFIXES)


def canonicalize(url: str) -> str:
    """A stable form of ``url`` for dedup keys.

    Lowercases scheme and host, drops default ports, the fragment and tracking query
    parameters (utm_*, fbclid, gclid, ...), sorts what is left of the query and
    normalises percent-escapes in the path. Anything that is not http(s) is returned
    stripped but otherwise unchanged.
    """
    url = url.strip()
    split = _http_split(url)
    if split is None:
        return url
    parts, scheme, netloc = split
    path = quote(unquote(parts.path or "/"), safe="/:@!$&'()*+,;=-._~%")
    query_pairs = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)
    ]
    query = urlencode(sorted(query_pairs), doseq=True)
    return urlunsplit((scheme, netloc, path, query, ""))


def unwrap_redirect(url: str) -> str:
    """The publisher's address inside a Google redirect link, as Google Alerts feeds give
    every entry (``https://www.google.com/url?rct=j&url=https://outlet/story&usg=...``),
    else ``url`` as it is. Taken as it stood, every alert's outlet was "google.com", an
    incident of ten outlets' reports counted one, its page was Google's redirect and not
    the story, and the same story from the outlet's own feed had another address."""
    split = _http_split(url.strip())
    if split is None:
        return url
    parts, _, netloc = split
    # Google's own hosts, by the Public Suffix List: google.com, google.de, google.co.uk
    # (not google.example.net, another site).
    host = netloc.split(":")[0].removeprefix("www.")
    is_google = host.startswith("google.") and registrable_domain(host) == host
    if not is_google or parts.path != "/url":
        return url
    query = dict(parse_qsl(parts.query))
    target = (query.get("url") or query.get("q") or "").strip()
    return target if _http_split(target) is not None else url


def _http_split(url: str) -> tuple[SplitResult, str, str] | None:
    """``url``'s parts, its scheme in lower case and its host in lower case (IDNA) with
    its port unless the scheme's default; None when it is not an http(s) address."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = ascii_host(parts.hostname.lower().rstrip("."))
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts, scheme, host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"


def feed_address(url: str) -> str:
    """A feed's address as the producer keeps it, so that two spellings of one feed are
    one feed (else polled twice, and its articles published twice): the scheme and host
    in lower case, without the default port and the fragment (never sent to the server).
    The user name, path and query stay as given: a server may tell their case apart.
    Anything that is not http(s) is returned stripped."""
    url = url.strip()
    split = _http_split(url)
    if split is None:
        return url
    parts, scheme, netloc = split
    try:
        _ = parts.port
    except ValueError:  # (out of range: kept, to fail as given, not asked at port 80)
        return url
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit((scheme, f"{user}@{netloc}" if user else netloc, parts.path or "/",
                       parts.query, ""))


def host_of(url: str) -> str:
    """Lowercased host of ``url`` ('' when there is none)."""
    try:
        return (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return ""


def host_key(url: str) -> str:
    """The host and port ``url`` is asked at, the default port made explicit:
    'http://A.com/x' and 'http://a.com:80/' are both 'a.com:80', '[::1]:8080' an IPv6 one,
    'http://bücher.example/' 'xn--bcher-kva.example:80' ('' when there is no host). What
    politeness counts by: a Retry-After from one port of a host says nothing about its
    others."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return ""
    if not host:
        return ""
    host = ascii_host(host.lower().rstrip("."))
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme.lower())
    return host if port is None else f"{host}:{port}"


def outlet_from_host(host: str) -> str:
    """A readable source name from a host: 'www.bbc.co.uk' -> 'bbc.co.uk'."""
    for prefix in ("www.", "www1.", "www2.", "m.", "amp.", "feeds.", "rss."):
        if host.startswith(prefix) and host.count(".") > 1:
            return host[len(prefix):]
    return host


def is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


# IPv6 forms whose last 32 bits are an IPv4 address: NAT64's well-known prefix (RFC 6052),
# IPv4-translated (RFC 2765) and IPv4-compatible (deprecated; "::" and "::1" excepted).
_CARRIES_IPV4_LAST = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "::ffff:0:0:0/96", "::/96"))


def address_refusal(ip: str, *, allow_private: bool) -> str | None:
    """Why connecting to ``ip`` is refused, or None when it is allowed.

    Cloud metadata addresses are always refused. Loopback, private, link-local,
    shared (CGNAT), reserved and multicast addresses are refused unless
    ``allow_private`` (tests and private deployments).
    """
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return f"not an IP address: {ip}"
    if isinstance(addr, ipaddress.IPv6Address):
        # IPv4 addresses carried inside IPv6 ones (mapped, 6to4, Teredo, and in the last 32
        # bits NAT64's prefix, the translated and the old compatible forms) are judged as
        # IPv4: "64:ff9b::a9fe:a9fe" reaches the metadata address through a NAT64 gateway.
        embedded = addr.ipv4_mapped or addr.sixtofour or (addr.teredo[1] if addr.teredo else None)
        if embedded is None and any(addr in net for net in _CARRIES_IPV4_LAST) and int(addr) > 1:
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            addr = embedded
    if addr in _METADATA:
        return f"{addr} is a cloud metadata address"
    if allow_private:
        return None
    if addr.is_loopback:
        kind = "a loopback address"
    elif addr.is_link_local:
        kind = "a link-local address"
    elif addr.is_private or (
        isinstance(addr, ipaddress.IPv4Address) and addr in ipaddress.ip_network("100.64.0.0/10")
    ) or (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local):  # fec0::/10, old
        kind = "a private address"
    elif addr.is_multicast or addr.is_reserved or addr.is_unspecified:
        kind = "not a public unicast address"
    else:
        return None
    # The one setting that lifts it, named: else a feed on a local server looks unreachable.
    return f"{addr} is {kind} (NEWSFLOW_FETCH_ALLOW_PRIVATE=true allows it)"
