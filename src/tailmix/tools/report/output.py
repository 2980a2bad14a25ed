"""Where a report is written and what it may write over.

The default folder, the output paths, the marker a report leaves beside its files, and
the checks that refuse an output which could harm the user's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from tailmix._validation import ParameterError
from tailmix.io import REPORT_MARKER, RUN_FILES

_MAX_FOLDER_NAME = 80  # characters of a default comparison folder's name


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def _default_folder(run_dirs: list[Path]) -> Path:
    """Where a report goes without ``out``: the run folder for one run, else a folder
    ``report-<name1>-vs-<name2>...`` in the runs' common parent (the current directory if
    they share nothing below the root)."""
    if len(run_dirs) == 1:
        return run_dirs[0]
    absolute = [Path(os.path.abspath(p)) for p in run_dirs]
    try:
        parent = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    except ValueError:  # different drives
        parent = None
    if parent is None or parent == Path(parent.anchor):
        parent = Path.cwd()
    names = [_safe_name(p.name)[:32] for p in absolute]
    name = "report-" + "-vs-".join(names)
    if len(name) > _MAX_FOLDER_NAME:
        digest = hashlib.sha1("\0".join(map(str, absolute)).encode()).hexdigest()[:8]
        tail = f"-and-{len(names) - 1}-more-{digest}"
        name = "report-" + names[0][: _MAX_FOLDER_NAME - len("report-") - len(tail)] + tail
    folder = parent / name
    if not any(Path(p).is_absolute() for p in run_dirs):
        try:  # relative in, relative out
            folder = Path(os.path.relpath(folder))
        except ValueError:
            pass
    return folder


def _output_paths(run_dirs: list[Path], out: str | Path | None
                  ) -> tuple[Path, Path | None, Path | None]:
    """The page, the Markdown summary and its figure folder that a report writes; an
    ``.html`` path is the page alone (no summary, no figure folder: None)."""
    if out is None:
        folder = _default_folder(run_dirs)
    else:
        out = Path(out)
        if out.suffix.lower() in (".html", ".htm"):
            return out, None, None
        if out.suffix.lower() == ".md":
            raise ParameterError("out", "a folder or an .html path", str(out))
        folder = out
    return folder / "report.html", folder / "report.md", folder / "report_files"


#: The file a report leaves in every folder it writes its page, summary and figures to:
#: which of the folder's files are its own (JSON, ``{"written_by": "tailmix report",
#: "files": [names]}``). A page named by an ``.html`` path gets none.
MARKER = REPORT_MARKER
# How the pages tailmix.tools.report.page writes begin: recognises reports written before
# the marker.
_HTML_START = b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
_MD_STARTS = (b"# tailmix run report", b"# tailmix comparison of")
_OUT = "-o/--out"


def _marked(folder: Path) -> set[str] | None:
    """The names the folder's marker lists; None without a marker (an unreadable marker
    marks the folder but lists nothing)."""
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    files = data.get("files") if isinstance(data, dict) else None
    return {f for f in files if isinstance(f, str)} if isinstance(files, list) else set()


def _is_our_page(path: Path) -> bool:
    """Whether ``path`` is an HTML page or Markdown summary a report wrote."""
    try:
        with path.open("rb") as f:
            head = f.read(400)
    except OSError:
        return False
    if path.suffix.lower() == ".md":
        return head.startswith(_MD_STARTS)
    return head.startswith(_HTML_START) and b"<title>tailmix " in head


def _is_ours(path: Path, marked: set[str] | None, pages: list[Path]) -> bool:
    """Whether the existing ``path`` (a page or the figure folder) may be rewritten."""
    if marked is not None and path.name in marked:
        return True
    if path.is_file():
        return _is_our_page(path)
    entries = list(path.iterdir())
    # A figure folder from before the marker: PNG files only, beside a page of ours.
    return not entries or (all(e.is_file() and e.suffix == ".png" for e in entries)
                           and any(p.is_file() and _is_our_page(p) for p in pages))


def _is_report_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a report: a marker, or a page of ours (an older report)."""
    if (folder / MARKER).is_file():
        return True
    return any(e.suffix.lower() in (".html", ".md") and e.is_file() and _is_our_page(e)
               for e in folder.iterdir())


def _holds_run(folder: Path) -> bool:
    return any((folder / f).is_file() for f in RUN_FILES)


def _among_run_files(folder: Path) -> bool:
    """Whether ``folder`` is, or is inside, a run's ``checkpoints`` folder or a place named
    after one of its own files (``metrics.json`` before training wrote it). A run folder
    itself, wherever it is, is not."""
    folder = Path(os.path.abspath(folder))
    for path in (folder, *folder.parents):
        if _holds_run(path):
            return False
        if path.name in ("checkpoints", *RUN_FILES) and _holds_run(path.parent):
            return True
    return False


def _check_output(html_path: Path, md_path: Path | None, image_dir: Path | None, *,
                  explicit: bool, force: bool) -> set[str] | None:
    """Refuse an output that could harm the user's files; return the folder's marked names.

    See :func:`build_report` for the rules.
    """
    folder = html_path.parent
    for path in (folder, *folder.parents):  # the first one that exists must be a folder
        if path.exists():
            if not path.is_dir():
                raise ParameterError(_OUT, "a folder or an .html path (a file is in the way)",
                                     str(path))
            break
    # A report's own names (.html, .md, _files) are never a run's file; its folder could be.
    if _among_run_files(folder):
        raise ParameterError(_OUT, "a place outside a run's own files (config.yaml, "
                             "metrics.json, history.jsonl, margins.json, checkpoints/)",
                             str(html_path))
    written = [(p, kind) for p, kind in ((html_path, "file"), (md_path, "file"),
                                         (image_dir, "folder")) if p is not None]
    for path, kind in written:
        if path.exists() and path.is_dir() != (kind == "folder"):
            raise ParameterError(_OUT, f"a place where {path.name} can be written as a {kind}",
                                 str(path))
    if not folder.is_dir():
        return None
    marked = _marked(folder)
    named_page = md_path is None
    if (not explicit and not named_page and marked is None
            and not _holds_run(folder)
            and not _is_report_folder(folder) and any(folder.iterdir())):
        raise ParameterError(
            _OUT, f"a new or empty folder, a run folder, or a folder tailmix report wrote "
            f"(marked by {MARKER}); name it with {_OUT} to write into it anyway", str(folder))
    if force:
        return marked
    pages = [p for p in (html_path, md_path) if p is not None]
    how = "pass --force" if explicit else f"name it with {_OUT} and pass --force"
    for path, _ in written:
        if path.exists() and not _is_ours(path, marked, pages):
            raise ParameterError(
                _OUT, f"a place where {path.name} is new or was written by tailmix report "
                f"(this one was not: write elsewhere, or {how} to overwrite it)", str(path))
    return marked
