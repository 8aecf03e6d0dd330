"""Errors a user can act on: each names the file, row or field at fault."""


class DataError(ValueError):
    """Input data (labels, archives, folders) is missing or malformed."""


class ImageError(ValueError):
    """One image cannot be decoded or is not a usable radiograph."""
