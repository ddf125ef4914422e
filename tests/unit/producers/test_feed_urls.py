import pytest

from producers.urls import (
    address_refusal,
    canonicalize,
    feed_address,
    host_key,
    host_of,
    outlet_from_host,
    unwrap_redirect,
)


def test_canonicalize_drops_tracking_fragment_and_lowercases_host():
    url = "HTTPS://WWW.Example.COM:443/News/Story?id=7&utm_source=rss&fbclid=abc&gclid=x#comments"
    assert canonicalize(url) == "https://www.example.com/News/Story?id=7"


def test_canonicalize_keeps_content_parameters_sorted_and_default_port_dropped():
    assert canonicalize("http://a.org:80/p?b=2&a=1&utm_medium=x") == "http://a.org/p?a=1&b=2"
    assert canonicalize("http://a.org:8080/p") == "http://a.org:8080/p"
    assert canonicalize("https://a.org") == "https://a.org/"


def test_canonicalize_same_article_different_tracking_is_equal():
    a = canonicalize("https://news.site/a/1?utm_campaign=x&mc_cid=1")
    b = canonicalize("https://NEWS.site/a/1#top")
    assert a == b


def test_canonicalize_leaves_non_http_alone():
    assert canonicalize(" mailto:x@y.z ") == "mailto:x@y.z"


def test_a_feed_address_is_one_however_its_scheme_host_port_or_fragment_are_spelt():
    for spelt in ("HTTP://Example.COM/feed", "http://example.com/feed#top",
                  "http://example.com:80/feed", " http://example.com./feed "):
        assert feed_address(spelt) == "http://example.com/feed"
    # The rest as given: a feed's server may tell a path's or a query's case apart, and
    # what canonicalize drops (tracking names, the query's order) may select the feed.
    assert feed_address("https://u:P@Ex.com:443?B=1&a=2&ref=x#x") == "https://u:P@ex.com/?B=1&a=2&ref=x"
    assert feed_address("http://[::1]:8080/Feed") == "http://[::1]:8080/Feed"
    assert feed_address(" feed://x.example/rss ") == "feed://x.example/rss"
    # A port past 65535 is no default port: kept, to fail as given (not asked at :80).
    assert feed_address("http://A.example:99999/f") == "http://A.example:99999/f"


def test_hosts_and_outlets():
    assert host_of("https://WWW.BBC.co.uk/news") == "www.bbc.co.uk"
    assert outlet_from_host("www.bbc.co.uk") == "bbc.co.uk"
    assert outlet_from_host("example.com") == "example.com"


def test_a_host_key_is_the_host_and_port_asked_the_default_port_made_explicit():
    assert host_key("http://A.com/x") == host_key("http://a.com:80/") == "a.com:80"
    assert host_key("https://publisher.com/") == "publisher.com:443"
    assert host_key("https://publisher.com:8443/") == "publisher.com:8443"
    assert host_key("http://127.0.0.1:8001/f.xml") != host_key("http://127.0.0.1:8002/f.xml")
    assert host_key("http://user:pw@[::1]:8080/") == "[::1]:8080"
    assert host_key("not a url") == host_key("http://a.com:99999/") == ""


def test_an_international_host_name_is_one_host_in_either_form():
    """"bücher.example" and "xn--bcher-kva.example" are one server: two pauses, two
    slots and two robots.txt entries were kept for it, one per spelling."""
    assert host_key("http://bücher.example/a") == host_key("http://xn--bcher-kva.example/b") \
        == host_key("http://BÜCHER.example:80/") == "xn--bcher-kva.example:80"
    assert host_key("https://bücher.example/") == "xn--bcher-kva.example:443"
    # A name IDNA cannot encode (a label over 63 characters) is kept as it is, for its
    # fetch to fail on: it raised UnicodeError out of the fetcher.
    too_long = "ü" * 70 + ".example"
    assert host_key(f"http://{too_long}/") == f"{too_long}:80"
    assert canonicalize(f"http://{too_long}/") == f"http://{too_long}/"


def test_address_refusal_blocks_private_ranges_unless_allowed():
    for ip in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.5", "169.254.1.1", "::1",
               "fc00::1", "fec0::1", "100.64.1.1", "0.0.0.0", "::ffff:127.0.0.1"):
        assert address_refusal(ip, allow_private=False), ip
        assert address_refusal(ip, allow_private=True) is None, ip
    assert address_refusal("93.184.216.34", allow_private=False) is None


def test_a_private_address_refused_names_the_setting_that_allows_it():
    for ip in ("127.0.0.1", "10.1.2.3", "fe80::1", "224.0.0.1"):
        assert "NEWSFLOW_FETCH_ALLOW_PRIVATE=true" in (address_refusal(ip, allow_private=False) or "")
    # Metadata addresses stay refused whatever the setting: it is not offered there.
    metadata = address_refusal("169.254.169.254", allow_private=False) or ""
    assert "metadata" in metadata and "NEWSFLOW_FETCH_ALLOW_PRIVATE" not in metadata


