from datetime import UTC, datetime, timedelta

from newsflow.schemas import Explanation, IncidentArticle
from processors.assemble import apply_decision, headline_words

T0 = datetime(2015, 10, 8, 9, tzinfo=UTC)


def art(article_id: str, hours: int, title: str = "", duplicate_of: str | None = None):
    return IncidentArticle(
        id=article_id,
        title=title or f"title {article_id}",
        published=T0 + timedelta(hours=hours),
        duplicate_of=duplicate_of,
        explanation=Explanation(decision="new"),
    )


def test_first_article_creates_version_one():
    [incident] = apply_decision({}, art("a", 0), "inc-a", {}, T0)
    assert incident.incident_id == "inc-a"
    assert incident.version == 1
    assert incident.title == "title a"
    assert incident.first_seen == incident.last_seen == T0


def test_joining_bumps_version_and_extends_time_span():
    [first] = apply_decision({}, art("a", 0), "inc-a", {}, T0)
    [second] = apply_decision({"inc-a": first}, art("b", 5), "inc-a", {}, T0)
    assert second.version == 2
    assert [a.id for a in second.articles] == ["a", "b"]
    assert second.last_seen == T0 + timedelta(hours=5)


def test_a_report_dated_far_ahead_of_when_it_was_seen_counts_as_seen_then():
    """A feed dating a report 2999 made its incident "first seen" and "last seen" in 2999
    (and sorted the report after every later one); the stage clusters it as seen then."""
    future = art("b", 0).model_copy(update={"published": datetime(2999, 1, 1, tzinfo=UTC),
                                            "seen_at": T0 + timedelta(hours=2)})
    [first] = apply_decision({}, art("a", 0), "inc-a", {}, T0)
    [second] = apply_decision({"inc-a": first}, future, "inc-a", {}, T0)
    [third] = apply_decision({"inc-a": second}, art("c", 5), "inc-a", {}, T0)
    assert (third.first_seen, third.last_seen) == (T0, T0 + timedelta(hours=5))
    assert [a.id for a in third.articles] == ["a", "b", "c"]
    # (An hour ahead is a clock's skew, not a wrong date: taken as it is.)
    near = art("d", 0).model_copy(update={"published": T0 + timedelta(minutes=50),
                                          "seen_at": T0})
    [alone] = apply_decision({}, near, "inc-d", {}, T0)
    assert alone.first_seen == T0 + timedelta(minutes=50)


def test_title_comes_from_the_earliest_original_not_a_duplicate():
    [first] = apply_decision({}, art("b", 3, "later"), "inc-b", {}, T0)
    [second] = apply_decision(
        {"inc-b": first}, art("c", 1, "copy", duplicate_of="b"), "inc-b", {}, T0
    )
    assert second.title == "later"


def test_a_real_headline_is_preferred_to_a_title_cut_from_a_lead():
    derived = art("a", 0, "Syrian troops and allied militia backed by a fresh wave of")
    derived.title_derived = True
    [first] = apply_decision({}, derived, "inc-a", {}, T0)
    assert first.title.startswith("Syrian troops")  # the only one there is
    [second] = apply_decision({"inc-a": first}, art("b", 1, "Syria army in vast offensive"), "inc-a", {}, T0)
    assert second.title == "Syria army in vast offensive"


def test_merge_moves_articles_and_retires_the_emptied_incident():
    [one] = apply_decision({}, art("a", 0), "inc-a", {}, T0)
    [two] = apply_decision({}, art("b", 1), "inc-b", {}, T0)
    state = {"inc-a": one, "inc-b": two}
    changed = apply_decision(state, art("c", 2), "inc-a", {"b": "inc-a"}, T0)
    by_id = {i.incident_id: i for i in changed}
    assert by_id["inc-b"].merged_into == "inc-a"
    assert by_id["inc-b"].articles == []
    assert by_id["inc-b"].version == 2
    assert [a.id for a in by_id["inc-a"].articles] == ["a", "b", "c"]
    assert changed[-1].incident_id == "inc-a"


def test_replacing_an_article_does_not_duplicate_it():
    [one] = apply_decision({}, art("a", 0), "inc-a", {}, T0)
    [again] = apply_decision({"inc-a": one}, art("a", 0), "inc-a", {}, T0)
    assert [a.id for a in again.articles] == ["a"]


def test_a_moved_article_says_which_incident_it_came_from():
    [one] = apply_decision({}, art("a", 0), "inc-a", {}, T0)
    [two] = apply_decision({}, art("b", 1), "inc-b", {}, T0)
    changed = apply_decision({"inc-a": one, "inc-b": two}, art("c", 2), "inc-a", {"b": "inc-a"}, T0)
    moved = {a.id: a for a in changed[-1].articles}
    assert moved["b"].explanation is not None and moved["b"].explanation.moved_from == "inc-b"
    assert moved["a"].explanation is not None and moved["a"].explanation.moved_from is None


