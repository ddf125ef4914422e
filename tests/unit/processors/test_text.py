from pathlib import Path

from processors.text import clean_text, derive_title

SEEDS = Path(__file__).resolve().parents[3] / "seeds"


def test_leave_a_reply_removed_on_its_own_line_and_glued_to_a_sentence():
    text = (
        "Rebels held the town on Friday.\n"
        "Assad's government also relies on support from Hezbollah.Leave a Reply\n"
        "Leave a Reply"
    )
    cleaned = clean_text(text)
    assert "Leave a Reply" not in cleaned
    assert cleaned.endswith("support from Hezbollah.")
    assert "Rebels held the town on Friday." in cleaned


def test_gallery_counter_byline_and_captions_removed():
    text = (
        "Maya Gebeily with Bryan McManus in Brussels\n"
        "1 / 5\n\n"
        "A handout picture released by the official news agency shows army units at a position "
        "in the west on October 8, 2015\n\n"
        "A handout picture released by the official news agency shows army units at a position "
        "in the west on October 8, 2015 (AFP Photo/)\n\n"
        "Beirut (AFP) - Regime troops advanced on Thursday in a vast offensive against rebels.\n\n"
        "By John Smith\n\n"
        "The army said it had seized most of the hilly region."
    )
    cleaned = clean_text(text)
    assert cleaned.split("\n\n") == [
        "Beirut (AFP) - Regime troops advanced on Thursday in a vast offensive against rebels.",
        "The army said it had seized most of the hilly region.",
    ]


def test_first_line_repeating_the_title_and_page_furniture_removed():
    title = "Two hurt in warehouse fire"
    text = (
        "Two hurt in warehouse fire\n"
        "Share this article\n"
        "Two workers were hurt when fire swept through a warehouse on Elm Street.\n"
        "Sign up for our newsletter and get the top headlines delivered to your inbox.\n"
        "We use cookies to improve your experience. Read our cookie policy.\n"
        "Already a subscriber? Log in here.\n"
        "The cause is under investigation, the fire chief said."
    )
    assert clean_text(text, title) == (
        "Two workers were hurt when fire swept through a warehouse on Elm Street.\n\n"
        "The cause is under investigation, the fire chief said."
    )


def test_reporting_is_kept_even_when_it_mentions_registering_or_photos():
    text = (
        "The man had failed to register as a sex offender, police said.\n"
        "Officers released a photo of the suspect on Monday."
    )
    assert clean_text(text) == text.replace("\n", "\n\n")


def test_title_line_is_taken_when_it_looks_like_a_title():
    title, body = derive_title((SEEDS / "002_dd6372bf12c42b91.txt").read_text(encoding="utf-8"))
    assert title == "Syria army in 'vast offensive' backed by Russian strikes"
    assert body.lstrip().startswith("Maya Gebeily")


def test_title_is_derived_from_a_dateline_lead():
    title, body = derive_title((SEEDS / "000_bb8b3b49fe888184.txt").read_text(encoding="utf-8"))
    assert title.startswith("Syrian troops and allied militia backed by")
    assert "DAMASCUS" not in title
    assert len(title.split()) <= 12
    assert body.startswith("DAMASCUS")  # nothing of the article is lost


def test_short_lead_sentence_becomes_the_whole_title():
    title, body = derive_title("Police said the man was arrested. He was charged on Monday.")
    assert title == "Police said the man was arrested"
    assert body == "Police said the man was arrested. He was charged on Monday."


def test_empty_text():
    assert derive_title("") == ("", "")
    assert clean_text("") == ""


def test_a_scraped_video_playlist_is_not_the_article() -> None:
    text = (
        "1:11 Coach explains how the team reached the tournament Pause\n\n"
        "0:48 Council member calls out the county on road problems\n\n"
        "1:13 VIDEO: Giant anteater born at the zoo\n\n"
        "Four teenagers were shot as they left a party early Sunday.\n\n"
        "10:32 GMT The minister said talks would resume on Monday.\n\n"
        "10:40 GMT Delegations arrived at the venue.\n\n"
        "10:52 GMT The talks began."
    )
    assert clean_text(text) == (
        "Four teenagers were shot as they left a party early Sunday.\n\n"
        "10:32 GMT The minister said talks would resume on Monday.\n\n"
        "10:40 GMT Delegations arrived at the venue.\n\n"
        "10:52 GMT The talks began."
    )
