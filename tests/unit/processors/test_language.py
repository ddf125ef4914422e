import pytest

from processors.features import STOPWORDS, _tokens, extract
from processors.language import (
    _CODES,
    _ENGLISH_MARKERS,
    _LANGUAGES,
    ENGLISH,
    declared,
    detect,
    function_words,
)

FRENCH = ("Un violent incendie s'est déclaré dans la nuit de lundi à mardi dans un entrepôt "
          "de la zone industrielle de Vénissieux, près de Lyon. Deux employés ont été "
          "légèrement blessés et transportés à l'hôpital, selon la préfecture.")
GERMAN = ("Ein Streik der Lokführergewerkschaft hat am Mittwoch den Bahnverkehr in weiten "
          "Teilen Deutschlands lahmgelegt. Die Deutsche Bahn strich einen Großteil der "
          "Fernzüge, wie ein Sprecher in Berlin sagte. Die Gewerkschaft fordert auch höhere Löhne.")
SWEDISH = ("Elever åtalas för misshandel på internatskolan. Enligt åklagaren är det inte "
           "första gången och skolan har också fått kritik efter tidigare fall.")
ENGLISH_TEXT = ("A fire tore through the Acme Logistics warehouse on Elm Street early Tuesday, "
           "injuring two workers, fire chief Maria Lopez said. The cause of the fire was "
           "under investigation and the building was a total loss.")


HINDI = ("जयपुर के पास सोमवार को एक बस पलट गई, जिसमें बारह यात्री घायल हुए हैं। बस चालक से "
         "पूछताछ की जा रही है।")  # (no "और" or "पर": Hindi's only markers without a vowel sign)
URDU = "پاکستانی وزیر دفاع کہتے ہیں کہ امریکہ کو ایک کامیابی ملی ہے، وہ بھی پاکستان کی مدد سے"


@pytest.mark.parametrize(("text", "language"), [
    (FRENCH, "French"), (GERMAN, "German"), (SWEDISH, "Swedish"), (URDU, "Urdu"), (HINDI, "Hindi"),
    (ENGLISH_TEXT, ENGLISH)])
def test_an_articles_language_is_told_by_its_own_frequent_words(text, language):
    words = _tokens(text)
    assert detect([], words) == language
    assert detect([], words, {w: words.count(w) for w in words}) == language


@pytest.mark.parametrize("headline", [
    "Ursula von der Leyen re-elected as Commission president",  # name particles
    "Magnitude 6.1 earthquake shakes northern Chile",  # no function word at all
    "Le Pen and Macron clash over pensions",  # a French name is not French
    "Des Moines police say the man fired at officers",
])
def test_english_headlines_are_english(headline):
    # (Not told: too few English markers; no other language's words dropped.)
    assert detect(_tokens(headline), []) is None


def test_english_is_told_by_as_many_of_its_markers_as_another_language():
    # A feed's headline and summary: "and", "from", "the".
    assert detect(_tokens("Snake school and May in China: Wednesday's top photos"),
                  _tokens("The Guardian's picture editors bring you a selection of photo "
                          "highlights from around the world")) == ENGLISH
    assert extract("Snake school and May in China", "The best photos from the world").language \
        == ENGLISH
    # Headlines without them are not told, English or not: the clusterer must not take
    # the Portuguese one for English.
    assert detect(_tokens("Fix conditions to publish packages in GitHub workflows"), []) is None
    assert detect(_tokens('Royal Mail lança selos de "Game of Thrones"'), []) is None
    assert function_words(ENGLISH) == frozenset()


def test_a_headline_needs_fewer_markers_than_a_body():
    headline = _tokens("Incendie dans un entrepôt : le projet de loi est adopté")  # dans, est
    assert detect(headline, []) == "French"
    # A short body is told with its title's words.
    assert detect(headline, _tokens("Le texte a été voté mardi.")) == "French"  # été
    assert detect([], _tokens("Le texte a été voté mardi.")) is None


def test_each_marker_tells_one_language_and_is_no_english_word():
    seen: dict[str, str] = {}
    for language, (markers, _) in _LANGUAGES.items():
        for word in markers.split():
            assert word not in STOPWORDS and word not in _ENGLISH_MARKERS, word
            assert seen.setdefault(word, language) == language, word


def test_a_language_drops_its_stoplists_words_and_english_drops_none():
    french = function_words("French")
    assert {"les", "dans", "une", "été"} <= french
    assert function_words(None) == frozenset()
    assert {"og", "ikke"} <= function_words("Danish/Norwegian")


