"""Well-formed YAML with the wrong types in it: recipes, device profiles and scenarios.

The byte-level fuzz (test_fuzz_quick) mostly yields YAML that does not parse; this one
keeps the structure of real files and swaps values for junk of other types, which is
what reaches the checks. Every outcome must be a parsed object or a BadInput.
"""

import copy
import random
from importlib import resources
from pathlib import Path

import pytest
import yaml

from toolkit.costs.example import EXAMPLE
from toolkit.errors import BadInput
from toolkit.paths import project_root

JUNK = [None, 1, 1.5, -3, 0, True, "x", "auto", [], [1], {"a": 1}, [{"b": 2}], {1: 2},
        {"value": "auto", "auto": {"x": 1}}, {"value": [1]}, {"value": {"v": 1}, "source": 3}]


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield prefix + (index,)
            yield from _paths(value, prefix + (index,))


def _mutants(base, count, seed):
    rng = random.Random(seed)
    places = list(_paths(base))
    for _ in range(count):
        mutant = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            path, node = rng.choice(places), mutant
            try:
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = copy.deepcopy(rng.choice(JUNK))
            except (KeyError, IndexError, TypeError):
                pass
        yield mutant


def _unexpected(check, mutants) -> list[str]:
    found = set()
    for mutant in mutants:
        try:
            check(mutant)
        except BadInput:
            pass
        except Exception as error:  # noqa: BLE001 - the point is to catch anything else
            found.add(f"{type(error).__name__}: {error}"[:200])
    return sorted(found)


def test_recipes_with_wrong_types_give_bad_input():
    from toolkit.pipeline.recipe import load_recipe

    base = yaml.safe_load(resources.files("toolkit.pipeline").joinpath("demo.yaml").read_text())
    assert _unexpected(load_recipe, _mutants(base, 600, seed=1)) == []


def test_profiles_with_wrong_types_give_bad_input(tmp_path):
    from toolkit.devices.profiles import load_profile

    def check(data, target=tmp_path / "mutant.yaml"):
        target.write_text(yaml.safe_dump(data))
        load_profile(target)

    for name in ("localhost", "raspberry-pi-5", "pixel-8", "esp32-s3"):
        base = yaml.safe_load((project_root() / "device_profiles" / f"{name}.yaml").read_text())
        assert _unexpected(check, _mutants(base, 150, seed=name)) == [], name


def test_scenarios_with_wrong_types_give_bad_input():
    from toolkit.costs.scenario import load_scenario, scenario_problems

    def check(data):
        scenario_problems(data)
        load_scenario(data)

    assert _unexpected(check, _mutants(yaml.safe_load(EXAMPLE), 600, seed=3)) == []


def test_a_yaml_alias_that_contains_itself_is_refused(tmp_path):
    from toolkit.devices.profiles import load_profile
    from toolkit.safety.yaml import load_yaml

    try:
        load_yaml("a: &x {b: *x}", what="cyclic")
    except BadInput as error:
        assert "refers to a collection that contains it" in str(error)
    else:
        raise AssertionError("a cyclic YAML document was accepted")
    (tmp_path / "cyclic.yaml").write_text("kind: board\npower_w: &p {idle: *p}\n")
    with pytest.raises(BadInput, match="contains it"):
        load_profile(tmp_path / "cyclic.yaml")


def test_the_demo_recipe_and_example_scenario_are_valid():
    from toolkit.commands.demo import demo_recipe
    from toolkit.costs.scenario import scenario_problems

    assert demo_recipe().name == "digits-demo"
    assert scenario_problems(yaml.safe_load(EXAMPLE)) == []
    assert Path(project_root() / "device_profiles" / "localhost.yaml").is_file()
