"""What counts as a credential in a request, and the masked form a log line may carry instead.

Knows the places the gateway reads credentials from (``Authorization``, ``X-API-Key``, cookies, the
``bearer.<credential>`` subprotocol, ``/t/<secret>/`` paths, ``?token=``) and the shapes credentials
take in free text (a URL's password among them). Knows nothing of logging handlers or of the app; the
settings report masks its strings with the same shapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit
from urllib.request import getproxies

MASK = "[redacted]"

# A header whose value is a credential (by name); Sec-WebSocket-Protocol is masked entry by entry.
_SECRET_HEADER = re.compile(r"auth|key|token|cookie|secret|signature|session", re.IGNORECASE)
# A query parameter whose value is a credential (by name).
_SECRET_PARAM = re.compile(r"token|key|secret|sig|pass|auth|credential|jwt", re.IGNORECASE)

# ``name: value`` / ``name=value`` where the name is a credential header or ends in token / secret. The
# name's own prefix is left out of the match (the value is masked all the same): a ``[\w-]*`` before
# ``token`` would be tried from every character of a long word, quadratic in text a client chooses.
_NAMED_VALUE = (
    r"(?i)((?:x-api-key|authorization|cookie|token|secret)['\"]?\s*[:=]\s*['\"]?)"
    r"(?!\[redacted\])[^\s'\",;&#]+"
)
#: Log fields longer than this are cut (after masking, so no secret is cut in two and left unmasked).
MAX_FIELD_CHARS = 1024


def _masked_param(match: re.Match[str]) -> str:
    if not _SECRET_PARAM.search(match[2]) or match[3].startswith(MASK):
        return match[0]
    return f"{match[1]}{match[2]}={MASK}"


# Credential shapes in free text: the backstop for lines built from unredacted data.
_TEXT_SHAPES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # A URL's password (scheme://user:password@host: a proxy, an identity provider, a basic-auth
    # receiver), user and host kept; up to the authority's last "@". Anchored on "://" and stopped at
    # "/", so no two tries scan the same text: a scheme pattern before it was retried from every
    # character of a long word (8 100 chars: 0.4 s, quadratic). First: "token:" would take the host.
    (re.compile(r"(://[^/\s?#:@]*):[^/\s?#]*@"), rf"\1:{MASK}@"),
    (re.compile(r"(?i)\b(bearer)([ .]+)(?!\[redacted\])[^\s,;'\"\]\)}]+"), rf"\1\2{MASK}"),
    (re.compile(r"(?i)(basic )[A-Za-z0-9+/=]{8,}"), rf"\1{MASK}"),
    (re.compile(r"/t/[^/\s?#'\"]+"), f"/t/{MASK}"),
    # A query parameter named like a credential: the whole name is matched and then judged, since
    # ``\w*(?:token|…)\w*=`` backtracks through every keyword in the name (quadratic).
    (re.compile(r"([?&;])(\w+)=([^&\s'\"#]+)"), _masked_param),
    (re.compile(_NAMED_VALUE), rf"\1{MASK}"),
    (re.compile(r"\bdfg_[A-Za-z0-9_-]{8,}"), "dfg_" + MASK),  # the gateway's own API key format
)


def clip(text: str, most: int = MAX_FIELD_CHARS) -> str:
    """``text`` cut to ``most`` characters, marked as cut (for strings a client chooses)."""
    return text if len(text) <= most else f"{text[:most]}…[{len(text) - most} more]"


def redact_header(name: str, value: str) -> str:
    """The value of header ``name`` as a log line may show it."""
    if name.lower() == "sec-websocket-protocol":
        return ", ".join(redact_subprotocol(p.strip()) for p in value.split(","))
    if _SECRET_HEADER.search(name):
        return MASK
    return redact_text(value)


def redact_subprotocol(offered: str) -> str:
    return "bearer." + MASK if offered.lower().startswith("bearer.") else redact_text(offered)


def redact_path(path: str, query: str = "") -> str:
    """``path`` with a ``/t/<secret>`` prefix masked and ``query``'s credential values masked. The prefix is
    looked for decoded, as the gateway reads it: ``/%74/<secret>`` or ``/t%2F<secret>`` name it too."""
    if "%" in path and unquote(path).startswith("/t/"):
        path = unquote(path)
    if path.startswith("/t/"):
        _, _, rest = path[3:].partition("/")
        path = f"/t/{MASK}/{rest}"
    if not query:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    masked = [(k, MASK if _SECRET_PARAM.search(k) else redact_text(v)) for k, v in pairs]
    return f"{path}?{urlencode(masked, safe='[]')}"


def redact_target(target: str) -> str:
    """A request target (``/path?query``) as a log line may show it."""
    path, _, query = target.partition("?")
    return redact_path(path, query)


class SecretText:
    """Masks known credential shapes and the exact secrets it is given (the process's own)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole; short ones would mask noise.
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return redact_text(text)


def redact_text(text: str) -> str:
    for pattern, replacement in _TEXT_SHAPES:
        text = pattern.sub(replacement, text)
    return text


def url_origin(url: str) -> str:
    """A URL's origin and ``/…``: nothing of its user, path or query (a webhook receiver's URL may carry
    its credential in the path, which no text shape can tell from a path)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port is not None else ""
        host = parts.hostname or ""
    except ValueError:  # not a URL httpx would have sent; nothing of it is kept
        return "[url]"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}/…"


def proxy_url_shown(url: str) -> str:
    """A proxy URL's scheme and authority as a log line may show them: a password in it masked, and a user
    name alone too (it may be a token)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    user_info, at, host = parts.netloc.rpartition("@")
    if not at:
        return f"{parts.scheme}://{host}"
    user, colon, _ = user_info.partition(":")
    return f"{parts.scheme}://{user}:{MASK}@{host}" if colon else f"{parts.scheme}://{MASK}@{host}"


def proxy_environment() -> str:
    """The proxies an HTTP client takes from the environment, as a log line may show them (no password),
    or "" when there are none."""
    found = getproxies()
    shown = [f"{name}_proxy={proxy_url_shown(found[name])}" for name in ("https", "http", "all") if found.get(name)]
    if shown and found.get("no"):
        shown.append(f"no_proxy={found['no']}")
    return ", ".join(shown)
