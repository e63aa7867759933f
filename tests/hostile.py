"""Hostile branch names, shared by every test that feeds names through a door."""

from __future__ import annotations

HOSTILE_NAMES = [
    "",
    " ",
    "feature x",
    "feature_x ",
    " feature_x",
    "a;b",
    "a; DROP SCHEMA public CASCADE",
    "a'b",
    'a"b',
    "a`b",
    "-c x=y",
    "a -c search_path=public",
    "a\\b",
    "a\\",
    "a\x00b",
    "a\nb",
    "a\tb",
    "a,public",
    "a.b",
    "a/b",
    "../a",
    "a-b",
    "$user",
    "%s",
    "a=b",
    "Feature",
    "UPPER",
    "é",
    "ünïcode",
    "ａ",  # fullwidth a
    "١",  # Arabic-Indic digit one
    "1abc",
    "9",
    "a" * 64,
    "a\rb",
    "a|b",
    "a%2fb",  # decoded once by the server: must not be decoded again
    "\u0430",  # Cyrillic a
    "a\u200bb",  # zero-width space
]
