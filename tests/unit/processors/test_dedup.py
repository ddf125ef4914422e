from processors.dedup import DuplicateIndex, minhash, signature_similarity
from processors.features import canonical_url, extract

BODY = (
    "A fire tore through the Acme Logistics warehouse on Elm Street early Tuesday, injuring "
    "two workers, fire chief Maria Lopez said. About 40 firefighters fought the blaze for "
    "three hours before bringing it under control. The two injured workers were taken to "
    "Mercy Hospital with burns. Lopez said the cause of the fire was under investigation."
)
OTHER = (
    "The city council voted 5-2 on Monday night to approve a $12 million school budget, "
    "ending weeks of debate over teacher salaries and bus routes. Mayor Tom Becker said the "
    "plan would hire 30 new teachers. Opponents argued the budget relied on optimistic tax "
    "revenue forecasts and would force cuts next year."
)


def test_canonical_url_ignores_scheme_www_tracking_and_archive_prefix():
    assert canonical_url("https://www.Example.com/a/b/?utm_source=x&id=3") == "example.com/a/b?id=3"
    assert canonical_url("http://example.com/a/b?id=3#top") == "example.com/a/b?id=3"
    assert (canonical_url("http://web.archive.org/web/20160101000000/http://example.com/a/b?id=3")
            == "example.com/a/b?id=3")
    assert canonical_url(None) is None
    # No web page: another scheme, or no host.
    for url in ("javascript:alert(1)", "mailto:a@b.example", "urn:uuid:1", "tag:a.example,2024:1",
                "data:text/html,x", "ftp://a.example/x", "https:///path", "http://"):
        assert canonical_url(url) is None, url
    # A host and port, or an address without its scheme, are the web's.
    assert canonical_url("example.com:8080/a") == canonical_url("//example.com/a") == "example.com/a"
    assert canonical_url("https://example.com/a") != canonical_url("https://example.com/b")


def test_plain_addresses_are_read_as_urlsplit_reads_them_and_the_rest_left_to_it():
    # canonical_url's fast path (``_plain_address``) takes an address only where urlsplit's
    # host and path are the plain split at the first slash; each other is left to urlsplit.
    # (Checked against the function before it on every address of the dev files and tests
    # and 560K random ones: all the same.)
    from urllib.parse import urlsplit

    from processors.features import _plain_address

    taken = ["https://Example.COM/a/B/", "http://example.com", "http://www.a.example/x;p=1",
             "http://a.example//x/%2F", "http://a.example/\\x", "http://a.example:80/x",
             "http://a-b.example:/x"]
    for url in taken:
        parts = urlsplit(url)
        assert _plain_address(url) == ((parts.hostname or "").lower(), parts.path), url
    left = ["HTTP://a.example/", "http://a.example/x?id=3", "http://a.example/x#top",
            "http://u@a.example/", "http://a.example:8o/", "http://a:1:2/", "http://[::1]/",
            "http://[::1/", "https:///path", "http://", "http://a_b.example/",
            "http://%41.example/", "http://a.example\\b/", "http://a.example/x y",
            "http://a.example/\tx", "http://\x00a.example/", "http://é.example/",
            "http://a.example/é", "//a.example/x", "ftp://a.example/x"]
    for url in left:
        assert _plain_address(url) is None, url
    assert canonical_url("https://www.Example.com/a/index.html") == "example.com/a"
    assert canonical_url("http://m.example.com/a/b/amp/") == "example.com/a/b"


def test_minhash_estimates_jaccard():
    a = extract("t", BODY)
    b = extract("t", BODY.replace("early Tuesday", "early on Tuesday"))
    c = extract("t", OTHER)
    same = signature_similarity(minhash(a.shingles), minhash(a.shingles))
    near = signature_similarity(minhash(a.shingles), minhash(b.shingles))
    far = signature_similarity(minhash(a.shingles), minhash(c.shingles))
    assert same == 1.0
    assert 0.6 <= near < 1.0
    assert far < 0.1


def test_minhash_is_stable_across_calls():
    sig = minhash(extract("t", BODY).shingles)
    assert sig.tolist() == minhash(extract("t", BODY).shingles).tolist()


def test_minhash_is_its_definition_whatever_the_arrays_layout():
    # Each of the signature's values: the least (a * shingle + b) mod 2**64 over the
    # shingles, for that permutation's a and b, its top 32 bits. Worked out in Python's
    # integers here, so that a faster layout of the arrays (a row per permutation, as now)
    # cannot change a signature, and with it which articles are near copies.
    from processors.dedup import _A, _B, MAX_SHINGLES

    shingles = extract("t", BODY).shingles
    kept = [int(x) for x in shingles[:MAX_SHINGLES]]
    expected = [min((int(a) * x + int(b)) % 2**64 for x in kept) >> 32 for a, b in zip(_A, _B, strict=True)]
    assert minhash(shingles).tolist() == expected


def test_index_finds_url_content_and_near_copies_and_forgets_removed():
    index = DuplicateIndex()
    orig = extract("Warehouse fire injures two", BODY)
    index.add("a", "example.com/fire", orig, minhash(orig.shingles))

    by_url = index.find("example.com/fire", extract("Other", OTHER), None)
    assert by_url is not None and (by_url.original_id, by_url.kind) == ("a", "url")

    same = extract("Warehouse fire injures two", BODY)
    by_text = index.find(None, same, minhash(same.shingles))
    assert by_text is not None and (by_text.original_id, by_text.kind) == ("a", "content")

    edited = extract("Warehouse fire injures two workers",
                     BODY.replace("three hours", "3 hours") + " Copyright Example Media.")
    near = index.find(None, edited, minhash(edited.shingles))
    assert near is not None and near.kind == "near" and near.similarity >= 0.7

    unrelated = extract("Council approves budget", OTHER)
    assert index.find("example.com/budget", unrelated, minhash(unrelated.shingles)) is None

    index.remove("a")
    assert len(index) == 0
    assert index.find("example.com/fire", same, minhash(same.shingles)) is None


def test_same_body_under_unrelated_headline_is_not_a_copy():
    index = DuplicateIndex()
    orig = extract("Warehouse fire injures two", BODY)
    index.add("a", None, orig, minhash(orig.shingles))
    paywall = extract("Council approves school budget", BODY)
    assert index.find(None, paywall, minhash(paywall.shingles)) is None


def test_headline_only_copy_is_found_by_its_headline():
    index = DuplicateIndex()
    first = extract("Magnitude 6.1 earthquake shakes northern Chile", "")
    index.add("h1", None, first, None)
    again = extract("Magnitude 6.1 earthquake shakes northern Chile", "")
    match = index.find(None, again, None)
    assert match is not None and match.original_id == "h1"
    short = extract("Chile quake", "")
    index.add("h2", None, short, None)
    assert index.find(None, extract("Chile quake", ""), None) is None  # too short to trust
