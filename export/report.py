"""export_report.json: how the export was made and what it measured."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from distill import __version__
from distill.export.merge import Student
from distill.export.settings import ExportSettings

REPORT_FILE = "export_report.json"


def start(settings: ExportSettings, student: Student) -> dict[str, Any]:
    info = student.info
    return {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "distill_version": __version__,
        "source": {
            "model_dir": str(settings.model_dir),
            "weights_format": info.weights_format,
            "architecture": info.architecture,
            "base_model": info.base_model,
            "filter": f"{info.filter_name}/v{info.filter_version}",
            "dimensions": info.dimensions,
        },
        "settings": settings.to_json(),
        "merge": student.checks,
    }


def finish(result: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Add file sizes (the report itself excluded) once every file is written."""
    result["files"] = {
        p.name: {"bytes": p.stat().st_size, "mib": round(p.stat().st_size / 2**20, 2)}
        for p in sorted(folder.iterdir()) if p.is_file() and p.name != REPORT_FILE
    }
    return result


def write(folder: Path, result: dict[str, Any]) -> Path:
    path = folder / REPORT_FILE
    path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
