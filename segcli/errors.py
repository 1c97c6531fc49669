"""Every error segcli reports on purpose, and the exit code each one maps to.

Library code raises these; `segcli.cli.common.handle_errors` is the one place that turns them into a one-line
message (with its hint) on stderr and an exit code. Anything else is a bug and gets a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # the job ran, some items failed (a batch with unreadable images, ...)
EXIT_USAGE = 2  # bad flag, unknown model, unreadable weights or configuration: nothing could run
EXIT_INTERRUPTED = 130


def first_line(e: BaseException, limit: int = 200, *, typed: bool = False, strerror: bool = False) -> str:
    """The first line of an exception's text (its type name when it has none), for one-line messages; `typed`
    puts the type's name first (`ValueError: ...`), `strerror` gives an OSError's own reason when it has one
    (`Permission denied`, without the path the message names already)."""
    if strerror and isinstance(e, OSError) and e.strerror:
        return e.strerror[:limit]
    text = str(e).strip()
    if not text:
        return type(e).__name__
    line = text.splitlines()[0][:limit]
    return f"{type(e).__name__}: {line}" if typed else line


class Interrupted(KeyboardInterrupt):
    """A signal that ends the command now (a second Ctrl-C, a SIGTERM while waiting on something outside):
    exit code 128 + the signal's number."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


class SegcliError(Exception):
    """Base class: `message` is one line naming the file or thing at fault, `hint` says how to fix it."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(SegcliError):
    """The command line or API call cannot be satisfied as given."""

    exit_code = EXIT_USAGE


class ResourceError(SegcliError):
    """What was asked needs more memory (or another resource) than the machine has, for every image alike."""

    exit_code = EXIT_USAGE


class ConfigError(SegcliError):
    """A registry file, config.json or preprocessor_config.json is invalid or unsupported."""

    exit_code = EXIT_USAGE


class ModelNotFoundError(ConfigError):
    """A `--model` source names no registry entry, directory or Hub repository."""


class NeedsConversionError(ConfigError):
    """A registry model published as an mmseg .pth has not been converted to safetensors yet."""


class CheckpointError(SegcliError):
    """A weights file is unreadable, truncated, or its keys/shapes do not match the architecture."""

    exit_code = EXIT_USAGE


class DownloadError(SegcliError):
    """A file could not be fetched from (or found offline in the cache of) the Hugging Face Hub."""

    exit_code = EXIT_USAGE


class NotCachedError(DownloadError):
    """A file that is neither in the cache nor downloadable now (offline, or the Hub unreachable)."""


class ManualDownloadError(DownloadError):
    """A registry entry whose files are published where segcli cannot fetch them (e.g. Google Drive)."""


class IntegrityError(DownloadError):
    """A downloaded file's sha256 differs from the one pinned in the registry."""


class EntryMissingError(DownloadError):
    """The Hub repository and revision exist but do not have the file."""


class ImageError(SegcliError):
    """One input image could not be read or decoded; batches report it and go on."""

    exit_code = EXIT_FAILED


class LabelRangeError(ImageError):
    """Ground-truth or predicted values outside the class range (and not the ignore index)."""


class UnreducedLabelsError(LabelRangeError):
    """Ground truth that looks like a raw ADE20K annotation (0 = other, 1..K = classes): nothing can be scored."""

    exit_code = EXIT_USAGE


class ModelOutputError(SegcliError):
    """The model produced logits that cannot be labels (NaN / inf, or every class equal everywhere)."""

    exit_code = EXIT_USAGE


class MissingExtraError(ConfigError):
    """An optional dependency (an extra such as `[onnx]`) is not installed: a configuration error (exit 2)."""