def test_metadata_addresses_are_refused_even_when_private_is_allowed():
    for ip in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200"):
        assert "metadata" in (address_refusal(ip, allow_private=True) or "")


def test_azures_wireserver_and_oracles_classic_metadata_address_are_refused():
    """Azure's WireServer (168.63.129.16: the VM agent's goal state and extension
    settings) is a public address, so nothing refused it, and Oracle Cloud Classic's
    metadata service (192.0.0.192) is not among the ranges Python calls private: a feed's
    link to either was fetched, and its answer published as an article."""
    from producers.fetch import Fetcher, FetchError

    for ip in ("168.63.129.16", "192.0.0.192", "::ffff:168.63.129.16"):
        for allow_private in (False, True):
            assert "metadata" in (address_refusal(ip, allow_private=allow_private) or ""), ip
    with Fetcher(user_agent="newsflow-test") as fetcher:
        with pytest.raises(FetchError) as refused:
            fetcher.get("http://168.63.129.16/machine?comp=goalstate")
    assert refused.value.kind == "blocked"


def test_ipv4_inside_ipv6_is_judged_as_ipv4():
    # 6to4 and Teredo forms of the metadata address and of loopback
    assert "metadata" in address_refusal("2002:a9fe:a9fe::1", allow_private=True)
    assert address_refusal("2002:7f00:1::1", allow_private=False)
    assert address_refusal("::ffff:127.0.0.1", allow_private=False)


def test_ipv4_in_the_last_32_bits_of_nat64_translated_and_compatible_forms_is_ipv4():
    """With private addresses allowed, the metadata address written in these forms got
    through (a NAT64 gateway reaches it from 64:ff9b::a9fe:a9fe)."""
    for ip in ("64:ff9b::a9fe:a9fe", "::a9fe:a9fe", "::ffff:0:a9fe:a9fe"):
        assert "metadata" in (address_refusal(ip, allow_private=True) or ""), ip
    assert "10.0.0.1" in (address_refusal("64:ff9b::a00:1", allow_private=False) or "")
    assert address_refusal("64:ff9b::5db8:d822", allow_private=False) is None  # public
    assert "loopback" in (address_refusal("::1", allow_private=False) or "")


def test_a_missing_public_suffix_list_is_not_fetched_but_said(tmp_path, monkeypatch, caplog):
    """For a missing list file (an install without tld's data), tld fetched it from
    publicsuffix.org, with no timeout (a network that drops packets held the poll thread
    for ever), into its own install; offline, every lookup then failed with a TypeError,
    and no entry of any feed became an article (its site is checked). The list comes from
    the installed file only: a missing one is an error that says so, and nothing is asked
    of the network (which tld logs, succeeding or not)."""
    import logging

    import tld.utils
    from tld.exceptions import TldIOError

    from newsflow.schemas import registrable_domain

    missing = tmp_path / "effective_tld_names.dat.txt"
    monkeypatch.setattr(tld.utils.MozillaTLDSourceParser, "local_path", str(missing))
    registrable_domain.cache_clear()
    try:
        with caplog.at_level(logging.DEBUG, logger="tld"), \
                pytest.raises(TldIOError, match=f"Public Suffix List .*{missing}"):
            registrable_domain("rss.cnn.com")
        assert [r.getMessage() for r in caplog.records if r.name.startswith("tld")] == []
        assert not missing.exists()
    finally:
        registrable_domain.cache_clear()
    monkeypatch.undo()
    assert registrable_domain("rss.cnn.com") == "cnn.com"


def test_a_google_redirect_is_unwrapped_to_the_address_it_leads_to():
    alert = ("https://www.google.com/url?rct=j&sa=t&url=https://investorplace.com/2019/07/"
             "slack-stock-truly-compelling/&ct=ga&usg=AFQjCNEZXRySX8eW_IyksUe5d7lidLUXxg")
    assert unwrap_redirect(alert) == "https://investorplace.com/2019/07/slack-stock-truly-compelling/"
    assert unwrap_redirect("https://www.google.de/url?q=http%3A%2F%2Fa.example%2Fx") == "http://a.example/x"
    assert unwrap_redirect("https://google.co.uk/url?url=https://a.example/") == "https://a.example/"
    # Anything else is left as it is: another path of Google's, a target that is no web
    # address, another host's /url.
    for url in ("https://www.google.com/search?q=slack", "https://google.com/url?url=javascript:x",
                "https://example.com/url?url=https://a.example/", "https://www.google.com/url",
                "https://google.example.net/url?url=https://a.example/"):
        assert unwrap_redirect(url) == url
