"""Credentials are never shown nor logged: `mask_credentials` hides the secrets of URLs in any
text (error lines, tracebacks, log records, the logged config, MLflow params and tags).

What is hidden: the password of a URL's user info (`postgresql://user:***@host/db`, the way
SQLAlchemy's `URL.render_as_string(hide_password=True)` writes it), and the value of query
parameters whose name says it is a secret (`?password=***`, `&token=***`, `sig=***`,
`X-Amz-Credential=***`, ...). Host, port, user name and database stay readable: they are what
a user needs to see which store failed. Masking errs on the side of hiding more: a password
with a raw `@` or `/` is hidden up to the last `@` of its word.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://user:password@ -- the password runs to the last "@" of the word (not across
# whitespace or quotes, so the next word of a message is never taken for it).
_USERINFO = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"<>]*:)(?P<secret>[^\s'\"<>]*)@"
)
# ?name=value, &name=value (query strings) and " name=value" (libpq-style key=value strings)
# where the name holds a word for a secret.
_SECRET_PARAM = re.compile(
    r"(?P<head>(?:^|[?&;\s])[\w.\-]*(?:pass|pwd|secret|token|key|sig|credential|auth|session)"
    r"[\w.\-]*=)(?P<secret>[^&\s'\"<>#]*)",
    re.IGNORECASE | re.MULTILINE,
)


def mask_credentials(text: str) -> str:
    """`text` with the passwords and secret query values of every URL in it replaced by ***."""
    if "://" not in text and "=" not in text:
        return text  # the common case: nothing that could hold a secret
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK if m['secret'] else ''}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['head']}{MASK if m['secret'] else ''}", text)


def mask_value(value):
    """A param or tag value with its credentials masked (non-strings are returned as they are)."""
    return mask_credentials(value) if isinstance(value, str) else value


def mask_log_records() -> None:
    """Mask credentials in every log record from now on, whichever logger or handler writes
    it: MLflow, Optuna and SQLAlchemy log through handlers of their own, some set up only when
    the library is imported (after this is called), so the records are masked where they are
    made (logging's record factory)."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "masks_credentials", False):
        return

    def masked_record(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it when the record is written
            return record
        masked = mask_credentials(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    masked_record.masks_credentials = True
    logging.setLogRecordFactory(masked_record)
