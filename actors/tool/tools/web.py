"""``web.fetch``: GET a URL on an allow-listed host; HTML comes back as text.

Redirects are followed by hand, each target checked against the allow-list (a redirect to
another host is refused, not followed). The body is read up to ``tools.web.max_bytes``; the
whole fetch is bounded by ``tools.web.timeout``. No cookies, no proxies or ``.netrc`` from
the environment (``trust_env=False``).
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Annotated, Any
from urllib.parse import urljoin, urlsplit

import msgspec
import trio

from convergiod.errors import OpError

from ..base import Policy, ToolContext, ToolOutput
from . import ToolEnv
from .fs_read import _Args

REDIRECTS = frozenset((301, 302, 303, 307, 308))
#: Ask for no compression: a small compressed body can expand enormously.
HEADERS = {"accept-encoding": "identity", "user-agent": "convergio-web-fetch/1"}
TEXTUAL = ("text/", "application/json", "application/xml", "application/xhtml", "+json", "+xml")


class FetchArgs(_Args):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=8192)]
    max_bytes: Annotated[int, msgspec.Meta(ge=1)] | None = None
    raw: Annotated[bool, msgspec.Meta(description="return HTML as is, not as text")] = False


def host_allowed(host: str, allow: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allow:
        entry = entry.lower().rstrip(".")
        if entry == "*" or entry == host:
            return True
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
    return False


class WebFetch:
    name = "web.fetch"
    description = (
        "Fetch a web page or document by URL (GET) from an allow-listed host; HTML is returned "
        "as plain text."
    )
    args_type: type[msgspec.Struct] = FetchArgs
    #: The host allow-list is the boundary: outside it nothing is fetched, whatever the policy.
    default_policy: Policy = "auto"

    def __init__(self, env: ToolEnv) -> None:
        self.env = env
        self._ssl: Any = None

    def summarize(self, args: FetchArgs) -> str:
        return f"fetch {args.url}"

    def approval_key(self, ctx: ToolContext, args: FetchArgs) -> str:
        """``always`` covers the URL's host."""
        return (urlsplit(args.url).hostname or "").lower()

    def _check(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise OpError("sandbox_denied", f"{url}: only http and https URLs can be fetched")
        host = parts.hostname or ""
        if not host:
            raise OpError("bad_request", f"{url}: no host")
        if parts.username or parts.password:
            raise OpError("sandbox_denied", f"{url}: credentials in URLs are refused")
        if not host_allowed(host, self.env.config.web.allow_hosts):
            raise OpError(
                "sandbox_denied", f"{host} is not in the allow-list (tools.web.allow_hosts)"
            )
        return host

    async def run(self, ctx: ToolContext, args: FetchArgs) -> ToolOutput:
        import httpx

        cfg = self.env.config.web
        cap = min(args.max_bytes or cfg.max_bytes, cfg.max_bytes)
        url = args.url
        self._check(url)
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        timeout = min(cfg.timeout, ctx.timeout)
        try:
            with trio.fail_after(timeout):
                async with httpx.AsyncClient(
                    follow_redirects=False, trust_env=False, verify=self._ssl, timeout=timeout
                ) as client:
                    for _ in range(cfg.max_redirects + 1):
                        async with client.stream("GET", url, headers=HEADERS) as resp:
                            if resp.status_code in REDIRECTS and "location" in resp.headers:
                                url = urljoin(url, resp.headers["location"])
                                try:
                                    self._check(url)
                                except OpError as exc:
                                    raise OpError(
                                        exc.code, f"redirect to {url} refused: {exc.message}"
                                    ) from None
                                continue
                            body, truncated = await _read_capped(resp, cap)
                            return _output(resp, url, body, truncated, args.raw)
                    raise OpError("bad_request", f"more than {cfg.max_redirects} redirects")
        except trio.TooSlowError:
            raise OpError("timeout", f"fetching {url} took longer than {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise OpError("bad_request", f"fetching {url} failed: {exc!r}") from None


async def _read_capped(resp: Any, cap: int) -> tuple[bytes, bool]:
    buf = bytearray()
    async for chunk in resp.aiter_bytes():
        buf += chunk
        if len(buf) > cap:
            return bytes(buf[:cap]), True
    return bytes(buf), False


def _output(resp: Any, url: str, body: bytes, truncated: bool, raw: bool) -> ToolOutput:
    ctype = resp.headers.get("content-type", "").lower()
    data = {"url": url, "status": resp.status_code, "content_type": ctype, "bytes": len(body)}
    if ctype and not any(t in ctype for t in TEXTUAL):
        return ToolOutput(
            content=f"{url}: {ctype} content, {len(body)} bytes (not text; not shown)",
            data={**data, "binary": True},
            truncated=truncated,
        )
    charset = resp.charset_encoding or "utf-8"
    try:
        text = body.decode(charset, errors="replace")
    except LookupError:
        text = body.decode("utf-8", errors="replace")
    if not raw and ("html" in ctype or (not ctype and "<html" in text[:1000].lower())):
        text = html_to_text(text)
    head = f"[HTTP {resp.status_code}] {url}\n\n" if resp.status_code >= 400 else ""
    return ToolOutput(content=head + text, data=data, truncated=truncated)


# ----------------------------------------------------------------------------- HTML to text

_BLOCK = frozenset(
    (
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul", "title",
    )
)  # fmt: skip
_SKIP = frozenset(("script", "style", "noscript", "template", "svg", "head"))


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP:
            self.skip += 1
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP and self.skip:
            self.skip -= 1
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self.skip:
            self.parts.append(data)


def html_to_text(source: str) -> str:
    parser = _Text()
    try:
        parser.feed(source)
        parser.close()
    except Exception:  # a broken page still gives whatever text was parsed
        pass
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\r\f\v]+", " ", html.unescape(text))
    text = re.sub(r" *\n[ \n]*", "\n", text).strip()
    title = " ".join(parser.title.split())
    return f"{title}\n\n{text}" if title else text
