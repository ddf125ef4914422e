"""Article features: how a headline is weighed against the body."""

from __future__ import annotations

import math

import pytest

from processors.features import extract, surface_forms

BODY = ("Lava flowed toward the village overnight as residents fled the area and officials "
        "watched closely.")


def test_the_headline_outweighs_the_lead_when_there_is_a_body():
    # Term weights are 1 + log(boosted count): a headline word counts 3, a lead word 2
    # (once as lead, once as body).
    with_body = extract("Volcano erupts", BODY)
    assert with_body.tf["volcano"] == pytest.approx(1 + math.log(3))
    assert with_body.tf["lava"] == pytest.approx(1 + math.log(2))


def test_a_headline_alone_keeps_the_weight_its_scores_were_fitted_at():
    assert extract("Volcano erupts", "").tf["volcano"] == pytest.approx(1 + math.log(2))


def test_dates_are_read_from_the_headline_too():
    assert extract("Arrest in June 21 shooting", BODY).dates == {(6, 21, 0)}
    assert extract("Arrest in June 21 shooting", "").dates == {(6, 21, 0)}


def test_offices_jurisdictions_and_outlets_are_not_full_names():
    feats = extract(
        "Two shot in Tulsa",
        "Tulsa Police said Rico Doyle was shot near the Tulsa County courthouse. Police Chief "
        "Sean Ward told Jane Roe of the Houston Chronicle that a suspect fled to Kansas City.",
    )
    # Capitalised pairs all: a person's name stays; an office, a jurisdiction or an outlet
    # is in every story of its area, not one incident's person.
    assert {"rico doyle", "sean ward", "jane roe"} <= feats.names
    assert not {"tulsa police", "tulsa county", "police chief", "chief sean", "houston chronicle",
                "kansas city"} & feats.names
    assert "tulsa county" in feats.entities  # still a term and an entity, only not a name


def test_an_undated_article_is_extracted_without_its_dates_and_otherwise_the_same():
    # Without a publication time nothing places the dates, so they are not looked for.
    dated, undated = extract("Arrest in June 21 shooting", BODY), extract(
        "Arrest in June 21 shooting", BODY, dated=False)
    assert undated.dates == frozenset()
    assert (undated.tf, undated.entities, undated.streets, undated.names) == (
        dated.tf, dated.entities, dated.streets, dated.names)


def test_a_hyphenated_words_parts_are_the_terms_of_the_same_words_alone():
    # The parts were cut from the already stemmed word and stemmed again: "UNC-Charlotte"
    # gave "charlot", which the same city standing alone ("charlott") never matched.
    joined = extract("Shooting near UNC-Charlotte and Wilkes-Barre", "").tf
    alone = extract("Shooting near Charlotte and Barre", "").tf
    assert {"charlott", "barr"} <= joined.keys() & alone.keys()
    assert not {"charlot", "bar"} & joined.keys()


def test_an_age_spelled_out_is_the_same_term_and_age_as_in_figures():
    spelled = extract("Four-year-old boy shot", "A four-year-old boy was shot, police said.")
    figures = extract("4-year-old boy shot", "A 4-years-old boy was shot, police said.")
    assert spelled.ages == figures.ages == {"4"}
    assert "4-year-old" in spelled.tf and "4-year-old" in figures.tf
    assert "four-year-old" not in spelled.tf and "4-years-old" not in figures.tf
    # Not a number: left as it is.
    assert "many-year-old" in extract("A many-year-old feud", "").tf


def test_a_headline_naming_a_court_stage_marks_a_follow_up():
    assert extract("Man sentenced in Springfield shooting", BODY).follow_up
    assert extract("Teens charged in fatal shooting", "").follow_up  # headline alone too
    assert extract("Jury finds gunman guilty", BODY).follow_up
    # Only the headline counts, and only whole words: not "Courtney", not a body's "trial".
    assert not extract("Courtney Smith shot outside bar", "She was awaiting trial.").follow_up
    assert not extract("Man shot dead in Springfield", BODY).follow_up


def test_surface_forms_give_terms_as_the_article_writes_them():
    title = "Officer in Marksville shooting set for trial"
    text = ("MARKSVILLE, La. — Derrick Stafford's trial opens. Officers shot Jeremy Mardis in "
            "Marksville, Louisiana. The species of fisheries. Al-Assad spoke. Four-year-old hurt "
            "at Children's Hospital.")
    terms = ["marksvill", "derrick stafford", "stafford", "specy", "fishery", "assad",
             "4-year-old", "children hospital", "officer", "shoot", "no such"]
    assert surface_forms(title, text, terms) == [
        "Marksville",  # not the dateline's capitals
        "Derrick Stafford", "Stafford", "species", "fisheries", "Assad", "Four-year-old",
        "Children's Hospital",
        "Officers", "shooting",  # the last found only in the title
        "no such",
    ]


