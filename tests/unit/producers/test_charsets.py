"""Charset labels as browsers read them."""

from __future__ import annotations

from producers.charsets import browser_codec, python_codec


def test_legacy_labels_name_the_wider_charset_browsers_decode_them_with():
    assert browser_codec("gb2312") == browser_codec("GBK") == browser_codec("x-gbk") == "gb18030"
    assert browser_codec("euc-kr") == browser_codec("ks_c_5601-1987") == "cp949"
    assert browser_codec("Shift_JIS") == browser_codec("windows-31j") == "cp932"
    assert browser_codec("iso-8859-1") == browser_codec("us-ascii") == "cp1252"
    assert browser_codec("tis-620") == browser_codec("windows-874") == "cp874"


def test_other_labels_are_python_s_own_codec_and_unknown_ones_none():
    assert browser_codec("windows-1251") == python_codec("windows-1251") == "cp1251"
    assert browser_codec("koi8-r") == "koi8_r"
    assert browser_codec("utf-8") == "utf_8"
    assert browser_codec("no-such-charset") is None and python_codec("x-gbk") is None
