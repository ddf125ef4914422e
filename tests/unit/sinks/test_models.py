from newsflow.schemas import Explanation
from sinks.models import IncidentArticleView, explain, original_of


def test_the_why_line_tells_of_merges_splits_revivals_and_moves():
    why = explain(Explanation(decision="joined", score=1.5, threshold=-2.0,
                              detail={"split_off": 3.0, "dormant_days": 41.6}))
    assert "split 3 reports (all it held then, duplicates included) off into a new incident" in why
    assert "revived an incident quiet for 42 days" in why
    merged = explain(Explanation(decision="merged", score=2.5, threshold=-2.0,
                                 detail={"merged_incidents": 1.0}))
    assert merged.endswith("merged 1 more incident(s) into it")  # (not recorded before)
    named = explain(Explanation(decision="merged", detail={"merged_incidents": 2.0},
                                merged_from=["inc-b", "inc-c"]))
    assert named.endswith("merged 2 more incident(s) into it (inc-b, inc-c)")
    moved = explain(Explanation(decision="joined", moved_from="inc-b"))
    assert moved.endswith("moved here from inc-b by a later merge or split")
    assert explain(None) == "no explanation recorded"
    # The article that split an incident and left with the reports it split off.
    left = Explanation(decision="joined", score=1.5, threshold=-2.0, detail={"split_off": 4.0},
                       moved_from="inc-a", split_into="inc-a-split")
    assert explain(left, "inc-a-split").endswith(
        "joined inc-a, then split 4 reports (all it held then, duplicates included), this one"
        " among them, off it into inc-a-split")
    # Which one, when the explanation says (it did not before split_into).
    named = explain(Explanation(decision="joined", detail={"split_off": 3.0},
                                split_into="inc-x-split"))
    assert named.endswith("split 3 reports (all it held then, duplicates included) off into inc-x-split")


def test_an_article_that_split_an_incident_and_stayed_is_not_said_to_have_left() -> None:
    # It split reports off inc-a and stayed there; a later merge moved inc-a's articles
    # into inc-b, which gave it a moved_from as well. Its why line said "this one among
    # them" of the reports it had split off, and nothing of the merge.
    stayed = Explanation(decision="joined", score=1.5, threshold=-2.0,
                         detail={"split_off": 4.0}, split_into="inc-a-split", moved_from="inc-a")
    why = explain(stayed, "inc-b")
    assert "this one among them" not in why
    assert why.endswith("split 4 reports (all it held then, duplicates included) off into"
                        " inc-a-split; moved here from inc-a by a later merge or split")


def test_an_explanation_gives_the_gap_and_the_nearer_one_from_a_named_day() -> None:
    why = Explanation(decision="joined", score=-1.2, threshold=-2.0, time_gap_hours=1440.0,
                      detail={"named_day_gap_hours": 0.0})
    # Days past two days: "1440.0 h" was left to the editor to divide.
    assert "60 days apart; 0.0 h from the day or month it names" in explain(why)
    court = Explanation(decision="joined", score=-1.2, threshold=-2.0, time_gap_hours=4800.0,
                        detail={"court_follow_up": 1.0, "named_day_gap_hours": 47.5})
    assert ("200 days apart; 47.5 h from the day or month it names; a court stage: the gap"
            " weighed less") in explain(court)


def test_an_explanation_says_the_pace_a_gap_was_counted_in_and_a_smaller_incident_passed_over():
    # (The clusterer records both in ``detail``; the why line left them out.)
    why = Explanation(decision="joined", score=0.8, threshold=-2.0, time_gap_hours=30.0,
                      detail={"pace_hours": 2.5, "smaller_incident_score": 1.234})
    assert explain(why) == (
        "joined; scored 0.80 (joins at -2.00 or more); 30.0 h apart; its reports came at least every "
        "2.5 h: the gap weighed in steps of that, not in days; taken over a smaller incident "
        "that scored 1.23: the story with more reports")
    # The least pace (2 h) of reports that came minutes apart: not said to be how often.
    minutes = Explanation(decision="joined", score=0.3, threshold=-2.0, time_gap_hours=30.0,
                          detail={"pace_hours": 2.0})
    assert "its reports came every 2.0 h" not in explain(minutes)


def test_an_explanation_says_when_there_were_too_few_words_to_compare() -> None:
    why = Explanation(decision="new", detail={"scoring_terms": 1.0})
    assert explain(why) == "new; too few terms to compare (1)"


def test_an_explanation_says_when_an_incident_in_another_language_was_passed_over() -> None:
    why = Explanation(decision="new", score=-1.93, threshold=-2.0, candidates=1,
                      shared_entities=["Donald Trump"], detail={"other_language_names": 1.0})
    assert explain(why) == (
        "new; the one earlier incident it was compared with scored -1.93 (joins at -2.00 or"
        " more); shared entities: "
        "Donald Trump; the closest is told in another language: 1 name in common, too few to "
        "join across languages")
    joined = Explanation(decision="joined", score=0.5, threshold=-2.0,
                         detail={"other_language_names": 0.0})
    assert explain(joined).endswith("; a closer one is told in another language: 0 names in "
                                    "common, too few to join across languages")


