"""The shipped impersonation list for sender IDs (SPEC §11): names a stranger's SMS must not claim.

Written plainly; proxy/sms.py folds them (and every sender) before comparing. GENERIC words are
refused wherever they appear in a sender ("MyBankSE", "PolisenInfo"); the 46elks server refuses
the same words. NAMES are institutions and brands most often forged in SMS phishing in Sweden,
Poland and beyond: one of six or more folded letters is refused wherever it appears, a shorter
one only alone or dressed in an AFFIX ("DHL-SE", "UPSinfo", "myPKO"), so "Ingrid" or "Sebastian"
is not mistaken for ING or SEB. A team that really is one of them lists its sender in
`sms.senders.allow`.
"""

from __future__ import annotations

GENERIC = (
    # the 46elks server's own list
    "bank", "police", "government", "official", "urgent", "winner", "prize", "security",
    "verify", "confirm", "alert", "warning",
    # the same words in Swedish and Polish, and their kin
    "banken", "polisen", "polismyndigheten", "policja", "policji", "regeringen", "myndighet",
    "sakerhet", "bezpieczenstwo", "verification", "weryfikacja", "verifiering", "customs",
    "taxoffice", "skatteverket", "tullverk", "kronofogden", "forsakringskassan",
    "urzadskarbowy", "skarbow", "urzad", "myndig", "poczta", "pocztex", "bankid",
    # the 46elks server's other words in Swedish and Polish: warning, winner, prize, confirm,
    # urgent ("vinst" is left out: it is inside ordinary names such as "KevinStore")
    "varning", "ostrzezenie", "vinnare", "zwyciezca", "nagroda", "wygrana", "bekrafta", "potwierdz",
    "bradskande", "pilne",
)  # fmt: skip

NAMES = (
    # police, tax, customs and other authorities
    "polis", "hmrc", "irs", "dvla", "nhs", "gov", "govuk", "govpl", "mobywatel", "epuap", "zus",
    "krus", "kas", "csn", "tull", "transportstyrelsen", "migrationsverket", "pensionsmyndigheten",
    "arbetsformedlingen", "europol", "interpol", "skatt", "tax", "trangselskatt", "podatek",
    # banks and payments
    "swedbank", "handelsbanken", "seb", "nordea", "danske", "lansforsakringar", "skandia", "sbab",
    "avanza", "klarna", "swish", "pko", "pkobp", "ipko", "pekao", "santander", "mbank", "ing",
    "millennium", "alior", "bnp", "bnpparibas", "citibank", "creditagricole", "velobank",
    "nestbank", "blik", "revolut", "paypal", "visa", "mastercard", "amex", "americanexpress",
    "hsbc", "barclays", "lloyds", "natwest", "monzo", "coinbase", "binance",
    # parcel carriers and post
    "postnord", "posten", "post", "inpost", "pocztapolska", "dhl", "dhlexpress", "ups", "fedex",
    "dpd", "gls", "tnt", "budbee", "instabox", "instabee", "bring", "schenker", "dbschenker",
    "airmee", "royalmail", "usps", "orlenpaczka",
    # platforms and operators most often forged
    "apple", "icloud", "google", "microsoft", "amazon", "netflix", "facebook", "whatsapp",
    "instagram", "telegram", "allegro", "olx", "telia", "telenor", "tele2",
)  # fmt: skip

AFFIXES = (
    "se", "pl", "uk", "gb", "us", "eu", "de", "no", "dk", "fi", "com", "org", "net", "my", "the",
    "info", "sms", "service", "services", "support", "help", "team", "center", "centre", "online",
    "mobile", "app", "pay", "id", "ab", "sa", "ltd", "inc", "group", "24", "bp", "express",
    "sverige", "polska", "sweden", "poland", "kundservice", "kundtjanst", "obsluga", "pomoc",
    "konto", "account", "card", "kort", "karta", "noreply", "notify", "notice", "delivery",
    "parcel", "paczka", "paket", "leverans", "tracking", "track",
)  # fmt: skip
