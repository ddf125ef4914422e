import pytest

from producers.fetch import FetchError, FetchResult
from producers.robots import RobotsCache


class RobotsAnswer:
    def __init__(self, answer: int | Exception, body: bytes = b"") -> None:
        self.answer = answer
        self.body = body
        self.asked: list[str] = []

    def get(self, url: str, **_: object) -> FetchResult:
        self.asked.append(url)
        if isinstance(self.answer, Exception):
            raise self.answer
        return FetchResult(url, url, self.answer, {}, self.body, 0.01)


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (404, "allowed"),  # no robots.txt: everything allowed
        (503, "unreachable"),  # cannot be read now: nothing allowed for now
        (429, "unreachable"),  # slow down: not "no robots.txt"
        (FetchError("timeout", "ReadTimeout"), "unreachable"),
        # A refused address: the page's own fetch is refused too, and says so.
        (FetchError("blocked", "169.254.169.254 refused: metadata"), "allowed"),
    ],
)
def test_a_missing_robots_txt_allows_and_an_unreadable_one_is_not_a_rule(answer, verdict):
    robots = RobotsCache(RobotsAnswer(answer), agent="newsflow/1.0")  # type: ignore[arg-type]
    assert robots.verdict("https://news.example/story") == verdict


def test_rules_allow_and_disallow_by_path():
    rules = b"User-agent: *\nDisallow: /private/\n"
    robots = RobotsCache(RobotsAnswer(200, rules), agent="newsflow/1.0")  # type: ignore[arg-type]
    assert robots.verdict("https://news.example/story") == "allowed"
    assert robots.verdict("https://news.example/private/story") == "disallowed"


@pytest.mark.parametrize(
    ("rules", "path", "verdict"),
    [
        # The longest matching rule wins, whatever the order (RFC 9309 2.2.2).
        ("Allow: /\nDisallow: /private/", "/private/story", "disallowed"),
        ("Disallow: /\nAllow: /news/", "/news/story", "allowed"),
        ("Disallow: /\nAllow: /news/", "/sport/story", "disallowed"),
        # * and $ are patterns, not characters.
        ("Disallow: /*?print=", "/story?print=1", "disallowed"),
        ("Disallow: /*.pdf$", "/report.pdf", "disallowed"),
        ("Disallow: /*.pdf$", "/report.pdfs/story", "allowed"),
        ("Disallow: /*/amp/", "/world/amp/story", "disallowed"),
    ],
)
def test_rules_are_read_as_rfc_9309_puts_them(rules, path, verdict):
    body = f"User-agent: *\n{rules}\n".encode()
    robots = RobotsCache(RobotsAnswer(200, body), agent="newsflow/1.0")  # type: ignore[arg-type]
    assert robots.verdict("https://news.example" + path) == verdict


def test_a_group_for_newsflow_overrides_the_general_one():
    body = b"User-agent: *\nDisallow: /\n\nUser-agent: newsflow\nAllow: /\n"
    robots = RobotsCache(RobotsAnswer(200, body), agent="newsflow/1.0")  # type: ignore[arg-type]
    assert robots.verdict("https://news.example/story") == "allowed"


def test_an_unreadable_robots_txt_says_how_long_its_answer_holds_then_is_asked_again():
    now = [0.0]
    fetcher = RobotsAnswer(503)
    robots = RobotsCache(fetcher, agent="newsflow/1.0", error_ttl_s=600,  # type: ignore[arg-type]
                         clock=lambda: now[0])
    assert robots.check("https://news.example/story") == ("unreachable", 600.0)
    now[0] = 590.0
    assert robots.check("https://news.example/other") == ("unreachable", 10.0)
    fetcher.answer = 404  # readable again: no robots.txt, all allowed
    now[0] = 600.0
    assert robots.check("https://news.example/story") == ("allowed", 24 * 3600.0)


def test_robots_txt_is_one_per_scheme_host_and_port_however_the_address_is_spelt():
    fetcher = RobotsAnswer(200, b"User-agent: *\nDisallow: /private/\n")
    robots = RobotsCache(fetcher, agent="newsflow/1.0")  # type: ignore[arg-type]
    for url in ("http://news.example/a", "http://NEWS.example:80/b", "http://u:p@news.example/c",
                "http://news.example:8080/d", "https://news.example/e"):
        robots.verdict(url)
    assert fetcher.asked == ["http://news.example/robots.txt",
                             "http://news.example:8080/robots.txt",
                             "https://news.example/robots.txt"]
