"""PII detectors: where e-mail addresses, phone, card and IBAN numbers, national ids and IP addresses are in a text.

Each detector is a pattern and, where the format has one, its checksum (Luhn for cards, ISO 7064 mod 97 for IBANs
and French NIRs, Verhoeff for Aadhaar, the DNI letter, the Dutch eleven test), so a number that merely looks like
one is not reported. Spans never overlap: the earlier detector in `ORDER` keeps a contested span.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import NamedTuple

Valid = Callable[[str], bool]


class Span(NamedTuple):
    kind: str  # email, phone, card, iban, national_id, ip_address, name
    start: int
    end: int
    detail: str = ""  # e.g. the national id's format (US_SSN)


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def luhn(number: str) -> bool:
    digits = [int(d) for d in _digits(number)]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24,
    "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "TR": 26,
}  # fmt: skip


def iban(value: str) -> bool:
    s = re.sub(r"\s", "", value).upper()
    if IBAN_LENGTHS.get(s[:2]) != len(s):
        return False
    rotated = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rotated)) % 97 == 1


_D = [  # Verhoeff's multiplication table (the dihedral group D5) and its permutations
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]  # fmt: skip
_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]  # fmt: skip


def verhoeff(number: str) -> bool:
    c = 0
    for i, d in enumerate(reversed(_digits(number))):
        c = _D[c][_P[i % 8][int(d)]]
    return c == 0


def dni(value: str) -> bool:
    number, letter = _digits(value), value[-1].upper()
    return len(number) == 8 and "TRWAGMYFPDXBNJZSQVHLCKE"[int(number) % 23] == letter


def eleven_test(value: str) -> bool:
    d = [int(c) for c in _digits(value)]
    return len(d) == 9 and (sum((9 - i) * x for i, x in enumerate(d[:8])) - d[8]) % 11 == 0


def nir(value: str) -> bool:
    s = re.sub(r"\s", "", value).upper().replace("2A", "19").replace("2B", "18")
    return len(s) == 15 and s.isdigit() and 97 - int(s[:13]) % 97 == int(s[13:])


def _always(_: str) -> bool:
    return True


# (kind, detail, pattern, checksum); national ids are chosen by country; a group `v` is the value when the pattern
# needs a keyword before it
_DETECTORS: dict[str, tuple[str, str, str, Valid]] = {
    "email": ("email", "", r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", _always),
    "iban": ("iban", "", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", iban),
    "card": ("card", "", r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])", luhn),
    "US": ("national_id", "US_SSN", r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b", _always),
    "GB": ("national_id", "GB_NINO", r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b", _always),
    "ES": ("national_id", "ES_DNI", r"\b\d{8}-?[A-Za-z]\b", dni),
    "NL": ("national_id", "NL_BSN", r"(?i:\b(?:bsn|burgerservicenummer)\b\W{0,5}(?:nr\.?|number|nummer)?\W{0,5})(?P<v>\d{9})\b", eleven_test),
    "FR": ("national_id", "FR_NIR", r"\b[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}\b", nir),
    "IN": ("national_id", "IN_AADHAAR", r"\b[2-9]\d{3} ?\d{4} ?\d{4}\b", verhoeff),
    "ip_address": ("ip_address", "", r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.])", _always),
    "phone": ("phone", "", r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,6}\)?){1,6}(?![\w-])|(?<![\w+])(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w-])", lambda s: 9 <= len(_digits(s)) <= 15),
}  # fmt: skip
ORDER = ("email", "iban", "card", "US", "GB", "ES", "NL", "FR", "IN", "ip_address", "phone")


@lru_cache(maxsize=32)
def _compiled(names: tuple[str, ...]) -> list[tuple[str, str, re.Pattern[str], Valid]]:
    out = []
    for n in names:
        kind, detail, pattern, valid = _DETECTORS[n]
        out.append((kind, detail, re.compile(pattern), valid))
    return out


def detector_names(kinds: Iterable[str], countries: Iterable[str]) -> tuple[str, ...]:
    wanted = set(kinds)
    chosen = {k for k in wanted if k in _DETECTORS} | (set(countries) if "national_id" in wanted else set())
    return tuple(n for n in ORDER if n in chosen)


def find(text: str, names: tuple[str, ...]) -> list[Span]:
    """Every PII span in `text` the named detectors find, in order, none overlapping."""
    taken: list[Span] = []
    for kind, detail, pattern, valid in _compiled(names):
        for m in pattern.finditer(text):
            s, e = m.span("v") if "v" in pattern.groupindex else m.span()  # a keyword before it is not the value
            if valid(text[s:e]) and not any(s < t.end and t.start < e for t in taken):
                taken.append(Span(kind, s, e, detail))
    return sorted(taken, key=lambda t: t.start)
