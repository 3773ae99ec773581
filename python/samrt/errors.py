"""Exceptions raised by samrt. Each names what went wrong and, where there is one, the fix."""

from __future__ import annotations


class SamrtError(Exception):
    """Base class of samrt's own errors."""


class EngineDirError(SamrtError):
    """An engine directory is missing, incomplete, corrupted or of another format."""


class BackendUnavailableError(SamrtError):
    """The requested backend cannot run here (package or device missing)."""


class ImageNotSetError(SamrtError, RuntimeError):
    """predict() or get_image_embedding() was called before set_image()."""
