"""Errors a user can act on: each names the file, row, field or setting at fault.

Everything a user can fix derives from :class:`BoneAgeError`. The stage runner and the CLI
catch that class only: they print its message on one line and exit with
:data:`EXIT_USER_ERROR`. Anything else is a bug in boneage and keeps its stack trace.
The classes also derive from ``ValueError`` (what they are), so callers that catch a bad
value keep working.
"""

EXIT_USER_ERROR = 2  # the status argparse gives a bad command line: fix your input


class BoneAgeError(Exception):
    """A problem in what the user gave (params, data, a film, an argument, the set-up)."""


class ParamsError(BoneAgeError, ValueError):
    """``params.yaml`` is missing, malformed, or holds an unknown key or a bad value."""


class DataError(BoneAgeError, ValueError):
    """Input data (labels, archives, folders, stage outputs) is missing or malformed."""


class ImageError(BoneAgeError, ValueError):
    """One image cannot be decoded or is not a usable radiograph."""


class NotAFilmError(ImageError):
    """The image decodes but does not look like a hand radiograph (:mod:`boneage.imaging.film_check`);
    ``checks`` is the machine-readable verdict."""

    def __init__(self, message: str, checks: dict):
        super().__init__(message)
        self.checks = checks


FORCE_HINT = "read it anyway with --force (web API: force=true)"
"""How a user reads a film that a check refused as not a hand radiograph: the film check
(:mod:`boneage.imaging.film_check`) and the DICOM header (:mod:`boneage.imaging.dicom_header`)."""


class UsageError(BoneAgeError, ValueError):
    """A command-line argument or a request field is invalid (sex, an age, a model folder)."""


class SetupError(BoneAgeError, ValueError):
    """The environment is not as the run needs it: a weights file or wheel missing,
    ``TF_CONFIG`` absent, a tool not installed."""
