"""SMS facts as pure functions: is a sender ID an impersonation, are recipients real numbers in
allowed countries, and how many parts a message costs (SPEC §11).

Sender names are compared after folding away what a reader's eye does not see: case, spacing
and punctuation, accents, Cyrillic and Greek look-alikes and the digits that stand in for
letters (4→a, 0→o, 1→i, 5→s). "B4NK", "ВANK" (a Cyrillic В) and "p o l i c e" all fold to a
name on the shipped list. Folding is applied to both sides, so the list is written plainly.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import reprlib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberType

from proxy.sms_names import AFFIXES, GENERIC, NAMES

# -- senders -------------------------------------------------------------------------------------

# Look-alikes by how they are drawn, upper and lower case apart: a capital Greek eta (Η) reads
# as H, a small one (η) as n.
_LOOKALIKES = {
    # Cyrillic capitals and small letters
    "А": "a", "В": "b", "С": "c", "Е": "e", "Ё": "e", "Н": "h", "І": "i", "Ї": "i", "Ј": "j",
    "К": "k", "М": "m", "О": "o", "Р": "p", "Ѕ": "s", "Т": "t", "Х": "x", "У": "y", "Ү": "y",
    "Ԛ": "q", "Ԝ": "w", "Ӏ": "i", "З": "3", "Ь": "b", "П": "n", "Г": "r",
    "а": "a", "в": "b", "с": "c", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j",
    "к": "k", "м": "m", "о": "o", "р": "p", "ѕ": "s", "т": "t", "х": "x", "у": "y", "ү": "y",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "i", "ь": "b", "п": "n", "г": "r", "н": "h", "з": "3",
    # Greek capitals and small letters
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n",
    "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x", "Ϲ": "c", "Ϳ": "j",
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "γ": "y", "ω": "w", "ϲ": "c", "η": "n",
    # Latin letters that NFKD leaves whole, and symbols drawn like letters
    "ł": "l", "Ł": "l", "ø": "o", "Ø": "o", "đ": "d", "Đ": "d", "ħ": "h", "ı": "i", "ß": "ss",
    "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe", "þ": "p", "ƒ": "f",
    "@": "a", "$": "s", "€": "e", "£": "l", "|": "i", "!": "i", "¡": "i",
}  # fmt: skip
_DIGITS = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "l": "i"})
_NOT_ALNUM = re.compile(r"[^a-z0-9]")


def fold(name: str) -> str:
    """The skeleton of a name as it reads: b4nk, BANK, В-A-N-K and "b a n k" fold alike."""
    text = unicodedata.normalize("NFKC", name)
    text = "".join(_LOOKALIKES.get(ch, ch) for ch in text)
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    text = _NOT_ALNUM.sub("", text.casefold()).translate(_DIGITS)
    # Pairs that read as one letter at a glance.
    return text.replace("rn", "m").replace("vv", "w")


def _folded(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({fold(n) for n in names}, key=len, reverse=True))


_GENERIC = _folded(GENERIC)
_NAMES = _folded(NAMES)
_PLAIN = {fold(n): n for n in (*NAMES, *GENERIC)}  # how a refusal names what a sender reads as
_AFFIXES = tuple(sorted({fold(a) for a in AFFIXES} | {""}, key=len, reverse=True))
_LONG = 6  # a name this long is distinctive enough to find inside another
# A name too long for a sender ID (11 characters) is forged cut short: "Skatteverk" for
# Skatteverket. Ten letters of such a name are as telling as the whole.
_CUT = 10
_CUTS = {name[:_CUT]: name for name in (*_GENERIC, *_NAMES) if len(name) > 11}


def impersonates(sender: str) -> str | None:
    """The shipped name a sender reads as, if any."""
    skeleton = fold(sender)
    # "cl", "cI" and "c1" read as "d" ("Norclea" for Nordea, "clhl" for DHL). They fold to "ci", as a
    # plain "ci" does, so the skeleton is read with and without that "d": "iCloud" is still read.
    found = _reads_as(skeleton) or _reads_as(skeleton.replace("ci", "d"))
    return _PLAIN[found] if found else None


def _reads_as(skeleton: str) -> str | None:
    if not skeleton:
        return None
    for name in _GENERIC:  # words no honest sender carries: BANK, POLICE, VERIFY…
        if name in skeleton:
            return name
    for name in _NAMES:
        if len(name) >= _LONG and name in skeleton:
            return name
        if name in skeleton and _dressed(skeleton, name):
            return name
    for cut, name in _CUTS.items():
        if cut in skeleton:
            return name
    return None


def _dressed(skeleton: str, name: str) -> bool:
    """A short name alone or with a country code or a word like "info" around it ("DHL-SE", "myUPS")."""
    at = skeleton.find(name)
    while at >= 0:
        head, tail = skeleton[:at], skeleton[at + len(name) :]
        if head in _AFFIXES and tail in _AFFIXES:
            return True
        at = skeleton.find(name, at + 1)
    return False


_ALPHANUMERIC = re.compile(r"[A-Za-z][A-Za-z0-9]{0,10}")
_NUMERIC = re.compile(r"\+?[0-9]{3,15}")
_READ_CHARS = 256  # a sender longer than this is no sender ID, however it is spaced or dressed


def sender_problem(sender: str, *, allow: Iterable[str] = (), block_impersonation: bool = True) -> str | None:
    """Why a sender ID may not be used, or None. A sender the team's allow list names exactly is always
    allowed; one it matches by a pattern must also pass the format and impersonation checks; with an
    allow list, nothing else is allowed."""
    allow = tuple(allow)
    if allow:
        if any(not _glob(pattern) and sender.casefold() == pattern.casefold() for pattern in allow):
            return None  # named by the team itself
        if not any(_glob(pattern) and _allowed(sender, pattern) for pattern in allow):
            return f"sender '{_shown(sender)}' is not on this team's sender allow list"
        # A pattern names a family of senders, not each one: each must still be a valid sender ID
        # that reads as nobody else.
    # A sender with no letter at all is a number, which reads as nobody's name. One far too long for a
    # sender ID is refused for its format alone: reading a megabyte for names would hold every request.
    readable = len(sender) <= _READ_CHARS and any(ch.isalpha() for ch in sender)
    if block_impersonation and readable and (name := impersonates(sender)):
        return f"sender '{_shown(sender)}' reads as '{name.upper()}' (impersonation)"
    if not (_ALPHANUMERIC.fullmatch(sender) or _NUMERIC.fullmatch(sender)):
        return (
            f"sender '{_shown(sender)}' is not a valid sender ID (at most 11 letters and digits starting "
            "with a letter, or a phone number)"
        )
    return None


def _glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _allowed(sender: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(sender.casefold(), pattern.casefold())


def _shown(value: str, limit: int = 40) -> str:
    """A value quoted in a refusal: printable ASCII only, so a refusal carries no hidden text."""
    clean = "".join(ch if " " <= ch <= "~" else "?" for ch in value[:limit])
    return clean + ("…" if len(value) > limit else "")


# -- recipients ----------------------------------------------------------------------------------

_PART = re.compile(r"[^,;\n\r]+")  # commas, semicolons and newlines separate numbers


def names_group(arguments: Mapping[str, Any], group_args: Iterable[str]) -> bool:
    """Whether a send goes to a group (any of its group arguments given): whose numbers only the
    upstream knows."""
    return any(arguments.get(name) not in (None, "", []) for name in group_args)


def split_recipients(value: Any, limit: int | None = None) -> list[str]:
    """The numbers one argument names: a comma- (or semicolon-, newline-) separated string, a list, or
    a number. Spaces are not separators: "+48 600 100 200" is one number. Any other shape is kept
    as its text, so it fails as an invalid number rather than passing unchecked. With a limit, the
    reading stops at the first number past it: the call is refused for that, whatever the rest says.

    Linear in the argument however it is shaped: nested lists are walked with a stack into one list
    (flattening level by level copies every number once per level), and an odd shape is quoted by
    `reprlib`, which reads a bounded part of it."""
    numbers: list[str] = []
    stack = [value]
    while stack and (limit is None or len(numbers) <= limit):
        item = stack.pop()
        if item is None:
            continue
        if isinstance(item, bool):
            numbers.append(str(item))
        elif isinstance(item, str):
            for match in _PART.finditer(item):
                if part := match.group().strip():
                    numbers.append(part)
                    if limit is not None and len(numbers) > limit:
                        break
        elif isinstance(item, int | float):
            numbers.append(str(int(item)) if isinstance(item, float) and item.is_integer() else str(item))
        elif isinstance(item, list | tuple):
            stack.extend(reversed(item))  # popped from the end: the numbers keep their order
        else:
            numbers.append(_QUOTE.repr(item)[:64])
    return numbers


_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 64

# The most numbers one call may name. An SMS to a list of numbers is written to a few people, at
# most a few hundred (the shipped policies allow 1 to 100); a campaign to thousands goes to a group,
# whose numbers the upstream holds. A thousand numbers are parsed in tens of milliseconds; the
# bound keeps one model-written argument from holding the proxy's one event loop for every client
# (72,000 numbers held it ~34 s). It is counted on the split, before any number is parsed, and
# applies with or without an `sms` section; a team's `max_recipients` still applies below it.
MAX_RECIPIENTS = 1000


def too_many(values: Sequence[str]) -> str | None:
    """Why a send names too many numbers to be checked, or None."""
    if len(values) <= MAX_RECIPIENTS:
        return None
    return (
        f"it names more than {MAX_RECIPIENTS} recipients, the most mcp-guard checks in one call. Split the send "
        f"into calls of at most {MAX_RECIPIENTS} numbers, or send it to a group"
    )


@dataclass(frozen=True)
class Recipient:
    e164: str
    country: str  # ISO 3166 alpha-2, or "" when the number belongs to no single country


@dataclass(frozen=True)
class Recipients:
    unique: tuple[Recipient, ...] = ()
    problem: str | None = None


_PREMIUM = {PhoneNumberType.PREMIUM_RATE: "a premium-rate", PhoneNumberType.SHARED_COST: "a shared-cost"}
_SHORT_DIGITS = 6  # a "number" of at most this many digits is a short code
# SMSAPI reads a number of exactly 9 digits, with or without "+", as a Polish one (+48 and those 9);
# read as international digits it may be another country's (468123456: +46 8 123 456). A guard that
# reads a number otherwise than its upstream checks the wrong number, so such a number is refused.
_AMBIGUOUS_DIGITS = 9


_NUMBER_CHARS = 40  # longer is no phone number, however it is spaced


def parse_number(value: str) -> phonenumbers.PhoneNumber | None:
    """A recipient as a phone number: "+46 70…", "0046 70…" and "4670…" (international digits) alike."""
    text = value.strip()
    if not text or len(text) > _NUMBER_CHARS:
        return None  # before the cache: it would keep every long string it was given
    return _parse(text)


# One send is checked, counted for its limits, priced for the prompt and audited: each number is
# parsed once, not at every step.
@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> phonenumbers.PhoneNumber | None:
    if text.startswith("00"):
        text = "+" + text[2:]
    elif not text.startswith("+"):
        text = "+" + text
    try:
        return phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None


def check_recipients(values: Iterable[str], *, countries: Iterable[str] = (), block_premium: bool = True) -> Recipients:
    """Parse and vet every recipient; the first problem found refuses the send."""
    values = tuple(values)
    if problem := too_many(values):
        return Recipients(problem=problem)
    allowed = tuple(countries)
    seen: dict[str, Recipient] = {}
    for value in values:
        digits = "".join(ch for ch in value if ch.isdigit())
        if digits and len(digits) <= _SHORT_DIGITS and not value.strip().startswith("+"):
            if block_premium:
                return Recipients(problem=f"'{_masked(value)}' is a short code (premium services are blocked)")
            if allowed:
                return Recipients(problem=f"'{_masked(value)}' is a short code of no known country")
            continue  # a short code this team allows: no country, no E.164 form to record
        if len(digits) == _AMBIGUOUS_DIGITS:
            return Recipients(
                problem=f"'{_masked(value)}' has 9 digits, which SMSAPI reads as a Polish number (+48 …) and "
                "other upstreams as a number with its country code: write it in international form with its "
                "country code, like +48 600 100 200"
            )
        number = parse_number(value)
        if number is None or not phonenumbers.is_valid_number(number):
            return Recipients(
                problem=f"'{_masked(value)}' is not a valid phone number (invalid number; write it in "
                "international form with its country code, like +46 70… or +48 600…)"
            )
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        kind = phonenumbers.number_type(number)
        if block_premium and kind in _PREMIUM:
            return Recipients(problem=f"{_masked(e164)} is {_PREMIUM[kind]} number (premium numbers are blocked)")
        country = phonenumbers.region_code_for_number(number) or ""
        if allowed and country not in allowed:
            where = f"in {country}" if country and country != "001" else "not in any one country"
            return Recipients(
                problem=f"{_masked(e164)} is {where}; this team sends only to {', '.join(allowed)} (country)"
            )
        seen.setdefault(e164, Recipient(e164, country))
    return Recipients(unique=tuple(seen.values()))


def distinct_recipients(values: Iterable[str]) -> int:
    """How many different recipients a send names: "+46 70…", "4670…" and "004670…" are one."""
    values = tuple(values)
    if len(values) > MAX_RECIPIENTS:
        return len(set(values))  # only a refused call is counted so: past the bound no number is parsed
    if any(len(value) > _NUMBER_CHARS for value in values):
        return _count(values)  # not memoised: the memo would keep every long string it was given
    return _counted(values)


def _count(values: tuple[str, ...]) -> int:
    keys = set()
    for value in values:
        number = parse_number(value)
        if number is not None and phonenumbers.is_possible_number(number):
            keys.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
        else:
            keys.add("".join(ch for ch in value if ch.isdigit()) or value)
    return len(keys)


# One send's count is asked for by each of its limits (when checked and when taken), its cost line and
# its audit line: counted once.
_counted = functools.lru_cache(maxsize=64)(_count)


def _masked(number: str) -> str:
    """A number in a refusal, audit line or log: enough to recognise it, not enough to harvest it."""
    shown = _shown(number, 24)
    digits = [i for i, ch in enumerate(shown) if ch.isdigit()]
    if len(digits) <= 5:
        return shown
    hidden = set(digits[3:-3])
    return "".join("•" if i in hidden else ch for i, ch in enumerate(shown))


# -- parts ---------------------------------------------------------------------------------------

# GSM 03.38: the basic alphabet costs one septet a character, the extension table two (an escape
# and the character).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Not the form feed: GSM 03.38 has one, but an upstream whose table lacks it (the SMSAPI sandbox's)
# sends the whole text as UCS-2, three parts where GSM-7 counts one. Counted as UCS-2, never fewer.
GSM_EXTENSION = frozenset("^{}\\[~]|€")


@dataclass(frozen=True)
class Parts:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    parts: int


@functools.lru_cache(maxsize=256)
def message_parts(text: str) -> Parts:
    """How many SMS parts a text is sent as: GSM-7 160 (153 a part when split), else UCS-2 70 (67).
    A part never ends inside an escape sequence or a surrogate pair."""
    if all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in text):
        costs = [2 if ch in GSM_EXTENSION else 1 for ch in text]
        return Parts("GSM-7", sum(costs), _split(costs, 160, 153))
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return Parts("UCS-2", sum(costs), _split(costs, 70, 67))


def _split(costs: list[int], single: int, per_part: int) -> int:
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > per_part:
            parts, used = parts + 1, 0
        used += cost
    return parts


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def describe(parts: Parts, recipients: int, price: float | None = None, currency: str = "") -> str:
    """ "2 parts × 3 recipients = 6 messages (GSM-7)", with an estimate when the profile prices a message."""
    messages = parts.parts * recipients
    text = (
        f"{_plural(parts.parts, 'part')} × {_plural(recipients, 'recipient')} = "
        f"{_plural(messages, 'message')} ({parts.encoding})"
    )
    if price is not None:
        text += f", about {messages * price:.2f} {currency}".rstrip()
    return text