@pytest.mark.parametrize(("title", "summary", "language", "dropped"), [
    ("Streit um Windräder: Gemeinde stoppt den Bau",
     "Die Gemeinde hat den Bau von drei Windrädern vorerst gestoppt, weil Anwohner gegen die "
     "Pläne klagen. Eine Entscheidung des Gerichts wird im Frühjahr erwartet.",
     "German", {"den", "die", "von"}),
    ("Fotoprogramm: Neue Version bringt schnellere Filter",
     "Die Software gibt es nun in Version 5. Verbessert wurde unter anderem die Verwaltung von "
     "Bildern.", "German", {"die", "es", "in", "von"}),
    ("Incêndio destrói armazém em Setúbal",
     "Um incêndio destruiu esta madrugada um armazém de madeiras em Setúbal. Os bombeiros "
     "disseram que não há feridos e que as causas ainda estão por apurar.",
     "Portuguese", {"em", "um", "de", "que", "os"}),
])
def test_a_feeds_short_summary_is_told_with_as_few_markers_as_a_headline(
        title, summary, language, dropped):
    # Published when the page failed: a few dozen words, one or two markers in them.
    assert detect(_tokens(title), _tokens(summary)) == language
    assert not dropped & extract(title, summary).tf.keys()


def test_a_german_report_is_not_told_french_on_its_genitive_des():
    summary = "Nach dem Start: die Eindrücke aus den ersten Stunden des Spiels des Jahres."
    assert detect(_tokens("Die Entschleunigung des Abenteuers"), _tokens(summary)) != "French"


# Short Portuguese feed summaries with no more than one of Portuguese's markers each ("uma"):
# their words tell no language (jn.pt's feed, half of whose summaries were such).
BUS_CRASH = ("Autocarro cai de ravina na serra e faz um morto",
             "Um autocarro com turistas caiu de uma ravina na serra da Estrela na madrugada de "
             "quarta-feira. O condutor morreu no local, que fica a dez quilómetros da vila.")
POWER_PRICE = ("Preço da eletricidade sobe em janeiro",
               "A tarifa da eletricidade vai subir três por cento em janeiro, anunciou o "
               "regulador, que justifica a subida com um aumento de custos na produção.")


@pytest.mark.parametrize(("tag", "language"), [
    ("pt", "Portuguese"), ("pt-BR", "Portuguese"), ("pt_PT", "Portuguese"),
    ("PT-pt", "Portuguese"), (" pt-pt", "Portuguese"), ("de-AT", "German"),
    ("nb-NO", "Danish/Norwegian"), ("sk", "Czech/Slovak"), ("ms-MY", "Indonesian/Malay"),
    ("en", None), ("en-US", None), ("ja", None), ("x-klingon", None), ("portuguese", None),
    ("", None), (None, None),
])
def test_a_language_tag_names_a_listed_language_by_its_first_part(tag, language):
    assert declared(tag) == language


def test_each_language_is_named_by_a_tag():
    assert set(_LANGUAGES) == {declared(code) for code in _CODES}


@pytest.mark.parametrize(("title", "summary"), [BUS_CRASH, POWER_PRICE])
def test_a_summary_whose_words_tell_no_language_is_taken_in_the_one_it_declares(title, summary):
    assert detect(_tokens(title), _tokens(summary)) is None
    undeclared = extract(title, summary)
    assert undeclared.language is None and {"de", "da", "um", "com", "que"} <= undeclared.tf.keys()
    feats = extract(title, summary, language_tag="pt-PT")
    assert feats.language == "Portuguese"
    assert not {"de", "da", "um", "com", "que", "na"} & feats.tf.keys()
    # What the story is about stays.
    assert {"autocarro", "ravina", "eletricidad", "tarifa"} & feats.tf.keys()


def test_an_english_tag_or_an_unlisted_one_leaves_the_words_to_decide_alone():
    title, summary = BUS_CRASH
    undeclared = extract(title, summary)
    for tag in ("en-GB", "ja-JP", "zz"):
        feats = extract(title, summary, language_tag=tag)
        assert feats.language is None and feats.tf == undeclared.tf


def test_the_words_tell_the_language_before_the_declared_one():
    # A feed declaring its site's language ("de") for an English report: "war" is a
    # German function word, and here the story.
    title = "Trade war fears hit markets"
    summary = ("Stocks fell sharply on Monday as fears of a trade war grew, and traders said "
               "the sell-off would have deepened without the central bank's statement.")
    feats = extract(title, summary, language_tag="de")
    assert feats.language == ENGLISH and "war" in feats.tf
    german = extract("Streit um Windräder", GERMAN, language_tag="fr")
    assert german.language == "German"
