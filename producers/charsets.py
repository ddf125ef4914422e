"""Charset labels read as browsers read them (the WHATWG Encoding Standard).

Many pages and feeds name an older, smaller charset than the one their text is in:
`gb2312` over GBK text, `euc-kr` over windows-949 (Unified Hangul), `shift_jis` over
windows-31J, `iso-8859-1` over windows-1252. Browsers decode each such label with the
larger charset, so the sites never notice; Python's codec of the same name stops at the
first character beyond it (王镕, 윤똠이, ①), which became U+FFFD in a page's text and
turned a feed's every title into windows-1252 mojibake.
"""

from __future__ import annotations

import codecs

# Python's codec for a label -> the codec browsers decode that label with.
_BROWSERS_READ_AS = {
    "ascii": "cp1252",
    "latin_1": "cp1252",
    "iso8859_1": "cp1252",
    "iso8859_9": "cp1254",
    "tis_620": "cp874",
    "iso8859_11": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
    "big5": "big5hkscs",
}

# Labels browsers know that Python's codecs do not (WHATWG), by the codec they mean.
_LABELS_PYTHON_LACKS = {
    "x-gbk": "gb18030",
    "csgb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "windows-949": "cp949",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "windows-874": "cp874",
    "x-x-big5": "big5hkscs",
    "iso-8859-8-i": "iso8859_8",
}


def python_codec(label: str) -> str | None:
    """The name of Python's own codec for a charset label (`iso8859_1` for `latin1`),
    None when Python has none."""
    try:
        return codecs.lookup(label).name.replace("-", "_")
    except LookupError:
        return None


def browser_codec(label: str) -> str | None:
    """The Python codec that decodes text under a charset label as browsers do (`gb18030`
    for `gb2312`, `cp949` for `euc-kr`), None for a label neither knows."""
    lacking = _LABELS_PYTHON_LACKS.get(label.strip().lower())
    if lacking is not None:
        return lacking
    name = python_codec(label)
    if name is None:
        return None
    return _BROWSERS_READ_AS.get(name, name)
