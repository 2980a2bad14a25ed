"""CSV files tailmix writes: text a spreadsheet would run as a formula is escaped."""

from __future__ import annotations

import csv
import random
import string

from tailmix.io import csv_cell
from tailmix.tools.predict import write_table


def test_cells_that_begin_like_a_formula_are_escaped_and_others_kept():
    rng = random.Random(0)
    alphabet = string.printable
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        out = csv_cell(text)
        if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
            try:
                float(text)
                assert out == text  # a number stays a number
            except ValueError:
                assert out == "'" + text
        else:
            assert out == text
    assert [csv_cell(v) for v in (3, -2.5, None, "-1e-3", "+inf")] == [
        3, -2.5, None, "-1e-3", "+inf"]


def test_a_prediction_table_escapes_inputs_and_class_names(tmp_path):
    header = ["input", "prediction", "probability", "p_=cmd|' /C calc'!A0", "p_cat"]
    rows = [{"input": "=HYPERLINK(\"http://x\")", "prediction": "=cmd|' /C calc'!A0",
             "probability": 0.75, "p_a": 0.75, "p_b": 0.25},
            {"input": "photos/-1.png", "prediction": "cat", "probability": 0.5,
             "p_a": 0.5, "p_b": 0.5},
            {"input": "@SUM(1+1)", "prediction": "cat", "probability": 1.0,
             "p_a": 0.0, "p_b": 1.0}]
    path = write_table(tmp_path / "p.csv", rows, header)
    got = list(csv.reader(path.open(newline="")))
    assert got[0] == header  # "p_" leads every class column: nothing to escape there
    assert got[1][:2] == ["'=HYPERLINK(\"http://x\")", "'=cmd|' /C calc'!A0"]
    assert got[2][:2] == ["photos/-1.png", "cat"] and got[3][0] == "'@SUM(1+1)"
    assert got[1][2:] == ["0.75", "0.75", "0.25"]
