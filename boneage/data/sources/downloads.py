"""Resumable HTTP download of a source archive (``fetch.source: https://...``).

A download streams to ``<name>.part`` beside a ``<name>.part.json`` sidecar that keeps the
ETag/Last-Modified it started with; a cut-off one resumes with a Range request carrying that
validator as ``If-Range``, so a file changed on the server is fetched again, not spliced.
The part becomes the file only when it is whole (announced length, complete archive).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from boneage.kernel.errors import DataError
from boneage.data.sources.integrity import _CHUNK, _archive_problem

log = logging.getLogger("boneage.data.sources")  # one logger for the package, as before the split

_USER_AGENT = "boneage-fetch/1 (python urllib)"


def _download_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name or "download"


def download(url: str, download_dir: Path, *, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``download_dir/<hash of url>/<name>``, resuming a ``.part``.

    The data streams to ``<name>.part`` and is renamed to ``<name>`` only once it is whole:
    as many bytes as the server announced, and a complete archive (a zip whose central
    directory reads; a tar that reaches its end-of-archive marker, its compression's own end
    intact), because a body that stops early with no length announced ends like a finished
    one. A cut-off download is resumed by the next run with an HTTP Range request that
    carries, as ``If-Range``, the ETag (or Last-Modified) the download started with, kept in
    ``<name>.part.json``: a file changed on the server comes back whole (HTTP 200) and
    replaces the part instead of being spliced onto it. The URL hash in the path stops two
    URLs that end in the same file name from sharing a cache entry. A finished file is
    reused as is: delete it to download again.
    """
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    folder = Path(download_dir) / key
    final = folder / _download_name(url)
    if final.is_file():
        log.info("fetch: using the earlier download %s of %s", final, url)
        return final
    folder.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    for _ in range(2):  # a second round only after the .part was found unusable
        if _download_once(url, part, timeout):
            os.replace(part, final)
            _sidecar(part).unlink(missing_ok=True)
            log.info("fetch: downloaded %s to %s (%d bytes)", url, final, final.stat().st_size)
            return final
    raise DataError(f"download of {url} could not be resumed or restarted")


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _sidecar(part).unlink(missing_ok=True)


def _started(part: Path, url: str) -> dict | None:
    """What was recorded when the download in ``part`` started, None if unusable."""
    try:
        meta = json.loads(_sidecar(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("url") == url else None


def _record_start(part: Path, url: str, headers, length: int | None) -> None:
    etag = headers.get("ETag")
    if etag and etag.startswith("W/"):
        etag = None  # If-Range takes only a strong validator
    meta = {"url": url, "etag": etag, "last_modified": headers.get("Last-Modified"),
            "length": length}
    _sidecar(part).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def _download_once(url: str, part: Path, timeout: float) -> bool:
    """One request; True when ``part`` now holds the whole file, False to start over."""
    have = part.stat().st_size if part.exists() else 0
    meta = _started(part, url) if have else None
    if have and meta is None:
        log.warning("fetch: %s has no record of the download it belongs to (%s); starting over",
                    part, _sidecar(part).name)
        _discard(part)
        have = 0
    validator = meta and (meta.get("etag") or meta.get("last_modified"))
    if have and not validator and meta and meta.get("length") is None:
        log.warning("fetch: the server gave %s neither a validator nor a length, so a resume "
                    "could splice two versions; starting over", url)
        _discard(part)
        have = 0
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:
            headers["If-Range"] = validator
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range past the end: whole, or stale and longer
            total = _content_range_total(exc.headers.get("Content-Range", ""))
            exc.close()
            if total == have and meta.get("length") in (None, total):  # type: ignore[union-attr]
                return _whole(url, part, total, have)
            log.warning(
                "fetch: partial download %s does not fit the server's file; starting over", part
            )
            _discard(part)
            return False
        exc.close()
        raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DataError(f"download of {url} failed: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DataError(f"download of {url} failed: {exc}") from None

    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range", ""))
            if total is None and length is not None:
                total = have + length
            expected = meta.get("length")  # type: ignore[union-attr]
            if start != have or (None not in (expected, total) and expected != total):
                log.warning(
                    "fetch: server resumed %s at byte %s of %s, not %d of %s; starting over",
                    url, start, total, have, expected,
                )
                _discard(part)
                return False
            mode = "ab"
            log.info("fetch: resuming %s at byte %d", url, have)
        else:
            if have:
                log.info(
                    "fetch: server sent the whole file (HTTP %d): it changed since the download "
                    "started, or does not resume; downloading %s again",
                    resp.status,
                    url,
                )
            have, total, mode = 0, length, "wb"
            _record_start(part, url, resp.headers, length)
        done = have
        try:
            with (
                open(part, mode) as out,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=f"fetch: {part.stem}",
                    disable=None,
                    leave=False,
                ) as bar,
            ):
                while True:
                    buf = resp.read(_CHUNK)
                    if not buf:
                        break
                    out.write(buf)
                    done += len(buf)
                    bar.update(len(buf))
        except (OSError, http.client.HTTPException) as exc:
            raise DataError(
                f"download of {url} was interrupted after {done} of "
                f"{total if total is not None else '?'} bytes ({exc!r}); "
                f"{part} is kept and the next run resumes it"
            ) from None
    if total is not None and done != total:
        raise DataError(
            f"download of {url} was interrupted after {done} of {total} bytes; "
            f"{part} is kept and the next run resumes it"
        )
    return _whole(url, part, total, done)


def _whole(url: str, part: Path, total: int | None, done: int) -> bool:
    """True if ``part`` is a complete archive; else raise, keeping it only when the server
    never said how long the file is (then the transfer was likely cut, and can resume)."""
    log.info("fetch: checking that %s is a whole archive", part)
    problem = _archive_problem(part)
    if problem is None:
        return True
    if total is None:
        raise DataError(
            f"download of {url} stopped after {done} bytes, the server gave no length, and "
            f"they are not a whole archive ({problem}); {part} is kept and the next run "
            "resumes it"
        )
    _discard(part)
    raise DataError(
        f"download of {url}: all {done} bytes the server announced arrived, but they are not "
        f"a whole zip or tar archive ({problem}); {part} was deleted: check the URL"
    )


def _content_range(value: str) -> tuple[int | None, int | None]:
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", value)
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else None)


def _content_range_total(value: str) -> int | None:
    m = re.match(r"\s*bytes\s+(?:\*|\d+-\d+)/(\d+)", value)
    return int(m.group(1)) if m else None