def test_a_full_name_is_shown_as_the_name_is_written_not_word_by_word():
    # Each word took its first spelling anywhere in the article, so names read as the
    # article never writes them ("Derrick's Stafford", "Lake park"; gva-dev had 416 of
    # 6,970 shared names so).
    text = ("Derrick's mother wept as Derrick Stafford entered. Children played in the park "
            "near Lake Park. Later, Mark D. Wilson spoke.")
    names = ["derrick stafford", "lake park", "mark wilson"]
    assert surface_forms("Officer on trial", text, names) == [
        "Derrick Stafford", "Lake Park", "Mark Wilson"]


def test_an_article_in_french_leaves_out_french_function_words_and_elisions():
    text = ("Un violent incendie s'est déclaré dans la nuit dans un entrepôt de Vénissieux. "
            "Les pompiers ont maîtrisé l'incendie après trois heures, selon la préfecture, "
            "et les causes de l'incendie ne sont pas encore connues.")
    feats = extract("Incendie dans un entrepôt de Vénissieux", text)
    assert not {"les", "dans", "de", "la", "ont", "sont", "pas", "selon"} & feats.tf.keys()
    assert "l'incendi" not in feats.tf and feats.tf["incendi"] > feats.tf["pompier"]
    # The same words in an English report are words like any other.
    english = extract("Selon and Dans in court", "Dans and Selon were charged on Monday.")
    assert {"dan", "selon"} <= english.tf.keys()


def test_a_term_of_a_french_article_is_shown_as_written_after_an_elision():
    # Every "incendie" of the report follows "l'": compared as "incendi", shown as written.
    text = ("Les pompiers ont maîtrisé l'incendie dans la nuit. L'origine de l'incendie "
            "reste inconnue, selon la préfecture.")
    title = "Vénissieux : l'entrepôt ravagé par l'incendie"
    terms = sorted(extract(title, text).tf.keys() & {"incendi", "entrepôt"})
    assert surface_forms(title, text, terms) == ["entrepôt", "incendie"]
    # A word written with its elision in English keeps it.
    assert surface_forms("D'Artagnan returns", "", ["d'artagnan"]) == ["D'Artagnan"]


def test_a_hindi_article_is_compared_by_whole_words_without_hindi_function_words():
    # A vowel sign is part of its word: "की" is क and ी, and was read as "क" ("गिरफ्तार" as
    # "रफ"), so Hindi reports shared pieces of words and their function words.
    title = "मुंबई में चोरी के आरोप में तीन लोग गिरफ्तार"
    text = ("मुंबई पुलिस ने रविवार को चोरी के आरोप में तीन लोगों को गिरफ्तार किया है। पुलिस के "
            "अनुसार आरोपियों के पास से नकदी और गहने बरामद किए गए हैं।")
    terms = extract(title, text).tf.keys()
    assert {"गिरफ्तार", "पुलिस", "चोरी", "नकदी"} <= terms
    assert not {"के", "में", "है", "की", "को", "ने", "से", "और"} & terms


def test_a_french_function_word_is_left_out_whichever_apostrophe_it_is_written_with():
    text = ("Le gouvernement a présenté aujourd’hui une réforme des retraites, selon le "
            "ministre. Les syndicats ont dénoncé une mesure injuste dans les transports.")
    for written in (text, text.replace("’", "'")):
        assert "aujourd'hui" not in extract("Réforme des retraites : le projet", written).tf


def test_a_copy_under_another_headline_has_the_same_fingerprint_whatever_language_is_told():
    body = ("Vers trois heures, l'incendie a ravagé l'entrepôt d'une société de logistique à "
            "Vénissieux. D'après la préfecture, l'origine reste inconnue et l'enquête a été "
            "confiée à la gendarmerie de l'Isère.")
    # "dans" tells the first French (compared without elisions), the second is not told.
    first = extract("Vénissieux : incendie dans un entrepôt de logistique", body)
    copy = extract("Vénissieux : incendie d'un entrepôt de logistique", body)
    assert "incendi" in first.tf and "l'incendi" in copy.tf
    assert first.text_key == copy.text_key
    assert (first.shingles == copy.shingles).all()


def test_chinese_headline_and_body_give_character_bigrams_weighed_as_words():
    feats = extract("泸定县发生地震", "救援队伍连夜赶赴震区，当地房屋受损。")
    assert {"泸定", "定县", "地震"} <= feats.title_terms
    # A headline bigram weighs as a headline word (3), a lead one as a lead word (2).
    assert feats.tf["泸定"] == pytest.approx(1 + math.log(3))
    assert feats.tf["救援"] == pytest.approx(1 + math.log(2))
    assert feats.bigrams
    assert feats.n_words == 14  # 救援 援队 队伍 伍连 连夜 夜赶 赶赴 赴震 震区, 当地 地房 房屋 屋受 受损
    assert len(feats.shingles) == 12  # the fingerprint's "words" are the bigrams


