"""The command line: every command's flags come from its function, errors are one line."""
import pytest

from minitron.cli import COMMANDS, main, parse_mapping


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: minitron {name}" in out and "--config" in out


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["prune", "--no-such-flag"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "minitron: error: unrecognized arguments: --no-such-flag (see minitron --help)"]


def test_parse_mapping():
    assert parse_mapping("hidden_size=4096, intermediate_size=11520") == {"hidden_size": 4096,
                                                                          "intermediate_size": 11520}