def test_a_duplicate_says_what_it_has_in_common_not_a_score_on_the_join_scale() -> None:
    # Its score is a share of matching text (0 to 1), not the join score's log-odds.
    near = Explanation(decision="duplicate", duplicate_kind="near", score=0.9531,
                       threshold=0.7, time_gap_hours=2.0, candidates=1)
    assert explain(near) == ("duplicate; a near copy: 95% of its text matches (a copy from"
                             " 70%); 2.0 h apart")
    url = Explanation(decision="duplicate", duplicate_kind="url", score=1.0, threshold=1.0)
    assert explain(url) == "duplicate; the same address"
    assert explain(url.model_copy(update={"duplicate_kind": "content"})) == (
        "duplicate; the same text")


def test_a_duplicate_names_its_original_by_source_and_title() -> None:
    def view(id: str, duplicate_of: str | None = None) -> IncidentArticleView:
        return IncidentArticleView(id=id, title=f"Title {id}", url=None, source="wral.com",
                                   published=None, seen_at=None, duplicate_of=duplicate_of,
                                   explanation=None)

    original, copy, orphan = view("a1"), view("a2", "a1"), view("a3", "gone")
    assert original_of(copy, [original, copy]) == 'wral.com: "Title a1" (a1)'
    assert original_of(orphan, [original, orphan]) == "gone"  # a split took it elsewhere


def test_a_new_incident_says_its_score_and_gap_are_the_closest_candidate_s() -> None:
    # It read "new; score -3.95 vs threshold -2.00; 24.0 h apart; 10 candidates": apart
    # from what, and the score of what?
    why = Explanation(decision="new", score=-3.95, threshold=-2.0, time_gap_hours=24.0,
                      candidates=10)
    assert explain(why) == ("new; the closest of the 10 earlier incidents it was compared"
                            " with, 24.0 h apart, scored -3.95 (joins at -2.00 or more)")
    one = Explanation(decision="new", score=-3.0, threshold=-2.0, candidates=1)
    assert explain(one) == ("new; the one earlier incident it was compared with scored -3.00"
                            " (joins at -2.00 or more)")


def test_a_new_incident_with_nothing_to_compare_with_says_so() -> None:
    # A bare "new" left an editor to wonder whether it was compared at all.
    assert explain(Explanation(decision="new")) == (
        "new; no earlier incident shares a term or name with it")
    # With too few terms it was compared with none, and says that instead.
    few = Explanation(decision="new", detail={"scoring_terms": 1.0})
    assert explain(few) == "new; too few terms to compare (1)"


def test_a_score_says_which_side_of_the_threshold_joins() -> None:
    # "score -0.88 vs threshold -2.00" left it to guess whether under or over joins.
    why = Explanation(decision="joined", score=-0.88, threshold=-2.0)
    assert explain(why) == "joined; scored -0.88 (joins at -2.00 or more)"


def test_a_split_says_what_its_count_of_reports_counts() -> None:
    # It said "split 3 report(s)" where the moved line said "1 article": the clusterer
    # counts all it held, duplicates and reports never stored with the incident too.
    why = Explanation(decision="joined", score=1.0, threshold=-2.0, split_into="inc-a-split",
                      detail={"split_off": 3.0})
    assert explain(why).endswith(
        "split 3 reports (all it held then, duplicates included) off into inc-a-split")


def test_a_join_among_one_candidate_says_so_in_the_singular() -> None:
    why = Explanation(decision="joined", score=2.0, threshold=-2.0, candidates=1)
    assert explain(why) == "joined; scored 2.00 (joins at -2.00 or more); 1 candidate"  # ("1 candidates")


def test_shared_terms_already_listed_as_entities_are_not_listed_again() -> None:
    why = Explanation(decision="joined", score=2.0, threshold=-2.0,
                      shared_entities=["Cheron Shelton", "Wilkinsburg"],
                      shared_terms=["Wilkinsburg", "ambush", "cheron shelton", "unborn"])
    assert explain(why) == ("joined; scored 2.00 (joins at -2.00 or more); shared entities: Cheron"
                            " Shelton, Wilkinsburg; shared terms: ambush, unborn")


def test_the_why_line_names_the_facts_that_moved_the_score() -> None:
    # A join on a shared street, and a shared age and a rare name: the words alone did not
    # say why it scored so.
    why = Explanation(decision="joined", score=1.0, threshold=-2.0, time_gap_hours=1.0,
                      detail={"street_match": 1.0, "age_conflict": 1.0, "name_match": 1.0,
                              "cosine": 0.2})
    assert explain(why) == ("joined; scored 1.00 (joins at -2.00 or more); 1.0 h apart; a full name"
                            " rare elsewhere in both; the same street; another age (counted"
                            " against)")


def test_a_revival_within_two_days_says_the_gap_not_zero_days():
    # Seen on a desk's first hour: feeds of several years polled at once left a day's
    # incident out of the window within minutes, and its why said "quiet for -0 days".
    before = explain(Explanation(decision="joined", score=-0.9, threshold=-2.0,
                                 detail={"dormant_days": 0.08}))
    assert ("revived an incident out of the clustering window, its latest report 1.9 h"
            " before this one") in before
    after = explain(Explanation(decision="joined", score=-1.9, threshold=-2.0,
                                detail={"dormant_days": -0.03}))
    assert "its latest report 0.7 h after this one" in after
    assert "days" not in before + after
