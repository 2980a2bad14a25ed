"""The HTML page and Markdown summary written from the sections, and :func:`build_report`,
which reads the runs, checks the output and writes them."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path

from tailmix._validation import ParameterError
from tailmix.io import atomic_write_bytes, atomic_write_text
from tailmix.tools.report.content import _comparison_sections, _run_sections, _Section, _Table
from tailmix.tools.report.output import MARKER, _check_output, _output_paths
from tailmix.tools.report.runs import RunRecord, _slug, load_run

# ----------------------------------------------------------------------------- writers

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; color: #1d2330; background: #f6f7f9; font-size: 15px; line-height: 1.45; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 21px; margin: 32px 0 10px; border-bottom: 2px solid #d8dce3;
     padding-bottom: 4px; }
h3 { font-size: 17px; margin: 22px 0 8px; }
.subtitle { color: #5a6272; margin: 0 0 16px; }
nav { background: #fff; border: 1px solid #d8dce3; border-radius: 6px; padding: 8px 16px;
      font-size: 14px; }
nav a { color: #2458b3; text-decoration: none; margin-right: 14px; white-space: nowrap; }
table { border-collapse: collapse; background: #fff; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #d8dce3; padding: 4px 10px; text-align: right; }
th { background: #eef1f5; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
td b { color: #0b5d1e; }
figure { margin: 10px 0; background: #fff; border: 1px solid #d8dce3; border-radius: 6px;
         padding: 8px; display: inline-block; max-width: calc(100% - 18px); }
figure img { display: block; max-width: 100%; height: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.note { color: #5a6272; font-size: 13px; }
details { margin: 6px 0; }
details > summary { cursor: pointer; color: #2458b3; }
details.run { background: #fff; border: 1px solid #d8dce3; border-radius: 6px;
              padding: 4px 16px 16px; margin: 16px 0; }
details.run > summary { font-size: 19px; font-weight: 600; color: #1d2330; padding: 6px 0; }
pre { background: #fff; border: 1px solid #d8dce3; padding: 10px; overflow-x: auto;
      font-size: 13px; }
"""


