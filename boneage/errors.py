"""Errors a user can act on: each names the file, row or field at fault."""


class DataError(ValueError):
    """Input data (labels, archives, folders) is missing or malformed."""


class ImageError(ValueError):
    """One image cannot be decoded or is not a usable radiograph."""


class NotAFilmError(ImageError):
    """The image decodes but does not look like a hand radiograph (:mod:`boneage.film_check`);
    ``checks`` is the machine-readable verdict."""

    def __init__(self, message: str, checks: dict):
        super().__init__(message)
        self.checks = checks