def test_an_article_moved_twice_names_the_incident_it_was_first_decided_into():
    # gva-dev: reports founding inc-a were merged into inc-b, then split off into
    # inc-a-split; their "why" (decided against inc-a) said "moved here from inc-b".
    [one] = apply_decision({}, art("a", 0), "inc-a", {}, T0)
    [two] = apply_decision({}, art("b", 1), "inc-b", {}, T0)
    merged = {i.incident_id: i for i in apply_decision(
        {"inc-a": one, "inc-b": two}, art("c", 2), "inc-b", {"a": "inc-b"}, T0)}
    split = {i.incident_id: i for i in apply_decision(
        merged, art("d", 3), "inc-b", {"a": "inc-d-split"}, T0)}
    [a] = split["inc-d-split"].articles
    assert a.explanation is not None and a.explanation.moved_from == "inc-a"
    # Moved back where it was decided, it has not moved from anywhere.
    back = {i.incident_id: i for i in apply_decision(
        split, art("e", 4), "inc-a", {"a": "inc-a"}, T0)}
    [a] = [x for x in back["inc-a"].articles if x.id == "a"]
    assert a.explanation is not None and a.explanation.moved_from is None


def test_a_merged_incident_points_where_most_of_its_articles_went():
    # A merge and a split in one decision: one of b's articles went on to the split-off
    # incident, the others to the merge target.
    [a] = apply_decision({}, art("a1", 0), "inc-a", {}, T0)
    b = apply_decision({}, art("b1", 1), "inc-b", {}, T0)[-1]
    b = apply_decision({"inc-b": b}, art("b2", 2), "inc-b", {}, T0)[-1]
    b = apply_decision({"inc-b": b}, art("b3", 3), "inc-b", {}, T0)[-1]
    moved = {"b1": "inc-x-split", "b2": "inc-a", "b3": "inc-a"}
    changed = apply_decision({"inc-a": a, "inc-b": b}, art("x", 4), "inc-a", moved, T0)
    by_id = {i.incident_id: i for i in changed}
    assert by_id["inc-b"].merged_into == "inc-a"
    assert [a.id for a in by_id["inc-x-split"].articles] == ["b1"]


def _incident_of(*titles: str):
    state: dict = {}
    for n, title in enumerate(titles):
        [incident] = apply_decision(state, art(f"a{n}", n, title), "inc-a", {}, T0)
        state = {"inc-a": incident}
    return state["inc-a"]


def test_a_first_headline_that_speaks_for_none_of_the_others_gives_way():
    incident = _incident_of(
        "Accounting News Roundup: Sbarro is Bankrupt (Again)",
        "Titanfall Review Roundup",
        "Titanfall review: my buddy the robot",
        "Respawn: Titanfall's server stability is our focus",
        "Titanfall sells out at launch",
        "Xbox One gets a lift from Titanfall",
    )
    assert incident.title == "Titanfall Review Roundup"


def test_a_chinese_first_headline_that_speaks_for_none_of_the_others_gives_way():
    # Headlines written without spaces share words as the clusterer's bigrams ("地震").
    incident = _incident_of(
        "今日要闻：上海地铁新线年底通车",
        "泸定县凌晨发生6.1级地震",
        "四川泸定地震已致房屋受损",
        "泸定地震救援队伍连夜赶赴震区",
        "甘孜州泸定县地震暂无人员死亡",
    )
    assert incident.title == "泸定县凌晨发生6.1级地震"


def test_a_thai_first_headline_that_speaks_for_none_of_the_others_gives_way():
    # Thai headlines share their dictionary words ("น้ำท่วม", "เชียงใหม่").
    incident = _incident_of(
        "ธปท. คงดอกเบี้ยนโยบาย มองเศรษฐกิจไทยฟื้นตัว",
        "น้ำท่วมหนักเชียงใหม่ แม่น้ำปิงล้นตลิ่ง",
        "ผู้ว่าฯ เชียงใหม่เปิดศูนย์พักพิงผู้ประสบภัยน้ำท่วม",
        "น้ำท่วมเชียงใหม่ ระดับน้ำเริ่มทรงตัว",
        "ชาวเชียงใหม่เร่งฟื้นฟูบ้านเรือนหลังน้ำท่วม",
    )
    assert incident.title == "น้ำท่วมหนักเชียงใหม่ แม่น้ำปิงล้นตลิ่ง"
    assert headline_words("น้ำท่วมหนักเชียงใหม่") == {"น้ำท่วม", "หนัก", "เชียงใหม่"}
    # Khmer ones bigrams of their clusters, the marks kept (ផ្ទះ, house: not ផ, ទ).
    assert headline_words("ទឹកលិចផ្ទះ") == {"ទឹក", "កលិ", "លិច", "ចផ្ទះ"}


def test_the_first_headline_stands_while_a_third_of_the_others_share_its_words():
    incident = _incident_of(
        "4 teens shot in Oceanside park",
        "Oceanside park shooting: two dead",
        "Police name victims",
        "Vigil held for victims",
        "Suspect arrested after deaths",
    )
    assert incident.title == "4 teens shot in Oceanside park"


def test_with_three_headlines_there_are_too_few_to_tell_the_odd_one_out():
    incident = _incident_of(
        "Sbarro is bankrupt again",
        "Titanfall review roundup",
        "Titanfall sells out",
    )
    assert incident.title == "Sbarro is bankrupt again"
