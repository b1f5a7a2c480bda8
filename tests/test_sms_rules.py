"""The SMS rules as pure functions (SPEC §11): sender folding, recipient parsing, part counting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import sms
from proxy.sms_names import GENERIC, NAMES

# Real businesses that send SMS under their own name and impersonate nobody: Swedish and Polish
# shops, clinics and services of every size. None may be blocked.
BENIGN = (
    "Apoteket", "Kwiaciarnia", "Lasse", "IKEA", "Zalando", "Spotify", "Volvo", "Scania", "Ericsson",
    "Biltema", "Elgiganten", "Biedronka", "Lidl", "Rossmann", "Orlen", "Empik", "Kruk", "Ingrid",
    "Sebastian", "Metropolis", "Acropolis", "Applebees", "Kompost", "Pizzeria", "CityGym", "Frisor",
    "Tandlakaren", "Vardcentral", "SATS", "Clas", "Jula", "Rusta", "Netto", "Willys", "Hemkop",
    "Systembolag", "Apotek24", "Kinguin", "Medicover", "LuxMed", "Enel", "Tauron", "PGNiG", "Vinted",
    "Booksy", "Dentysta", "Pyszne", "Zabka", "Stokrotka", "Carrefour", "Decathlon", "Hotel", "Salong",
    "SalongAnna", "Bilverkstad", "Vetkliniken", "Skola24", "Taxi020", "Yogastudio", "Mataffaren",
    "Doktor", "Optiker", "Ortoped", "Cafe", "Restauracja", "Przychodnia", "Fryzjer", "Warsztat",
    "Hedin", "Ahlens", "Clarion", "Scandic", "Nobis", "Volvofinans", "Polestar", "Northvolt",
)  # fmt: skip

BLOCKED = ("B4NK", "P0L1CE", "p o l i c e", "ВANK", "ΡΟLΙСΕ", "Ｂａｎｋ", "DHL-SE", "myUPS", "PKOBP", "P0LIS",
           "ΗSBC", "Skatteverket", "PostNord", "InPost", "Swedbank", "PayPal", "M1CR0S0FT", "VERIFY",
           "Policja", "Urzad", "ZUSinfo", "Tullverket", "PolisenSE", "mBank", "Nordea24")  # fmt: skip


@pytest.mark.parametrize("name", BENIGN)
def test_a_real_business_name_is_not_an_impersonation(name: str) -> None:
    assert sms.impersonates(name) is None


@pytest.mark.parametrize("name", BLOCKED)
def test_forged_names_are_caught(name: str) -> None:
    problem = sms.sender_problem(name)
    assert problem is not None and "impersonation" in problem


# How each letter may be drawn by a forger: case, look-alike scripts, stand-in digits and symbols.
LOOKS = {
    "a": "aA4@аАα", "b": "bB8вВβΒ", "c": "cCсС", "e": "eE3еЕεΕ€", "h": "hHНһΗ", "i": "iI1!|іІιΙ",
    "k": "kKкКκΚ", "l": "lL1|I", "m": "mMмМΜ", "n": "nNΝ", "o": "oO0оОοΟ", "p": "pPрРρΡ",
    "s": "sS5$ѕЅ", "t": "tT7тТτΤ", "x": "xXхХχΧ", "y": "yYуУΥ",
}  # fmt: skip
SEPARATORS = ["", "", "", " ", ".", "-", "_", "\u200b"]


@st.composite
def forged(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from([*GENERIC, *NAMES]))
    out = []
    for ch in name:
        out.append(draw(st.sampled_from(LOOKS.get(ch, ch + ch.upper()))))
        out.append(draw(st.sampled_from(SEPARATORS)))
    return name, "".join(out)


@settings(max_examples=400)
@given(forged())
def test_every_folded_variant_of_a_blocked_name_is_blocked(case: tuple[str, str]) -> None:
    name, variant = case
    assert sms.impersonates(variant) is not None, (name, variant)


@given(st.text(max_size=30))
def test_folding_is_idempotent_and_yields_plain_ascii(text: str) -> None:
    folded = sms.fold(text)
    assert folded == sms.fold(folded)
    assert all(ch.isascii() and ch.isalnum() for ch in folded)


@given(st.text(max_size=40))
def test_a_sender_problem_never_echoes_hidden_characters(sender: str) -> None:
    problem = sms.sender_problem(sender)
    assert problem is None or all(" " <= ch <= "~" or ch == "…" for ch in problem)


@pytest.mark.parametrize(
    ("sender", "ok"),
    [
        ("Kwiaciarnia", True),
        ("Kwiaciarnia1", False),  # 12 characters
        ("1ACME", False),
        ("Acme Shop", False),
        ("+46701234567", True),
        ("46701234567", True),
        ("", False),
    ],
)
def test_the_sender_format(sender: str, ok: bool) -> None:
    assert (sms.sender_problem(sender) is None) is ok


def test_an_allow_list_admits_only_its_senders_even_one_on_the_block_list() -> None:
    assert sms.sender_problem("MyBank", allow=["MyBank"]) is None
    assert sms.sender_problem("mybank", allow=["MyBank"]) is None
    assert sms.sender_problem("Shop7", allow=["Shop*"]) is None
    assert "allow list" in (sms.sender_problem("Other", allow=["MyBank"]) or "")


def test_impersonation_can_be_turned_off() -> None:
    assert sms.sender_problem("BANK", block_impersonation=False) is None


# -- recipients ----------------------------------------------------------------------------------


def test_recipients_are_read_as_international_numbers_and_counted_once() -> None:
    checked = sms.check_recipients(["48500100200", "+48 500 100 200", "0048500100200", "+46 70-123 45 67"])
    assert checked.problem is None
    assert [(r.e164, r.country) for r in checked.unique] == [("+48500100200", "PL"), ("+46701234567", "SE")]
    assert sms.distinct_recipients(["48500100200", "+48 500 100 200", "+46701234567"]) == 2


@pytest.mark.parametrize(
    ("number", "word"),
    [
        ("+4612", "invalid number"),
        ("not a number", "invalid number"),
        ("+449090000000", "premium"),  # UK premium rate
        ("+48801234567", "shared-cost"),  # PL 801
        ("72345", "short code"),
    ],
)
def test_bad_recipients_name_the_rule(number: str, word: str) -> None:
    checked = sms.check_recipients([number])
    assert checked.problem and word in checked.problem


def test_the_country_allow_list() -> None:
    assert sms.check_recipients(["+46701234567"], countries=["SE"]).problem is None
    problem = sms.check_recipients(["+4915112345678"], countries=["PL", "SE"]).problem
    assert problem and "DE" in problem and "country" in problem
    assert "15112345678" not in problem  # numbers are masked in refusals


def test_premium_numbers_pass_when_the_team_allows_them() -> None:
    assert sms.check_recipients(["+449090000000"], block_premium=False).problem is None


@pytest.mark.parametrize(
    ("value", "numbers"),
    [
        ("+48 600 100 200", ["+48 600 100 200"]),
        ("48600100200,48600100201; 48600100202\n48600100203",
         ["48600100200", "48600100201", "48600100202", "48600100203"]),
        (["+4670111", ["+4670222"]], ["+4670111", "+4670222"]),
        (48600100200, ["48600100200"]),
        (None, []),
        ({"number": "+4670"}, ["{'number': '+4670'}"]),  # an odd shape fails as a number, never unchecked
    ],
)  # fmt: skip
def test_split_recipients(value: object, numbers: list[str]) -> None:
    assert sms.split_recipients(value) == numbers


# -- parts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding", "parts"),
    [
        ("", "GSM-7", 1),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("Hej på dig, Åsa! Ölet är kallt.", "GSM-7", 1),  # å, ä, ö are in the GSM alphabet
        ("€" * 80, "GSM-7", 1),  # an extension character counts twice: 160 septets
        ("€" * 81, "GSM-7", 2),
        ("a" * 152 + "€", "GSM-7", 1),  # 154 septets fit in one part of 160
        ("a" * 159 + "€", "GSM-7", 2),  # 161 septets; the escape is not split from its character
        ("Zażółć gęślą jaźń", "UCS-2", 1),
        ("ą" * 70, "UCS-2", 1),
        ("ą" * 71, "UCS-2", 2),
        ("ą" * 134, "UCS-2", 2),
        ("ą" * 135, "UCS-2", 3),
        ("😀" * 35, "UCS-2", 1),  # an emoji is two UTF-16 units
        ("😀" * 36, "UCS-2", 2),
    ],
)
def test_message_parts(text: str, encoding: str, parts: int) -> None:
    counted = sms.message_parts(text)
    assert (counted.encoding, counted.parts) == (encoding, parts)


def test_a_split_gsm_message_never_breaks_an_escape_across_parts() -> None:
    # 152 plain characters then a €: the € (2 septets) would straddle the 153 boundary.
    assert sms.message_parts("a" * 152 + "€" + "a" * 10).parts == 2
    assert sms.message_parts("a" * 152 + "€" + "a" * 152).parts == 3


def test_describe() -> None:
    assert sms.describe(sms.message_parts("a" * 200), 3) == "2 parts × 3 recipients = 6 messages (GSM-7)"
    assert sms.describe(sms.message_parts("Hej"), 1) == "1 part × 1 recipient = 1 message (GSM-7)"
    assert sms.describe(sms.message_parts("a" * 200), 3, 0.16, "PLN").endswith("about 0.96 PLN")


def test_a_nine_digit_number_is_refused_as_read_two_ways() -> None:
    # SMSAPI reads 9 digits as a Polish number; as international digits they may be another country's.
    for value in ("468123456", "+46 8 123 456", "004681234", "600100200", "+600-100-200"):
        checked = sms.check_recipients([value], countries=["SE", "PL"])
        assert checked.problem is not None and "has 9 digits" in checked.problem, value
    assert sms.check_recipients(["+46 70 123 45 67", "+48 600 100 200"], countries=["SE", "PL"]).problem is None
