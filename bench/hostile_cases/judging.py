"""What an answer says (its first line, the CLI's reason) and whether it meets the target."""

from __future__ import annotations

import json
from pathlib import Path

from hostile_cases.cases import Case
from hostile_cases.limits import CLI_TIMEOUT_S, RSS_LIMIT_MB, SAME_FILM_MONTHS


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def cli_reason(stderr: str) -> str:
    """The CLI's reason: its 'error: ...' line, else the last line (a traceback's exception)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error:"):
            return line[:300]
    return lines[-1][:300] if lines else ""


def answer_line(response) -> str:
    """The first line of what the server said: its reason, or its reading."""
    try:
        body = response.json()
    except ValueError:
        return first_line(response.text)
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list) and detail:
            detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d)
                               for d in detail)
        if detail:
            return first_line(str(detail))
        if "report" in body:
            return first_line(str(body["report"]))
        if "boneage_months" in body:
            return f"boneage_months {body['boneage_months']}"
    return first_line(json.dumps(body))


def judge_http(case: Case, status: int | None, line: str, body: dict | None,
               reference: float | None) -> tuple[bool, str]:
    """(pass, why) of one server answer against the issue's target."""
    if status is None:
        return False, "no HTTP answer (server down, reset or timed out)"
    if status >= 500:
        return False, f"HTTP {status}: a server error"
    if 400 <= status < 500:
        if case.expect == "read":
            return False, f"HTTP {status}: the reference film was refused"
        if not line:
            return False, f"HTTP {status} without a reason"
        return True, f"refused with HTTP {status} and a reason"
    if status != 200:
        return False, f"unexpected HTTP {status}"
    months = body.get("boneage_months") if body else None
    if not isinstance(months, (int, float)):
        return False, "HTTP 200 without boneage_months"
    if case.expect in ("read", "refuse-or-read"):
        return True, f"read as {months:.1f} months"
    if case.expect == "same-as-reference":
        if reference is None:
            return False, f"read as {months:.1f} months; no reference reading to judge it by"
        diff = abs(months - reference)
        ok = diff <= SAME_FILM_MONTHS
        return ok, (f"read as {months:.1f} months, {diff:.1f} from the upright film "
                    f"({'within' if ok else 'beyond'} {SAME_FILM_MONTHS:g})")
    return False, f"read as {months:.1f} months; a refusal was expected"


def judge_cli(case: Case, result: dict) -> tuple[bool, str]:
    if result["timed_out"]:
        return False, f"no answer within {CLI_TIMEOUT_S:g} s"
    if "Traceback (most recent call last)" in result["stderr"]:
        return False, "a traceback instead of a reason"
    if result["peak_rss_mb"] > RSS_LIMIT_MB:
        return False, f"peak RSS {result['peak_rss_mb']:.0f} MB"
    code = result["exit_code"]
    if code != 0:
        if not cli_reason(result["stderr"]):
            return False, f"exit code {code} without a reason"
        if case.expect == "read":
            return False, f"exit code {code}: refused"
        return True, f"refused with exit code {code} and a reason"
    if case.expect in ("refuse-or-read", "read") and first_line(result["stdout"]):
        return True, "read"
    return False, "exit code 0: accepted" + ("" if first_line(result["stdout"]) else
                                             " and printed nothing")


def judge_cli_all(result: dict, ok: bool, why: str) -> tuple[bool, str, dict]:
    """One `predict --json` over every film: besides judge_cli, a row per film that is
    either a reading or an error with a reason (exit 1 just means every film failed)."""
    try:
        rows = json.loads(result["stdout"]) if result["stdout"].strip() else []
    except ValueError:
        return False, "the --json output does not parse", {}
    films = {Path(str(r.get("path", "?"))).name: (first_line(str(r["error"])) if "error" in r
                                                   else r.get("boneage_months"))
             for r in rows}
    if result["exit_code"] == 1 and rows and not result["timed_out"] and \
            "Traceback (most recent call last)" not in result["stderr"]:
        ok, why = True, "every film refused with a reason"
    if ok and any(v in ("", None) for v in films.values()):
        ok, why = False, "a film has neither a reading nor a reason"
    return ok, why, films
