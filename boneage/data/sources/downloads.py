"""Resumable HTTP download of a source archive (``fetch.source: https://...``).

A download streams to ``<name>.part`` beside a ``<name>.part.json`` sidecar that keeps the
ETag/Last-Modified, length and checksums it started with; a cut-off one resumes with a Range
request carrying that validator as ``If-Range``, so a file changed on the server is fetched
again, not spliced. Without a validator a download is never resumed: it starts over, and the
log says why (issue 22: a same-size file changed between two attempts was spliced). The part
becomes the file only when it is whole: the length announced at the start, the checksums the
server announced (``Content-MD5``, ``Digest``, ``Repr-Digest``/``Content-Digest``), the SHA-256
the user named (``fetch.sha256``: the digest, or the URL of a ``.sha256`` file beside the
archive), and a complete archive.
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


def download(url: str, download_dir: Path, *, timeout: float = 60.0,
             sha256: str | None = None) -> Path:
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
    reused as is (checked against ``sha256`` when given): delete it to download again.

    ``sha256``: the archive's SHA-256 (64 hex digits), or the http(s) URL of a ``.sha256``
    file that holds it (``sha256sum`` output); the download must match it.
    """
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    folder = Path(download_dir) / key
    final = folder / _download_name(url)
    expected = _expected_sha256(sha256, timeout) if sha256 else None
    if final.is_file():
        if expected:
            _check_sha256(final, expected, url, sha256)
        log.info("fetch: using the earlier download %s of %s", final, url)
        return final
    folder.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    for _ in range(2):  # a second round only after the .part was found unusable
        if _download_once(url, part, timeout):
            if expected:
                _check_sha256(part, expected, url, sha256)
            os.replace(part, final)
            _sidecar(part).unlink(missing_ok=True)
            log.info("fetch: downloaded %s to %s (%d bytes)", url, final, final.stat().st_size)
            return final
    raise DataError(f"download of {url} could not be resumed or restarted")


_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _expected_sha256(given: str, timeout: float) -> str:
    """``fetch.sha256`` as a lower-case digest: the digest itself, or read from the URL of a
    ``.sha256`` file (its first word; ``sha256sum`` writes ``<digest>  <name>``)."""
    text = given.strip()
    if _HEX_SHA256.fullmatch(text):
        return text.lower()
    if not re.match(r"^https?://", text, re.IGNORECASE):
        raise DataError(f"fetch.sha256 {given!r}: give the archive's SHA-256 (64 hex digits) "
                        "or the http(s) URL of a .sha256 file holding it")
    try:
        request = urllib.request.Request(text, headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = resp.read(64 * 1024).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DataError(f"fetch.sha256: cannot read {text}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"fetch.sha256: cannot read {text}: {reason}") from None
    words = body.split()
    if not words or not _HEX_SHA256.fullmatch(words[0]):
        raise DataError(f"fetch.sha256: {text} does not start with a SHA-256 (64 hex digits); "
                        f"it starts {body[:40]!r}")
    return words[0].lower()


def _file_digests(path: Path, algorithms) -> dict[str, str]:
    hashes = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as handle:
        while True:
            block = handle.read(_CHUNK)
            if not block:
                break
            for digest in hashes.values():
                digest.update(block)
    return {name: digest.hexdigest() for name, digest in hashes.items()}


def _check_sha256(path: Path, expected: str, url: str, given: str) -> None:
    actual = _file_digests(path, ["sha256"])["sha256"]
    if actual != expected:
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
        raise DataError(f"download of {url}: its SHA-256 is {actual}, not {expected} "
                        f"(fetch.sha256 {given}); {path} was deleted: check the URL and the "
                        "checksum, then run again")


_DIGEST_NAMES = {"md5": "md5", "sha-256": "sha256", "sha256": "sha256", "sha-512": "sha512",
                 "sha512": "sha512"}


def _announced_digests(headers) -> dict[str, str]:
    """The whole file's checksums a server announced in a full (200) answer, hex by hashlib
    name: ``Content-MD5`` (base64), ``Digest`` (RFC 3230: ``SHA-256=<base64>``) and
    ``Repr-Digest``/``Content-Digest`` (RFC 9530: ``sha-256=:<base64>:``). Unknown
    algorithms and unparsable values are left out."""
    import base64
    import binascii

    found: dict[str, str] = {}

    def add(algorithm: str, value: str) -> None:
        name = _DIGEST_NAMES.get(algorithm.strip().lower())
        if name is None:
            return
        try:
            raw = base64.b64decode(value.strip().strip(":"), validate=True)
        except (binascii.Error, ValueError):
            return
        if len(raw) == hashlib.new(name).digest_size:
            found[name] = raw.hex()

    if headers.get("Content-MD5"):
        add("md5", headers["Content-MD5"])
    for field in ("Digest", "Repr-Digest", "Content-Digest"):
        for item in (headers.get(field) or "").split(","):
            if "=" in item:
                algorithm, value = item.split("=", 1)
                add(algorithm, value)
    return found


def _check_announced(url: str, part: Path, meta: dict | None) -> None:
    """The whole part against the checksums the server announced when the download started."""
    digests = (meta or {}).get("digests") or {}
    if not digests:
        return
    actual = _file_digests(part, digests)
    wrong = [name for name, value in digests.items() if actual[name] != value]
    if wrong:
        _discard(part)
        name = wrong[0]
        raise DataError(f"download of {url}: its {name} is {actual[name]}, not the "
                        f"{digests[name]} the server announced; {part} was deleted: run again "
                        "(if it happens again, the server or something between is corrupting "
                        "the file)")


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


def _record_start(part: Path, url: str, headers, length: int | None) -> dict:
    etag = headers.get("ETag")
    if etag and etag.startswith("W/"):
        etag = None  # If-Range takes only a strong validator
    meta = {"url": url, "etag": etag, "last_modified": headers.get("Last-Modified"),
            "length": length, "digests": _announced_digests(headers)}
    _sidecar(part).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


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
    if have and not validator:
        log.warning("fetch: the server gave %s neither an ETag nor a Last-Modified date, so a "
                    "resume cannot be tied to the same file (one changed in between would be "
                    "spliced onto the first %d bytes); downloading it again from the start",
                    url, have)
        _discard(part)
        have = 0
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
        headers["If-Range"] = validator
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # range past the end: whole, or stale and longer
            total = _content_range_total(exc.headers.get("Content-Range", ""))
            exc.close()
            if total == have and meta.get("length") in (None, total):  # type: ignore[union-attr]
                if _whole(url, part, total, have):
                    _check_announced(url, part, meta)
                    return True
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
            changed = _validator_changed(meta, resp.headers)  # type: ignore[arg-type]
            if start != have or (None not in (expected, total) and expected != total) or changed:
                log.warning(
                    "fetch: server resumed %s at byte %s of %s, not %d of %s%s; starting over",
                    url, start, total, have, expected,
                    f", and its {changed} changed" if changed else "",
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
            meta = _record_start(part, url, resp.headers, length)
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
    if not _whole(url, part, total, done):
        return False
    _check_announced(url, part, meta)
    return True


def _validator_changed(meta: dict, headers) -> str | None:
    """'ETag' or 'Last-Modified' when a 206's validator differs from the one the download
    started with (a server that ignored If-Range), else None."""
    etag = headers.get("ETag")
    if meta.get("etag") and etag and etag != meta["etag"]:
        return "ETag"
    modified = headers.get("Last-Modified")
    if meta.get("last_modified") and modified and modified != meta["last_modified"]:
        return "Last-Modified"
    return None


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
