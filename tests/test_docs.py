"""Every table of measured figures generated into docs/ and the README (benchmarks/results_tables.py) is what its
committed JSON renders to: a figure in the docs is the one the run measured, never typed."""
from pathlib import Path

from conftest import load_benchmark

tables = load_benchmark("results_tables")


def test_every_generated_table_matches_its_json():
    found = 0
    for doc in tables.documents():
        for kind, source, content in tables.blocks(doc.read_text()):
            found += 1
            assert (tables.REPO / source).is_file(), f"{doc.name}: {source} is not committed"
            assert content == tables.render(kind, tables.REPO / source), \
                f"{doc.name}'s {kind} table differs from {source}: run `python benchmarks/results_tables.py`"
    assert found >= 1  # the demo's table in docs/results.md at least


def test_a_typed_figure_is_caught(tmp_path):
    """The check compares the whole block: one figure typed over the rendered one fails it."""
    doc = next(d for d in tables.documents() if tables.blocks(d.read_text()))
    kind, source, content = tables.blocks(doc.read_text())[0]
    typed = content.replace(content.split("|")[3], " 9.999 ", 1)
    assert typed != tables.render(kind, tables.REPO / source)
