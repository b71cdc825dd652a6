"""The log of one deploy: ``<logs>/migration_<environment>_<YYYYMMDD_HHMMSS>.log`` (UTC).

One line per event, each with its UTC time and step; the SQL of each migration as it is applied; the
outcome last. Every line goes through the redactor, and is flushed as it is written, so a deploy killed
mid-way leaves a log up to that moment. The file is created with mode 0600.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from pgshift.deploy.redaction import Redactor
from pgshift.errors import ToolError

STAMP = "%Y%m%d_%H%M%S"


class RunLog:
    def __init__(self, folder: Path, environment: str, redactor: Redactor) -> None:
        self._redact = redactor
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ToolError(f"cannot create the logs folder {folder}: {exc.strerror}") from None
        stamp = datetime.now(UTC).strftime(STAMP)
        base, n = f"migration_{environment}_{stamp}", 1
        while True:
            path = folder / (f"{base}.log" if n == 1 else f"{base}_{n}.log")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileExistsError:
                n += 1
            except OSError as exc:
                raise ToolError(f"cannot write the deploy log in {folder}: {exc.strerror}") from None
        self.path = path
        self._file: TextIO = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, step: str, text: str) -> None:
        if self._file.closed:
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        lines = self._redact(text).splitlines() or [""]
        self._file.write(f"{now} [{step}] {lines[0]}\n")
        for line in lines[1:]:
            self._file.write(f"{' ' * len(now)} [{step}] {line}\n")
        self._file.flush()

    def sql(self, name: str, text: str) -> None:
        """The SQL about to be applied, indented under a header line."""
        body = "\n".join("    " + line for line in text.rstrip().splitlines())
        self.write("apply", f"SQL of {name}:\n{body}")

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
