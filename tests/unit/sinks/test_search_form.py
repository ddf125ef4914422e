"""What search indexes of Chinese, Japanese, Korean and Thai, and how a snippet cut from it
reads (sinks/rows.py); both stores, against real files and servers, in
tests/integration/sinks/test_rows.py."""

from __future__ import annotations

from sinks.rows import SEARCH_SEPARATOR as SEP
from sinks.rows import as_written, search_form, whole_thai_words
from sinks.sqlite import fts_query


def test_text_without_those_scripts_is_indexed_as_it_is() -> None:
    for text in ("A storm hit the coast.", "Straße über Äpfel — “Zitat”", "Коммерсантъ", "", None):
        assert search_form(text) is None


def test_each_character_of_those_scripts_is_a_word_of_its_own() -> None:
    assert search_form("四川发生地震。") == SEP.join("四川发生地震。")
    # Katakana with its long vowel mark; Korean keeps the spaces it writes.
    assert search_form("コーヒー") == SEP.join("コーヒー")
    assert search_form("서울에서 열린") == f"서{SEP}울{SEP}에{SEP}서 열{SEP}린"
    # A word of another script beside them is a word apart.
    assert search_form("iPhone手机 sales") == f"iPhone{SEP}手{SEP}机 sales"
    # A Thai vowel or tone mark stays with its letter: กิ, ข้.
    assert search_form("กินข้าว") == f"กิ{SEP}น{SEP}ข้{SEP}า{SEP}ว"
    assert search_form("雪") is None  # (one character: as it is)
    # Beyond the first plane too, from the scripts the clusterer splits (newsflow.text).
    assert search_form("𠮷野家") == SEP.join("𠮷野家")


def test_each_cluster_of_khmer_lao_and_myanmar_is_a_word_of_its_own() -> None:
    # A letter with its marks and the consonants stacked below it: ផ្ទះ (house).
    assert search_form("លិចផ្ទះ") == f"លិ{SEP}ច{SEP}ផ្ទះ"
    assert search_form("CNNក្រុង") == f"CNN{SEP}ក្រុ{SEP}ង"
    assert search_form("ເກາະຫຼວງ") == f"ເກາະ{SEP}ຫຼ{SEP}ວ{SEP}ງ"
    assert search_form("ရန်ကုန်မြို့") == f"ရန်{SEP}ကုန်{SEP}မြို့"
    assert fts_query("ផ្ទះ မြို့") == '"ផ្ទះ" "မြို့"'  # (its marks kept: the index has them)


def test_a_term_of_those_scripts_is_a_phrase_of_its_characters() -> None:
    assert fts_query("地震 -新幹線") == '"地 震" NOT "新 幹 線"'
    assert fts_query('"강한 지진" storm') == '"강 한 지 진" "storm"'
    assert fts_query("ข้าว") == '"ข้ า ว"'  # (its marks kept: the index has them)


def test_a_snippet_reads_as_the_article_writes_it() -> None:
    assert as_written(f"四{SEP}川{SEP}[地]{SEP}[震]{SEP}。", "地震") == "四川[地震]。"
    # PostgreSQL marks each character of the phrase wherever it stands: only the runs
    # holding what was searched stay marked.
    assert as_written(f"[서]{SEP}[울]{SEP}에{SEP}[서] 열{SEP}린", "서울") == "[서울]에서 열린"
    assert as_written(f"[눈]{SEP}이 [눈]", "눈") == "[눈]이 [눈]"
    assert as_written("A [storm] hit [the] coast.", "storm") == "A [storm] hit [the] coast."


def test_chinese_and_japanese_punctuation_is_set_apart_from_the_words_beside_it() -> None:
    # (A letter to PostgreSQL in the C locale: "（Apple）" was one word there.)
    assert search_form("（Apple）") == f"（{SEP}Apple{SEP}）"
    assert search_form("６．８") == f"６{SEP}．{SEP}８"


def test_a_thai_snippet_is_widened_to_whole_words_only_where_it_is_found() -> None:
    text = "ฝนตกหลายชั่วโมงในเชียงใหม่ ทำให้น้ำท่วมนาข้าว"
    cut = " ... โมงในเชียงใหม่ ทำให้[น้ำท่วม]นาข้ ... "
    assert whole_thai_words(cut, text) == " ... ชั่วโมงในเชียงใหม่ ทำให้[น้ำท่วม]นาข้าว"
    # Not in the text (a bracket of its own, another version of it): as it is.
    assert whole_thai_words(cut, text.replace("ทำให้", "[ทำให้]")) == cut
    assert whole_thai_words(" ... ", text) == " ... "


