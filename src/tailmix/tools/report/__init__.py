"""Reports on finished runs: one self-contained HTML page and a Markdown summary.

A run folder holds ``config.yaml``, ``metrics.json``, ``history.jsonl`` and optionally
``margins.json``. :func:`build_report` reads one or several such folders and writes

* an HTML page with inline CSS and every figure embedded as a base64 PNG, so the file can be
  mailed or archived on its own and opens without any network access;
* into a folder (not for an ``.html`` path, which is the page alone), a Markdown summary
  with the same tables, its figures written as PNG files in a folder next to it.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas; pyplot
and the global backend are never touched.

The package's modules:

* :mod:`~tailmix.tools.report.runs`: reading a run folder (:class:`RunRecord`, :func:`load_run`)
  and the numbers and text derived from it (class order, shot groups, config summary,
  formatting);
* :mod:`~tailmix.tools.report.figures`: the matplotlib figures and their rendering to PNG;
* :mod:`~tailmix.tools.report.content`: the sections of the page, their tables and figures, for
  one run and for a comparison of several;
* :mod:`~tailmix.tools.report.output`: where a report goes, its marker, and the checks that
  refuse an output that could harm the user's files;
* :mod:`~tailmix.tools.report.page`: the HTML and Markdown writers and :func:`build_report`.
"""

from __future__ import annotations

from tailmix.tools.report.figures import _fig_confusion as _fig_confusion
from tailmix.tools.report.figures import _fig_per_class as _fig_per_class
from tailmix.tools.report.output import MARKER as MARKER
from tailmix.tools.report.output import _output_paths as _output_paths
from tailmix.tools.report.page import build_report
from tailmix.tools.report.runs import RunRecord, load_run

__all__ = ["RunRecord", "build_report", "load_run"]
