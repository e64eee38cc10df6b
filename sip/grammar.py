"""The SIP grammar of RFC 3261 §25.1 (with RFC 3966 for tel URIs), as named regular expressions.

Every fragment is named after its ABNF rule and compiled once, at import. The patterns are written
so that the regex engine runs in linear time (no nested quantifiers over overlapping sets): a
hostile 64 KiB header must not cost more than its length.

The grammar is deliberately liberal where RFC 4475 §3.1.1 asks a parser to be (LWS anywhere the ABNF
allows it, escapes, unusual tokens), and strict where RFC 4475 §3.1.2 asks for a 400.
"""

from __future__ import annotations

import re

__all__ = [
    "ADDR_SPEC",
    "CALL_ID",
    "COMPACT_ADDRESS",
    "COMPACT_PARAMS",
    "COMPACT_VIA",
    "CSEQ",
    "GENERIC_PARAM",
    "LIST_ELEMENT",
    "MEDIA_TYPE",
    "NAME_ADDR",
    "OTHER_URI",
    "SIP_URI",
    "SIP_VERSION",
    "STATUS_LINE",
    "TEL_URI",
    "TOKEN",
    "URI_HEADER",
    "URI_PARAM",
    "VIA_SENT_PROTOCOL",
]

# --- character classes (RFC 3261 §25.1) ----------------------------------------------------------
_ALPHANUM = "A-Za-z0-9"
_MARK = r"\-_.!~*'()"
_UNRESERVED = _ALPHANUM + _MARK
_TOKEN_CHARS = _ALPHANUM + r"\-.!%*_+`'~"
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_SWS = r"[ \t]*"
_LWS = r"[ \t]+"

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = f"[{_TOKEN_CHARS}]+"
# quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE
_QUOTED_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'

# user = 1*(unreserved / escaped / user-unreserved); user-unreserved = & = + $ , ; ? /
_USER = rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+"
# password = *(unreserved / escaped / & = + $ ,)
_PASSWORD = rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*"
# host = hostname / IPv4address / IPv6reference. Kept liberal (no nested label quantifiers, which
# backtrack quadratically); the RFC 5118 §4.10 "three colons" form is accepted on purpose.
_HOSTNAME_OR_IPV4 = rf"[{_ALPHANUM}\-._]+"
_IPV6_REFERENCE = r"\[[0-9A-Fa-f:.]+\]"
_HOST = f"(?:{_HOSTNAME_OR_IPV4}|{_IPV6_REFERENCE})"
_PORT = "[0-9]{1,5}"
# paramchar = param-unreserved / unreserved / escaped; param-unreserved = [ ] / : & + $
_PARAMCHAR = rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})"
_URI_PARAMETERS = rf"(?:;{_PARAMCHAR}+(?:={_PARAMCHAR}*)?)*"
# hnv-unreserved = [ ] / ? : + $
_HNVCHAR = rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})"
_HEADERS = rf"{_HNVCHAR}+={_HNVCHAR}*(?:&{_HNVCHAR}+={_HNVCHAR}*)*"

