"""Masking credentials in URLs, so logs and error messages never show a password."""

from __future__ import annotations

import re

# scheme://user:password@host → scheme://user:***@host, for any scheme. The secret runs to the
# last `@` before white space, so a stray `@` inside a password cannot leave half of it visible
# (masking a little too much is the safe side).
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)\S*@")


def mask_secrets(text: object) -> str:
    """Return `text` (a URL, or a message containing URLs) with every password as `***`."""
    return _PASSWORD.sub(r"\g<head>***@", str(text))