def _html_table(table: _Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for i, row in enumerate(table.rows):
        cells = []
        for j, cell in enumerate(row):
            text = html.escape(cell)
            cells.append(f"<td><b>{text}</b></td>" if (i, j) in table.bold else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    page = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if table.summary:
        page = f"<details><summary>{html.escape(table.summary)}</summary>{page}</details>"
    return page


def _html_section(section: _Section) -> str:
    tag = f"h{section.level}"
    parts = [f'<{tag} id="{section.anchor}">{html.escape(section.title)}</{tag}>']
    parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
    parts += [_html_table(t) for t in section.tables]
    if section.footnote:
        parts.append(f'<p class="note">{html.escape(section.footnote)}</p>')
    if section.images:
        figures = []
        for img in section.images:
            data = base64.b64encode(img.png).decode("ascii")
            figures.append(
                f'<figure><img alt="{html.escape(img.title)}" style="width: {img.width_px}px" '
                f'src="data:image/png;base64,{data}"></figure>'
            )
        parts.append('<div class="figures">' + "".join(figures) + "</div>")
    if section.code:
        parts.append(
            "<details><summary>full resolved config</summary>"
            f"<pre>{html.escape(section.code)}</pre></details>"
        )
    return "\n".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: _Table) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in table.header) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(table.header) - 1)) + "|")
    for i, row in enumerate(table.rows):
        cells = [
            f"**{_md_cell(c)}**" if (i, j) in table.bold else _md_cell(c) for j, c in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    if table.summary:
        text = f"<details><summary>{html.escape(table.summary)}</summary>\n\n{text}\n\n</details>"
    return text


def _md_section(section: _Section, image_dir: str) -> str:
    parts = ["#" * section.level + " " + section.title]
    parts += section.paragraphs
    parts += [_md_table(t) for t in section.tables]
    if section.footnote:
        parts.append(f"*{section.footnote}*")
    parts += [f"![{img.title}]({image_dir}/{img.name}.png)" for img in section.images]
    if section.code:
        parts.append(
            "<details><summary>full resolved config</summary>\n\n```yaml\n"
            + section.code.rstrip()
            + "\n```\n\n</details>"
        )
    return "\n\n".join(parts)


def _unique_labels(runs: list[RunRecord]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
    for run in runs:
        if seen[run.label] > 1:
            run.label = f"{run.label} ({run.path.name})"
    labels = [r.label for r in runs]
    for i, run in enumerate(runs):
        if labels.count(run.label) > 1:
            run.label = f"{run.label} #{i + 1}"


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    per_run: bool = True,
    explicit: bool = False,
    force: bool = False,
) -> tuple[Path, Path | None]:
    """Write an HTML report, and for a folder a Markdown summary, for one or several runs.

    Parameters
    ----------
    run_dirs
        Run folders (each with ``config.yaml``, ``metrics.json``, ``history.jsonl`` and
        optionally ``margins.json``; missing files leave their sections with a note).
    out
        Where to write. A folder gets ``report.html``, ``report.md`` and the Markdown's
        figures in ``report_files/``; a path ending in ``.html`` (or ``.htm``) is the HTML
        page alone, written there and nothing else (its figures are embedded). Defaults to
        the run folder when there is only one; for several, to a folder
        ``report-<run1>-vs-<run2>...`` (run folder names, made file-name safe; a long list
        is cut short and given a hash) in the runs' common parent folder, or in the current
        directory if they share none below the root.
    per_run
        With several runs, also add each run's own sections after the comparison (the
        default); False keeps the page to the comparison, for large grids.
    explicit
        Whether the user named ``out`` (the command line's ``-o``): then a folder holding
        other things may receive the report's new files. Needs ``out``.
    force
        Write over the page, summary and figure folder at ``out`` even when they were not
        written by a report (the command line's ``--force``). Needs ``explicit``.

    Returns
    -------
    tuple
        The HTML path and the Markdown path written (its figures are in the folder
        ``report_files`` beside it); the Markdown path is None for an ``.html`` ``out``.

    Raises
    ------
    ParameterError
        Naming ``run_dirs`` for a missing run folder, ``out`` for a ``.md`` path, and
        ``-o/--out`` for an output the rules below refuse.

    Notes
    -----
    A report never writes over a file it did not write, nor litters a folder that is not
    its own. Every folder it writes a summary to gets a marker, ``.tailmix-report``,
    listing the report's files there.

    * Unless ``explicit``, a folder ``out`` (or the default) must be new, empty, a run
      folder (it holds ``config.yaml``, ``metrics.json`` or ``history.jsonl``) or a report
      folder (it has the marker, or a report page written before markers existed); an
      ``.html`` path names the page itself, so its folder may hold anything.
    * Unless ``force``, an existing page, summary or figure folder is rewritten only if
      the marker lists it or it is recognisably a report page of this module (by its first
      line; for the figure folder: PNG files only, beside such a page).

    Whatever ``explicit`` and ``force`` say, ``out`` cannot run through an existing file,
    the report cannot go among a run's own files (into its ``checkpoints`` folder, or a
    folder named after one of its files), and the pages and figure folder cannot replace
    a folder or file of the other kind.
    """
    if isinstance(run_dirs, (str, Path)) or not isinstance(run_dirs, Sequence) or not run_dirs:
        raise ParameterError("run_dirs", "a non-empty sequence of run folders", run_dirs)
    paths = [Path(p) for p in run_dirs]
    for path in paths:
        if not path.is_dir():
            raise ParameterError("run_dirs", "existing run folders", str(path))
    for name, value in (("explicit", explicit), ("force", force)):
        if not isinstance(value, bool):
            raise ParameterError(name, "true or false", value)
    if explicit and out is None:
        raise ParameterError("explicit", "False when out is None (only a place the user "
                             "named is explicit)", explicit)
    if force and not explicit:
        raise ParameterError("force", "False unless explicit is True (only a place the user "
                             "named may be written over)", force)
    html_path, md_path, image_dir = _output_paths(paths, out)
    marked = _check_output(html_path, md_path, image_dir, explicit=explicit, force=force)

    runs = [load_run(p) for p in paths]
    _unique_labels(runs)
    if len(runs) == 1:
        title = f"tailmix run report: {runs[0].label}"
        groups = [(None, _run_sections(runs[0], "", 2))]
    else:
        title = f"tailmix comparison of {len(runs)} runs"
        groups = [(None, _comparison_sections(runs))]
        for i, run in enumerate(runs if per_run else [], start=1):
            groups.append((run, _run_sections(run, f"run{i}_", 3)))
    datasets = sorted({str((r.metrics or {}).get("dataset")) for r in runs} - {"None"})
    subtitle = ", ".join(datasets) + (" · " if datasets else "") + ", ".join(r.label for r in runs)

    nav = []
    body = []
    for run, sections in groups:
        if run is None:
            nav += [f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections]
            body += [_html_section(s) for s in sections]
        else:
            anchor = _slug(f"run-{run.label}")
            nav.append(f'<a href="#{anchor}">{html.escape(run.label)}</a>')
            inner = "\n".join(_html_section(s) for s in sections)
            body.append(
                f'<details class="run" open id="{anchor}"><summary>Run: '
                f"{html.escape(run.label)}</summary>\n{inner}\n</details>"
            )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><main><h1>{html.escape(title)}</h1>"
        f'<p class="subtitle">{html.escape(subtitle)}</p>'
        f"<nav>{''.join(nav)}</nav>\n" + "\n".join(body) + "\n</main></body></html>\n"
    )

    if md_path is None or image_dir is None:  # an .html path: the page it names, alone
        atomic_write_text(html_path, page)
        return html_path, None
    md_parts = [f"# {title}", subtitle]
    for run, sections in groups:
        if run is not None:
            md_parts.append(f"## Run: {run.label}")
        md_parts += [_md_section(s, image_dir.name) for s in sections]
    ours = sorted((marked or set()) | {html_path.name, md_path.name, image_dir.name})
    marker = {"written_by": "tailmix report", "files": ours}
    atomic_write_text(html_path.parent / MARKER, json.dumps(marker, indent=1) + "\n")
    for _, sections in groups:
        for section in sections:
            for img in section.images:
                atomic_write_bytes(image_dir / f"{img.name}.png", img.png)
    atomic_write_text(html_path, page)
    atomic_write_text(md_path, "\n\n".join(md_parts) + "\n")
    return html_path, md_path