#: SIP-URI / SIPS-URI (RFC 3261 §19.1.1, §25.1).
SIP_URI = re.compile(
    r"(?P<scheme>(?i:sips?)):"
    rf"(?:(?P<user>{_USER})(?::(?P<password>{_PASSWORD}))?@)?"
    rf"(?P<host>{_HOST})(?::(?P<port>{_PORT}))?"
    rf"(?P<params>{_URI_PARAMETERS})"
    rf"(?:\?(?P<headers>{_HEADERS}))?\Z"
)
#: uri-parameter: one ``;name[=value]`` of a SIP URI.
URI_PARAM = re.compile(rf";({_PARAMCHAR}+)(?:=({_PARAMCHAR}*))?")
#: header: one ``hname=hvalue`` of a SIP URI's headers part.
URI_HEADER = re.compile(rf"({_HNVCHAR}+)=({_HNVCHAR}*)")
#: telephone-subscriber of a tel URI (RFC 3966 §3), kept liberal.
TEL_URI = re.compile(
    r"(?P<scheme>(?i:tel)):(?P<number>[0-9A-Fa-f*#+\-.()]+)"
    rf"(?P<params>{_URI_PARAMETERS})\Z"
)
#: absoluteURI of any other scheme (RFC 3261 §25.1): the scheme-specific part stays opaque.
OTHER_URI = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+\-.]*):(?P<opaque>[^\s<>\"]+)\Z")

#: token, alone.
TOKEN = re.compile(_TOKEN)
#: generic-param = token [ EQUAL gen-value ]; gen-value = token / host / quoted-string, preceded by
#: SEMI. Values keep their quotes; the host form admits a bare IPv6 address (RFC 5118 §4.5).
GENERIC_PARAM = re.compile(
    rf"{_SWS};{_SWS}(?P<name>{_TOKEN})"
    rf"(?:{_SWS}={_SWS}(?P<value>[{_TOKEN_CHARS}:\[\]]+|{_QUOTED_STRING}))?{_SWS}",
    re.S,
)

#: *(SEMI generic-param) written without LWS or quotes, the common case, split without a regex.
_COMPACT_PARAMS = rf"(?:;{_TOKEN}(?:=[{_TOKEN_CHARS}:\[\]]+)?)*"
COMPACT_PARAMS = re.compile(rf"{_COMPACT_PARAMS}\Z")

#: name-addr = [ display-name ] LAQUOT addr-spec RAQUOT, followed by the header's parameters.
#: display-name = *(token LWS) / quoted-string; the LWS before LAQUOT may be absent
#: (RFC 4475 §3.1.1.6).
NAME_ADDR = re.compile(
    rf"(?:(?P<quoted>{_QUOTED_STRING})|(?P<token>{_TOKEN}(?:{_LWS}{_TOKEN})*))?"
    rf"{_SWS}<(?P<uri>[^<>\s]+)>{_SWS}",
    re.S,
)
#: addr-spec without angle brackets: its ``;`` parameters belong to the header (RFC 3261 §20.10).
ADDR_SPEC = re.compile(r"(?P<uri>[^;<>\"\s]+)")

#: A whole name-addr or addr-spec with its parameters, written without LWS around the separators,
#: escapes in the display name or quoted parameter values: the common case, in one match. Anything
#: else goes through NAME_ADDR / ADDR_SPEC and GENERIC_PARAM, which give the same values.
COMPACT_ADDRESS = re.compile(
    rf'(?:(?:"(?P<quoted>[^"\\]*)"|(?P<token>{_TOKEN}(?: {_TOKEN})*))? ?<(?P<uri>[^<>\s]+)>'
    rf'|(?P<spec>[^;<>"\s]+))(?P<params>{_COMPACT_PARAMS})\Z'
)

#: via-parm's sent-protocol and sent-by (RFC 3261 §20.42); LWS is allowed around the slashes.
VIA_SENT_PROTOCOL = re.compile(
    rf"(?i:SIP){_SWS}/{_SWS}2\.0{_SWS}/{_SWS}(?P<transport>{_TOKEN}){_LWS}"
    rf"(?P<host>{_HOST})(?:{_SWS}:{_SWS}(?P<port>{_PORT}))?"
)

#: A whole via-parm written without LWS or quoted values, the common case, in one match.
COMPACT_VIA = re.compile(
    rf"SIP/2\.0/(?P<transport>[A-Za-z]+) (?P<host>{_HOST})(?::(?P<port>{_PORT}))?"
    rf"(?P<params>{_COMPACT_PARAMS})\Z"
)

#: CSeq = 1*DIGIT LWS Method (RFC 3261 §20.16).
CSEQ = re.compile(rf"(?P<seq>[0-9]{{1,10}}){_LWS}(?P<method>{_TOKEN})")
#: callid = word [ "@" word ] (RFC 3261 §20.8), any visible characters.
CALL_ID = re.compile(r"[!-~\x80-\U0010ffff]+")
#: SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT.
SIP_VERSION = re.compile(r"(?i:SIP)/(?P<major>[0-9]+)\.(?P<minor>[0-9]+)")
#: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase.
STATUS_LINE = re.compile(r"SIP/2\.0 (?P<status>[1-6][0-9]{2})(?: (?P<reason>.*))?\Z", re.S)
#: media-type = m-type SLASH m-subtype *(SEMI m-parameter), keeping only type and subtype.
MEDIA_TYPE = re.compile(rf"{_SWS}(?P<type>{_TOKEN}){_SWS}/{_SWS}(?P<subtype>{_TOKEN}){_SWS}")
#: One element of a comma-separated header list, aware of quoted strings and <...>.
LIST_ELEMENT = re.compile(r'(?:"[^"\\]*(?:\\.[^"\\]*)*"?|<[^<>]*>?|[^,"<]+)+', re.S)