def test_turkish_is_and_greek_capitals_accents_and_final_sigma_are_folded() -> None:
    # One letter for one, the rest as written: a snippet maps them back.
    assert search_form("İstanbul'da IŞIK") == "istanbul'da IşIK"  # (I: the stores lower-case it)
    assert search_form("ıstanbul") == "istanbul"
    assert search_form("Σεισμός στην ΑΘΗΝΑ, Αθήνα") == "σεισμοσ στην αθηνα, αθηνα"
    assert search_form("ΐ Ϊ ά") == "ι ι α"
    # Letters German and French write too are left as they were.
    assert search_form("ÜBER Ölpreis, Ça") is None


def test_hebrew_and_arabic_prefixes_are_set_apart_from_their_word() -> None:
    assert search_form("הפגנה בירושלים") == f"ה{SEP}פגנה ב{SEP}ירושלים"
    # (בית, house, starts with a prefix letter of its own: set apart alike, so בית finds it)
    assert search_form("ומהבית") == f"ו{SEP}מ{SEP}ה{SEP}ב{SEP}ית"
    assert search_form("ירושלים") is None  # (no prefix)
    assert search_form("في القدس والقدس") == f"في ال{SEP}قدس و{SEP}ال{SEP}قدس"
    # A word is left two letters at least: the same on both sides of a search.
    assert search_form("שלום") == f"ש{SEP}ל{SEP}ום"
    assert search_form("בו") is None
    assert fts_query("בירושלים") == '"ב ירושלים"'
    assert fts_query("ירושלים") == '"ירושלים"'
    assert fts_query("والقدس") == '"و ال قدس"'
    assert fts_query("ΑΘΉΝΑ ıstanbul") == '"αθηνα" "istanbul"'


def test_a_snippet_shows_folded_letters_and_prefixes_as_the_article_writes_them() -> None:
    text = "Σεισμός έγινε αισθητός στην Αθήνα. «Καμία ζημιά», είπε."
    assert as_written("στην [αθηνα]. \"καμια ζημια\", ειπε.", "ΑΘΗΝΑ", text) == (
        "στην [Αθήνα]. \"Καμία ζημιά\", είπε.")  # (PostgreSQL's quotes stay as it gave them)
    assert as_written(" ... στην [αθηνα] ... ", "αθηνα", text) == " ... στην [Αθήνα] ... "
    hebrew = "אלפי מפגינים התכנסו הערב בירושלים מול משכן הכנסת"
    assert as_written(f"[ירושלים] מול משכן ה{SEP}כ{SEP}נסת", "ירושלים", hebrew) == (
        "ב[ירושלים] מול משכן הכנסת")
    assert as_written(f"הערב ב{SEP}[ירושלים] מול", "ירושלים", hebrew) == "הערב ב[ירושלים] מול"
    arabic = "اشتباكات في القدس بعد صلاة الجمعة"
    assert as_written("[قدس] بعد صلاة", "قدس", arabic) == "ال[قدس] بعد صلاة"
    # Not from the text (an older form): as it is, without separators.
    assert as_written("[αθηνα] x", "αθηνα", text) == "[αθηνα] x"


def test_a_lower_cased_snippet_shows_the_letters_as_the_article_writes_them() -> None:
    """PostgreSQL's snippet comes from the lower-cased text (as its search column reads
    it, whatever the database's locale)."""
    text = "IRAN says ÜBER 100 crossed. Île-de-France: ÉTÉ chaud. МОСКВА, İzmir."
    assert as_written("iran says [über] 100 crossed. île-de-france: été chaud. москва, izmir.",
                      "über", text) == (
        "IRAN says [ÜBER] 100 crossed. Île-de-France: ÉTÉ chaud. МОСКВА, İzmir.")
    # Lower-cased by a server without ICU: its ASCII letters only.
    french = "IRAN says ÜBER 100 crossed. Île-de-France: ÉTÉ chaud."
    assert as_written("iran says [ÜBER] 100 crossed. Île-de-france: ÉtÉ", "über", french) == (
        "IRAN says [ÜBER] 100 crossed. Île-de-France: ÉTÉ")
    # A snippet as written (SQLite's) stays as it is.
    assert as_written("IRAN says [ÜBER] 100", "über", text) == "IRAN says [ÜBER] 100"
