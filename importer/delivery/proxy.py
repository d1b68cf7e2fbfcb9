"""The proxy a run's requests go through: HTTPS_PROXY (HTTP_PROXY for http) unless NO_PROXY
names the API's host, as users expect of an HTTP client, and never for loopback.

Chosen once per session, not per request: aiohttp's own `trust_env=True` looks the environment
up again in a thread for every request, and would also send a loopback mock through a proxy
that HTTP_PROXY names. The proxy's credentials (`http://user:password@proxy:3128`) go to the
proxy alone and never into a message.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from importer.delivery.options import is_loopback
from importer.errors import MappingError

if TYPE_CHECKING:
    import aiohttp


def proxy_for(base_url: str) -> str | None:
    """The proxy URL (without credentials) for requests to `base_url`, or None: none is set,
    NO_PROXY names the host, or the host is this machine."""
    return _proxy(base_url)[0]


def client_session(base_url: str, **settings: Any) -> aiohttp.ClientSession:
    """aiohttp.ClientSession(**settings) whose requests to `base_url` go through the
    environment's proxy, when there is one to use."""
    import aiohttp  # here: api/settings.py checks the proxy for commands that send nothing

    proxy, user = _proxy(base_url)
    if proxy is None:
        return aiohttp.ClientSession(**settings)
    with warnings.catch_warnings():
        # aiohttp 3.14 deprecates BasicAuth and proxy_auth for v4 (the project pins <4) in
        # favour of proxy_headers, which ClientSession does not take: only each request does,
        # and this keeps the proxy out of the hot path. Silenced here only.
        warnings.simplefilter("ignore", DeprecationWarning)
        auth = None if user is None else aiohttp.BasicAuth(*user)
        return aiohttp.ClientSession(proxy=proxy, proxy_auth=auth, **settings)


def _proxy(base_url: str) -> tuple[str | None, tuple[str, str] | None]:
    """The proxy without its credentials, and the credentials (user, password) if any."""
    import urllib.request  # its imports (http.client, email) only for a run that sends

    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if not host or is_loopback(host) or urllib.request.proxy_bypass(host):
        return None, None
    found = urllib.request.getproxies().get(parts.scheme.lower())
    if not found:
        return None, None
    proxy = urlsplit(found if "://" in found else f"http://{found}")
    shown = proxy._replace(netloc=proxy.netloc.rpartition("@")[2]).geturl()
    if proxy.scheme.lower() != "http":
        raise MappingError(
            f"the proxy {shown} ({parts.scheme.upper()}_PROXY) is reached over "
            f"{proxy.scheme or 'an unknown scheme'}: only http:// proxies are supported",
            hint="give the proxy as http://HOST:PORT; the API's traffic through it stays TLS",
        )
    if proxy.username is None:
        return shown, None
    return shown, (unquote(proxy.username), unquote(proxy.password or ""))
