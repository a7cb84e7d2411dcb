"""What a question names, besides its intent: numbers, percents, users, segments, periods, statuses.

Pure functions over the text (no I/O); the experiments a question names are found against the
live registry in `experiments.py`, and the planner anchors periods to the data that exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

WORD = re.compile(r"[a-z0-9]+")

# Words that frame a question rather than name its subject.
STOPWORDS = frozenset("""
a an the our my your their its this that these those it they them we you i me us of to in on at for by with
from about into over under than then and or but not no is are was were be been being do does did doing done
have has had having can could should would will shall may might must what which who whom whose how why when
where whether if so as any all some each every there here please show tell give find list get see let lets
experiment experiments test tests testing trial ab a/b run running ran one ones thing things much many more
most less least very just also up out like vs versus per did didn't doesn't isn't aren't wasn't weren't
point points now time times way ways moment right please thanks
""".split())

# Segment values people say, mapped to the values events carry (stream_processor/generator.py writes
# device mobile|desktop|tablet, ISO country codes, source organic|paid|email|referral).
DEVICE_WORDS = {"mobile": "mobile", "phone": "mobile", "phones": "mobile", "iphone": "mobile", "android": "mobile",
                "ios": "mobile", "app": "mobile", "desktop": "desktop", "laptop": "desktop", "pc": "desktop",
                "tablet": "tablet", "ipad": "tablet", "tablets": "tablet"}
COUNTRY_WORDS = {"us": "US", "usa": "US", "america": "US", "american": "US", "americans": "US",
                 "united states": "US", "uk": "GB", "gb": "GB", "britain": "GB", "british": "GB",
                 "england": "GB", "united kingdom": "GB", "germany": "DE", "german": "DE", "germans": "DE",
                 "de": "DE", "india": "IN", "indian": "IN", "brazil": "BR", "brazilian": "BR", "br": "BR",
                 "france": "FR", "french": "FR", "canada": "CA", "canadian": "CA", "japan": "JP",
                 "japanese": "JP", "spain": "ES", "spanish": "ES", "mexico": "MX", "australia": "AU"}
# Two-letter codes that are also English words are only read as countries when written in capitals.
_AMBIGUOUS_CODES = frozenset({"us", "de", "in", "br", "gb"})
SOURCE_WORDS = {"organic": "organic", "seo": "organic", "paid": "paid", "ads": "paid", "ad": "paid",
                "adwords": "paid", "email": "email", "emails": "email", "newsletter": "email",
                "referral": "referral", "referrals": "referral", "referred": "referral"}
_PLAN = re.compile(r"\b(?:on\s+(?:the\s+)?)?(free|pro|basic|starter|team|business|enterprise|trial|premium)"
                   r"[\s-](?:plan|tier|subscribers|subscription)\b")

STATUS_WORDS = {"running": "running", "live": "running", "active": "running", "ongoing": "running",
                "in progress": "running", "draft": "draft", "drafts": "draft", "planned": "draft",
                "not started": "draft", "stopped": "stopped", "paused": "stopped", "ended": "stopped",
                "finished": "concluded", "concluded": "concluded", "completed": "concluded", "done": "concluded",
                "archived": "archived"}

# A user id: "user u_123", "user id 42", or a token shaped like one (user_0000042, u-17, usr123).
# The id after "user": one with a digit or a separator (u_42, jane_doe, abc-42, a@b.co); after "user id" any.
_USER_AFTER_WORD = re.compile(r"\b(?:user|customer|visitor|member)(?:\s+id\s*[:#=]?\s*['\"`]?([A-Za-z0-9][\w.@:-]{0,127})|"
                              r"(?:\s+|\s*[:#=]\s*)['\"`]?([A-Za-z0-9][\w.@:-]{0,127}[\d_.@-][\w.@:-]*|[A-Za-z0-9_.@-]*\d[\w.@:-]*))",
                              re.I)
_USER_TOKEN = re.compile(r"\b((?:user|usr|u|customer|cust|demo|visitor)[_-]?\d[\w.-]*)\b", re.I)

_NUMBER = r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
_PERCENT = re.compile(_NUMBER + r"\s*(%|percent\b|per cent\b|pp\b|percentage points?\b|points?\b)", re.I)
_TRAFFIC = re.compile(_NUMBER + r"\s*(k|thousand|m|million)?\s*(?:users?|visitors?|sessions?|people|"
                      r"customers?|uniques?)?\s*(?:a|per|/|each|every)\s*(day|daily|week|weekly)\b", re.I)
_DAILY = re.compile(_NUMBER + r"\s*(k|thousand|m|million)?\s+(?:daily\s+(?:users?|visitors?|traffic)|"
                    r"(?:users?|visitors?)\s+daily)\b", re.I)
_VARIANTS = re.compile(r"\b(\d|two|three|four|five)\s*(?:-\s*)?(?:variants?|arms?|versions?|variations?|way)\b", re.I)
_QUOTED = re.compile(r"[\"“‘'`]([^\"”’'`]{3,120})[\"”’'`]")
_ISO_DATE = re.compile(r"\b(20\d\d-\d\d-\d\d)\b")
_COUNT = r"(\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a couple of|a few)"
_COUNT_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "a few": 3}
_DAYS_AHEAD = re.compile(r"\b(?:next|coming|following|for(?: the next)?|over the next)\s+" + _COUNT
                         + r"?\s*(day|week|month|fortnight)s?\b", re.I)

_WORD_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5}
_UNITS = {"k": 1_000, "thousand": 1_000, "m": 1_000_000, "million": 1_000_000}


@dataclass(frozen=True)
class Percent:
    value: float  # as written: 2 for "2%"
    unit: str  # "%" or "points"
    before: str  # the words before it, lower case
    after: str  # the words after it, lower case


@dataclass(frozen=True)
class Period:
    start: date
    end: date
    label: str  # "the last 7 days", "last quarter (92 days)"

    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass
class Entities:
    """Everything found in the text; the planner adds what it resolved against live data."""

    percents: list[Percent] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    segment: dict[str, str] = field(default_factory=dict)
    statuses: list[str] = field(default_factory=list)
    period_words: str | None = None
    traffic_per_day: float | None = None
    variants: int | None = None
    days_ahead: int | None = None
    quoted: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.percents:
            out["percents"] = [f"{p.value:g}{'%' if p.unit == '%' else ' points'}" for p in self.percents]
        for name in ("users", "segment", "statuses", "traffic_per_day", "variants", "days_ahead", "quoted"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out


def count(text: str | None) -> int:
    """'3' → 3, 'two' → 2, None → 1."""
    if not text:
        return 1
    text = text.lower()
    return int(text) if text.isdigit() else _COUNT_WORDS.get(text, 1)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS and len(w) > 1]


def _number(text: str) -> float:
    return float(text.replace(",", ""))  # "2,000" is two thousand


def extract(question: str) -> Entities:
    text = question.lower()
    found = Entities()
    for m in _PERCENT.finditer(question):
        unit = "%" if m.group(2).strip().lower() in ("%", "percent", "per cent") else "points"
        found.percents.append(Percent(_number(m.group(1)), unit, text[max(0, m.start() - 40):m.start()],
                                      text[m.end():m.end() + 40]))
    found.users = _users(question)
    found.segment = segment_of(question)
    for phrase, status in STATUS_WORDS.items():
        if re.search(rf"\b{phrase}\b", text) and status not in found.statuses:
            found.statuses.append(status)
    if (m := _TRAFFIC.search(question) or _DAILY.search(question)) is not None:
        value = _number(m.group(1)) * _UNITS.get((m.group(2) or "").lower(), 1)
        weekly = m.re is _TRAFFIC and m.group(3).lower().startswith("week")
        found.traffic_per_day = round(value / 7, 2) if weekly else value
    if (m := _VARIANTS.search(question)) is not None:
        raw = m.group(1).lower()
        found.variants = _WORD_NUMBERS.get(raw) or int(raw)
    if (m := _DAYS_AHEAD.search(question)) is not None:
        found.days_ahead = count(m.group(1)) * {"day": 1, "week": 7, "month": 30, "fortnight": 14}[m.group(2).lower()]
    elif re.search(r"\b(?:a|one|the next|next)\s+fortnight\b", question, re.I):
        found.days_ahead = 14
    if (m := _QUOTED.search(question)) is not None:
        found.quoted = m.group(1).strip()
    return found


def _users(question: str) -> list[str]:
    users: list[str] = []
    for m in _USER_AFTER_WORD.finditer(question):
        token = (m.group(1) or m.group(2) or "").rstrip(".,;:?!'\"")
        if token and token.lower() not in ("id", "ids"):
            users.append(token)
    for m in _USER_TOKEN.finditer(question):
        token = m.group(1).rstrip(".,;:?!")
        if token not in users and not any(token in u for u in users):
            users.append(token)
    return users


def segment_of(question: str) -> dict[str, str]:
    """device / country / source / plan values the question restricts to ('on mobile', 'German users')."""
    text = question.lower()
    segment: dict[str, str] = {}
    tokens = words(question)
    raw_tokens = re.findall(r"[A-Za-z]+", question)
    for token in tokens:
        if token in DEVICE_WORDS and "device" not in segment and not (token == "app" and "app store" in text):
            segment["device"] = DEVICE_WORDS[token]
    for phrase, code in COUNTRY_WORDS.items():
        if " " in phrase and phrase in text:
            segment.setdefault("country", code)
    for raw in raw_tokens:
        lower = raw.lower()
        if lower in COUNTRY_WORDS and "country" not in segment:
            if lower in _AMBIGUOUS_CODES and raw != raw.upper():
                continue
            segment["country"] = COUNTRY_WORDS[lower]
    for token in tokens:
        if token in SOURCE_WORDS and "source" not in segment:
            # "email" names a source only as traffic: "users from email", "email traffic", "via email".
            if token in ("email", "emails", "paid", "ads", "ad") and not re.search(
                    rf"\b(from|via|through|by)\s+(?:\w+\s+)?{token}\b|\b{token}\s+(traffic|users|visitors|"
                    rf"channel|campaigns?|acquisition|source)\b", text):
                continue
            segment["source"] = SOURCE_WORDS[token]
    if (m := _PLAN.search(text)) is not None:
        segment["plan"] = m.group(1)
    return segment


# ---------------------------------------------------------------- periods


_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_PERIOD_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(?:last|past|previous|prior)\s+" + _COUNT + r"\s+(day|week|month|year)s?\b"), "n_units"),
    (re.compile(r"\b(?:last|past|previous|prior)\s+fortnight\b"), "fortnight"),
    (re.compile(r"\b(?:on|for)\s+" + _MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?\b"), "on_day"),
    (re.compile(r"\b(?:since|from|after)\s+" + _MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?\b"), "since_day"),
    (re.compile(r"\bin\s+(january|february|march|april|june|july|august|september|october|november|december)\b"),
     "in_month"),
    (re.compile(r"\b(?:last|past|previous|prior)\s+(day|week|month|quarter|year)\b"), "one_unit"),
    (re.compile(r"\b(?:this|current)\s+(week|month|quarter|year)\b"), "this_unit"),
    (re.compile(r"\byesterday\b"), "yesterday"),
    (re.compile(r"\btoday\b"), "today"),
    (re.compile(r"\b(?:ytd|year to date)\b"), "ytd"),
]
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "quarter": 92, "year": 365}


def find_period(question: str) -> str | None:
    """The words naming a period ('last quarter', 'past 30 days', 'since 2026-11-01'), if any."""
    text = question.lower()
    for pattern, _ in _PERIOD_PATTERNS:
        if (m := pattern.search(text)) is not None:
            return m.group(0)
    dates = _ISO_DATE.findall(text)
    if dates:
        return " to ".join(dates[:2]) if len(dates) > 1 else f"since {dates[0]}"
    return None


def resolve_period(words_: str, anchor: date) -> Period:
    """The window the words mean, ending at `anchor` (today, or the last day with data)."""
    text = words_.lower()
    dates = _ISO_DATE.findall(text)
    if dates:
        start = date.fromisoformat(dates[0])
        end = date.fromisoformat(dates[1]) if len(dates) > 1 else anchor
        return Period(min(start, end), max(start, end), f"{min(start, end)} to {max(start, end)}")
    for pattern, kind in _PERIOD_PATTERNS:
        m = pattern.search(text)
        if m is None:
            continue
        if kind == "n_units":
            days = count(m.group(1)) * _UNIT_DAYS[m.group(2)]
            return Period(anchor - timedelta(days=days - 1), anchor, f"the last {m.group(1)} {m.group(2)}s")
        if kind == "fortnight":
            return Period(anchor - timedelta(days=13), anchor, "the last fortnight (14 days)")
        if kind in ("on_day", "since_day"):
            month = next(i for i, name in enumerate(_MONTHS, 1) if name.startswith(m.group(1)[:3]))
            year = anchor.year if (month, int(m.group(2))) <= (anchor.month, anchor.day) else anchor.year - 1
            day = date(year, month, min(int(m.group(2)), 28 if month == 2 else 30 if month in (4, 6, 9, 11) else 31))
            return Period(day, day, f"{day}") if kind == "on_day" else Period(day, anchor, f"since {day}")
        if kind == "in_month":
            month = _MONTHS.index(m.group(1)) + 1
            year = anchor.year if month <= anchor.month else anchor.year - 1
            first = date(year, month, 1)
            last = (date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1))
            return Period(first, min(last, anchor), f"{m.group(1).capitalize()} {year}")
        if kind == "one_unit":
            days = _UNIT_DAYS[m.group(1)]
            return Period(anchor - timedelta(days=days - 1), anchor, f"the last {m.group(1)} ({days} days)")
        if kind == "this_unit":
            unit = m.group(1)
            start = {"week": anchor - timedelta(days=anchor.weekday()), "month": anchor.replace(day=1),
                     "quarter": anchor.replace(month=3 * ((anchor.month - 1) // 3) + 1, day=1),
                     "year": anchor.replace(month=1, day=1)}[unit]
            return Period(start, anchor, f"this {unit} (since {start})")
        if kind == "yesterday":
            day = anchor - timedelta(days=1)
            return Period(day, day, f"yesterday ({day})")
        if kind == "today":
            return Period(anchor, anchor, f"today ({anchor})")
        if kind == "ytd":
            start = anchor.replace(month=1, day=1)
            return Period(start, anchor, f"year to date (since {start})")
    raise ValueError(f"no period in {words_!r}")
