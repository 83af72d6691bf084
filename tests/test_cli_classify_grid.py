"""``classify --grid``: a parameter given twice is refused, not silently scanned once."""

import pytest

from neuroeq.cli import main
from neuroeq.cli_classify import parse_grid
from neuroeq.errors import ConfigError


@pytest.mark.parametrize("specs, example", [
    (["b=1", "b=2"], "b=1,2"),
    (["eps=1,6", "b=0.5", " eps = 3"], "eps=1,6,3"),
    (["b=0:1:3", "b=2"], "b=LOW:HIGH:COUNT or b=V1,V2,..."),
])
def test_a_grid_parameter_given_twice_is_refused_by_name(specs, example):
    name = example.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^grid parameter '{name}' is given twice "
                                          r"\(--grid .* and --grid .*\); give all its values "
                                          rf"in one --grid {example.replace('.', '[.]')}$"):
        parse_grid(specs)


def test_the_command_refuses_a_repeated_grid_parameter_before_any_work(capsys):
    assert main(["classify", "fhn", "--grid", "b=1", "--grid", "b=2"]) == 2
    captured = capsys.readouterr()
    assert captured.err == ("neuroeq: error: grid parameter 'b' is given twice (--grid b=1 "
                            "and --grid b=2); give all its values in one --grid b=1,2\n")
    assert not captured.out


def test_distinct_grid_parameters_still_combine():
    assert parse_grid(["b=1,2", "eps=0:1:2"]) == {"b": [1.0, 2.0], "eps": [0.0, 1.0]}
