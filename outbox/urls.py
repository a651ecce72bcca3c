"""Masking credentials in URLs, so logs and error messages never show a password."""

from __future__ import annotations

import re

# scheme://user:password@host → scheme://user:***@host, for any scheme. The secret runs to the
# last `@` before white space, so a stray `@` inside a password cannot leave half of it visible
# (masking a little too much is the safe side).
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)\S*@")

# `?password=...` in a URL's query, and libpq's `password=... ` / `password='...'` key=value
# strings (psycopg's conninfo), where the secret is a parameter's value rather than userinfo.
_PARAMETER = re.compile(
    r"(?P<key>\b(?:ssl)?(?:password|passwd|pwd|passphrase|secret|token)\s*=\s*)"
    r"(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,'\")]+)",
    re.IGNORECASE,
)


def mask_secrets(text: object) -> str:
    """Return `text` (a URL, or a message containing URLs) with every password as `***`."""
    return _PARAMETER.sub(r"\g<key>***", _PASSWORD.sub(r"\g<head>***@", str(text)))