def test_numbers_in_chinese_text_stay_terms_and_entities():
    feats = extract("四川发生6.1级地震", "四川甘孜州3月2日发生6.1级地震，震源深度12公里。")
    assert {"6.1", "12", "2", "3"} <= feats.entities


def test_japanese_terms_are_found_as_written():
    title, text = "札幌市で火事", "札幌市北区の住宅で火事があり、消防が消し止めました。"
    feats = extract(title, text)
    assert {"札幌", "火事", "消防", "北区"} <= set(feats.tf)
    assert not any("で" in term or "が" in term for term in feats.tf)  # Hiragana left out
    assert surface_forms(title, text, ["札幌", "火事"]) == ["札幌", "火事"]


def test_thai_terms_are_its_words_and_not_bigrams():
    title, text = "ราคาข้าวพุ่ง", "ราคาข้าวหอมมะลิในตลาดกรุงเทพฯ เพิ่มขึ้นร้อยละ 12 ในสัปดาห์นี้"
    feats = extract(title, text)
    # Its vowel and tone marks are part of a word: ข้าว (rice), not ข and าว.
    assert {"ราคา", "ข้าว", "พุ่ง"} <= feats.title_terms
    assert {"ข้าว", "หอมมะลิ", "ตลาด", "กรุงเทพฯ", "12"} <= set(feats.tf)
    assert not feats.bigrams  # words: as many terms kept as for English
    assert surface_forms(title, text, ["ข้าว"]) == ["ข้าว"]
    # Thai digits are the numbers of a report that writes them as 0-9.
    thai_digits = extract("น้ำท่วมเชียงใหม่ ๕๐๐ ครัวเรือนเดือดร้อน", "บ้านเรือน ๕๐๐ หลังถูกน้ำท่วม")
    assert "500" in thai_digits.entities & extract("น้ำท่วม 500 ครัวเรือน", "").entities


def test_khmer_and_myanmar_terms_are_bigrams_of_their_clusters_marks_and_all():
    title, text = "ទឹកជំនន់នៅបាត់ដំបង", "ទឹកជំនន់លិចផ្ទះជាង ៥០០ ខ្នងនៅក្នុងក្រុងបាត់ដំបង។"
    feats = extract(title, text)
    # Its vowel signs and stacked consonants are part of a cluster: ផ្ទះ, not ផ and ទ.
    assert {"ទឹក", "ជំន", "បាត់", "បង"} <= feats.title_terms
    assert {"លិច", "ផ្ទះជា", "ក្រុង"} <= set(feats.tf)
    assert feats.bigrams  # about two terms a word, as for Chinese
    assert surface_forms(title, text, ["ទឹក"]) == ["ទឹក"]
    # Khmer and Myanmar digits are the numbers of a report that writes them as 0-9.
    assert "500" in feats.entities & extract("ទឹកជំនន់ 500 ខ្នង", "").entities
    assert "12" in extract("ငလျင်ကြောင့် လူ ၁၂ ဦး သေဆုံး", "").entities


def test_text_without_cjk_characters_is_split_as_before():
    title = "Zürich’s mayor — «non» to the tower"
    text = "The city’s mayor, Corine Mauch, said “no” to the 80-metre tower on Tuesday."
    feats = extract(title, text)
    assert not feats.bigrams
    assert {"zürich", "mayor", "tower", "corine mauch", "80-metre"} <= set(feats.tf)


def test_full_width_digits_in_chinese_or_japanese_text_are_the_numbers_of_other_reports():
    # One report sets its numbers in full width, another not: they share 6.8 and 7.
    full = extract("泸定地震：救援队赶赴震区", "泸定县６．８级地震发生后，地震造成７人死亡。")
    half = extract("泸定县6.8级地震已致7人遇难", "泸定县发生6.8级地震，地震造成7人遇难。")
    assert {"6.8", "7"} <= full.entities & half.entities
    assert extract("ＮＨＫ：札幌で火事", "").title_terms == extract("NHK：札幌で火事", "").title_terms


def test_a_number_written_with_thousands_separators_is_that_number():
    # Not "45" and "000": "000" was then shared with every report of a thousands figure.
    bail = extract("Bail set in child's shooting", "His bail was set at $45,000. on Wednesday.")
    other = extract("Bail set at 45000 dollars", "The judge set bail at 45000 on Wednesday.")
    assert "45000" in bail.entities & other.entities
    assert "000" not in bail.tf and "45" not in bail.tf
    # Decimals and lists keep their parts.
    assert {"3", "5"} <= extract("Scores 3,5", "").entities


def test_clear_word_caches_empties_what_words_fill() -> None:
    # A benchmark's later passes over one file start as cold as its first only so.
    from processors import features

    extract("Storm hits the coast", "The storm hit the coast of Florida on Monday night.")
    assert features._TOKEN_INFOS and features._WORD_HASHES and features.stem.cache_info().currsize
    features.clear_word_caches()
    assert not features._TOKEN_INFOS and not features._WORD_HASHES
    assert features.stem.cache_info().currsize == 0
