"""Writing generated library records (fits, trends): one YAML file each, atomically, with a
comment header saying what wrote it; keys sorted so a refit of the same data gives the same
bytes."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel


def write_record(path: Path, header: str, record: BaseModel) -> Path:
    """`header` (comment lines, each starting with '# ') then the record's YAML, atomically."""
    body = yaml.safe_dump(record.model_dump(mode="json", exclude_none=True), sort_keys=True,
                          width=100)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(header + body)
    os.replace(tmp, path)
    return path
