"""Connection URLs: parsed with errors a user can act on, and printed with passwords masked.

Shared by every tier (Postgres, SQLite paths aside, Redis in all its forms) and the CLI.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit, urlunsplit

from langgraph_resilient.errors import ConfigurationError


def redact(url: str) -> str:
    """``url`` with its password replaced, safe for errors and logs (even when malformed)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}:***@{hostpart}" if colon else url


def split_url(url: str, setting: str, example: str) -> SplitResult:
    """``url`` parsed, or a :class:`ConfigurationError` that names ``setting``, shows the URL
    with its password masked and gives a correct ``example``."""
    if not url.strip():
        raise ConfigurationError(
            f"{setting} is empty: give a URL such as {example}, or leave {setting} unset"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed [
        raise ConfigurationError(
            f"{setting} {redact(url)!r} is malformed ({exc}); for example {example}"
        ) from None
    return parts


def url_hosts(
    parts: SplitResult, default_port: int, setting: str, example: str
) -> list[tuple[str, int]]:
    """The ``host:port`` list of a URL's network location (one, or several separated by
    commas as Sentinel, Cluster and multi-host Postgres URLs allow); IPv6 hosts in brackets."""
    url = urlunsplit(parts)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, port_text = item, ""
        if item.startswith("["):
            host, bracket, after = item[1:].partition("]")
            if not bracket or (after and not after.startswith(":")):
                raise ConfigurationError(
                    f"{setting} {redact(url)!r}: the IPv6 host {item!r} needs its closing "
                    f"bracket, as in [::1]:{default_port}; for example {example}"
                )
            port_text = after[1:]
        elif ":" in item:
            host, _, port_text = item.rpartition(":")
        if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
            raise ConfigurationError(
                f"{setting} {redact(url)!r}: port {port_text!r} of host {host!r} is not a number "
                f"between 1 and 65535; for example {example}"
            )
        hosts.append((host or "127.0.0.1", int(port_text or default_port)))
    return hosts
