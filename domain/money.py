"""Exact money: ISO 4217 currencies, their minor units, rounding and parsing."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

# Circulating ISO 4217 codes; funds and metals (BOV, XAU, ...) are not prices a buyer pays.
_CIRCULATING = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP
    MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR
    RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER
    ZAR ZMW ZWG
"""
_NO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_CURRENCIES = frozenset(_CIRCULATING.split())
_MINOR_UNITS = {code: 0 for code in _NO_DECIMALS.split()} | {
    code: 3 for code in _THREE_DECIMALS.split()
}

# A plain decimal string: no sign, no exponent, a sane number of digits.
_MONEY_PATTERN = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")  # ASCII digits only
MONEY_CEILING = Decimal(10**12)  # money has at most 12 digits before the point


def is_known_currency(code: str) -> bool:
    """Whether `code` is a circulating ISO 4217 currency code."""
    return code in _CURRENCIES


def minor_unit(currency: str) -> int:
    """The number of decimals of the currency's minor unit."""
    return _MINOR_UNITS.get(currency, 2)


def quantum(currency: str) -> Decimal:
    """The currency's smallest amount, e.g. Decimal("0.01") for EUR."""
    return Decimal(1).scaleb(-minor_unit(currency))


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Rounds half up to the currency's minor unit, as a till does."""
    return amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)


def fits_currency(amount: Decimal, currency: str) -> bool:
    """Whether `amount` is finite and has no more decimals than the currency allows."""
    if not amount.is_finite():
        return False
    return amount == amount.quantize(quantum(currency), rounding=ROUND_HALF_UP)


def parse_money(text: str, currency: str) -> Decimal:
    """Parses a decimal string such as "79.00"; raises ValueError saying what is wrong."""
    if not _MONEY_PATTERN.fullmatch(text):
        msg = f'must be a decimal string such as "79.00", not {text!r}'
        raise ValueError(msg)
    amount = Decimal(text)
    if not fits_currency(amount, currency):
        msg = f"has more than {minor_unit(currency)} decimals, which {currency} does not allow"
        raise ValueError(msg)
    return round_money(amount, currency)
