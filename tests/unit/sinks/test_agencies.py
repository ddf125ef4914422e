"""Wire-agency recognition: datelines, bylines, source fields; mentions do not count."""

from __future__ import annotations

from pathlib import Path

import pytest

from sinks.agencies import agency_of_source, count_reporters, outlet_of, recognise_agencies

SEEDS = Path(__file__).resolve().parents[3] / "seeds"


def test_the_afp_seed_is_recognised_by_its_dateline() -> None:
    path = SEEDS / "002_dd6372bf12c42b91.txt"
    if not path.exists():
        pytest.skip(f"seed article {path} is missing")
    text = path.read_text(encoding="utf-8")
    # The text also says "A Syrian military source told AFP" and carries an
    # "(AFP Photo/)" caption: only the dateline is authorship, and it names AFP once.
    assert recognise_agencies(source="yahoo.com", text=text) == ("AFP",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("WASHINGTON (Reuters) - The Federal Reserve said...", ("Reuters",)),
        ("PARIS, Oct 8 (Reuters) \u2014 France said...", ("Reuters",)),
        ("NEW YORK (AP) \u2014 A man was shot...", ("AP",)),
        ("BERLIN (dpa/AFP) - Die Regierung...", ("AFP", "dpa")),
        ("By The Associated Press\n\nA storm hit the coast.", ("AP",)),
        ("By John Smith, Reuters\nLONDON - Shares fell.", ("Reuters",)),
        ("A Syrian military source told AFP that troops advanced.", ()),
        ("Officials told Reuters (on condition of anonymity) that", ()),
        ("Nothing about agencies here (really) - none.", ()),
    ],
)
def test_datelines_and_bylines(text: str, expected: tuple[str, ...]) -> None:
    assert recognise_agencies(source="example.org", text=text) == expected


def test_source_and_author_fields() -> None:
    assert agency_of_source("Reuters") == "Reuters"
    assert agency_of_source("https://uk.reuters.com/article/x") == "Reuters"
    assert agency_of_source("www.apnews.com") == "AP"
    assert agency_of_source("Agence France-Presse") == "AFP"
    assert agency_of_source("theguardian.com") is None
    assert agency_of_source("rap.example") is None
    assert recognise_agencies(source="bbc.co.uk", author="Associated Press") == ("AP",)
    assert recognise_agencies(source="bbc.co.uk", author="Jane Doe") == ()


def test_counting_agencies_and_outlets() -> None:
    agencies, outlets = count_reporters(
        [
            ("www.Yahoo.com", None, ("AFP",)),
            ("yahoo.com", None, ("AFP",)),  # the same outlet twice
            ("Reuters", None, ("Reuters",)),  # an agency is not also an outlet
            (None, "https://www.bbc.co.uk/news/1", ()),
        ]
    )
    assert agencies == {"AFP", "Reuters"}
    assert outlets == {"Yahoo.com", "bbc.co.uk"}
    assert outlet_of(None, None) is None


def test_a_source_given_with_its_port_is_the_same_outlet() -> None:
    # gva-dev's archived pages name their source "www.freep.com:80" beside "www.freep.com":
    # one outlet was counted as two (80 of its incidents said more outlets than they had).
    _, outlets = count_reporters(
        [("www.freep.com:80", None, ()), ("www.freep.com", None, ()),
         ("example.co.uk:8080", None, ()), (None, "http://www.bbc.co.uk:80/news/1", ())]
    )
    assert outlets == {"freep.com", "example.co.uk", "bbc.co.uk"}
    assert outlet_of("Radio 4: Today") == "Radio 4: Today"  # a name, not a host: as it is
    assert outlet_of("WWW.Freep.com:80") == "Freep.com"


def test_an_outlet_is_shown_in_its_own_case_and_counted_once_in_any() -> None:
    # Outlets were lower-cased ("local test") in the API, the page and `newsflow incident`,
    # beside sources in the feed's case ("Local Test").
    for articles in ([("Local Test", None, ()), ("local test", None, ())],
                     [("local test", None, ()), ("Local Test", None, ())]):
        assert count_reporters(articles) == (set(), {"Local Test"})
    _, outlets = count_reporters([("Коммерсантъ", None, ()), ("КОММЕРСАНТЪ", None, ()),
                                  ("The Japan Times", None, ()), ("AFP", None, ("AFP",))])
    assert outlets == {"КОММЕРСАНТЪ", "The Japan Times"}
    # Turkish I's and Greek accents, which lower() left apart, are one outlet too.
    _, outlets = count_reporters([("İstanbul Haber", None, ()), ("ISTANBUL HABER", None, ()),
                                  ("Καθημερινά Νέα", None, ()), ("ΚΑΘΗΜΕΡΙΝΑ ΝΕΑ", None, ())])
    assert outlets == {"ISTANBUL HABER", "ΚΑΘΗΜΕΡΙΝΑ ΝΕΑ"}
