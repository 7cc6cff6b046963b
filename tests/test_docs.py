"""Every table of measured figures generated into docs/ and the README (benchmarks/results_tables.py) is what its
committed JSON renders to: a figure in the docs is the one the run measured, never typed."""
import json
import typing
from pathlib import Path

from conftest import load_benchmark

from minitron.distill.config import LossName

tables = load_benchmark("results_tables")
DOCS = Path(__file__).resolve().parents[1] / "docs"
LOSSES = typing.get_args(LossName)


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


def test_recorded_settings_name_the_loss(tmp_path):
    """What ran is recorded with its loss by name (the default resolved), in new records and in the committed JSONs."""
    from minitron.distill import TrainConfig
    from minitron.distill.config import DEFAULT_KD_LOSS, recorded

    assert recorded(TrainConfig(student="s", out=tmp_path, teacher="t"), tmp_path)["loss"] == DEFAULT_KD_LOSS
    assert recorded(TrainConfig(student="s", out=tmp_path), tmp_path)["loss"] == "ce"
    for name, settings in (("search/search.json", lambda d: d["settings"]["distill"]),
                           ("baselines.json", lambda d: d["settings"]),
                           ("correction_stages.json", lambda d: d["settings"])):
        assert settings(json.loads((DOCS / name).read_text()))["loss"] in LOSSES, name
