"""YAML through safe_load only, with a size limit and a limit on what aliases expand to."""

from __future__ import annotations

from pathlib import Path

from toolkit.common.text import first_line
from toolkit.errors import BadInput
from toolkit.safety.files import check_exists, read_limited

YAML_MAX_BYTES = 5 * 1024 * 1024
YAML_MAX_NODES = 1_000_000
RECURSIVE = -1


def load_yaml(source: Path | str, what: str | None = None, *, strict_numbers: bool = False):
    """yaml.safe_load with a size limit and an alias limit; errors are one line (BadInput).

    `source` is a path, or YAML text when `what` names it. safe_load builds no Python
    objects (CVE-2017-18342, CVE-2020-1747); the expansion limit stops "billion laughs"
    documents that are small on disk and enormous once walked (json.dumps, deepcopy).
    With `strict_numbers`, numbers are read as YAML 1.2 reads them: `1:30` (a YAML 1.1 base-60
    number, 90), `0x10` and `0o10` stay text, so a caller's checks can refuse them.
    """
    import yaml

    if what is None:
        path = Path(source)
        check_exists(path)
        text = read_limited(path, YAML_MAX_BYTES).decode("utf-8", errors="replace")
        what = str(path)
    else:
        text = str(source)
        if len(text) > YAML_MAX_BYTES:
            raise BadInput(f"{what}: larger than {YAML_MAX_BYTES // 2**20} MB")
    try:
        expanded = expanded_size(text) if "*" in text else 0
        if expanded == RECURSIVE:
            raise BadInput(f"{what}: a YAML alias refers to a collection that contains it (refused)")
        if expanded > YAML_MAX_NODES:
            raise BadInput(f"{what}: expands to more than {YAML_MAX_NODES} YAML nodes through its aliases "
                           f"(refused as a possible alias bomb)")
        if strict_numbers:
            StrictNumbersSafeLoader = safe_loader_with_strict_numbers()  # noqa: N806 - a class
            return yaml.load(text, Loader=StrictNumbersSafeLoader)  # noqa: S506 - a SafeLoader subclass
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(error, "problem", None) or first_line(error)
        raise BadInput(f"{what}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise BadInput(f"{what}: YAML nested too deeply") from None


def expanded_size(text: str) -> int:
    """How many nodes the document has once every alias is expanded (from parser events);
    RECURSIVE when an alias points into a collection that contains it."""
    import yaml

    sizes: dict[str, int] = {}
    stack: list[list] = [[None, 0]]  # [anchor, nodes so far] per open collection
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in stack):
                return RECURSIVE  # the alias points into a collection still open: a cycle
            stack[-1][1] += sizes.get(event.anchor, 1)
        elif isinstance(event, yaml.ScalarEvent):
            stack[-1][1] += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append([event.anchor, 1])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, count = stack.pop()
            if anchor:
                sizes[anchor] = count
            stack[-1][1] += count
        if stack[0][1] > YAML_MAX_NODES or (len(stack) > 1 and stack[-1][1] > YAML_MAX_NODES):
            return YAML_MAX_NODES + 1
    return stack[0][1]


def safe_loader_with_strict_numbers():
    """A SafeLoader whose int and float resolvers are YAML 1.2's decimal forms only."""
    import re

    import yaml

    class StrictNumbers(yaml.SafeLoader):
        pass

    int_tag, float_tag = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
    StrictNumbers.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (int_tag, float_tag)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    StrictNumbers.add_implicit_resolver(int_tag, re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789"))
    StrictNumbers.add_implicit_resolver(
        float_tag, re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$"
                              r"|^\.(?:nan|NaN|NAN)$"), list("-+0123456789."))
    return StrictNumbers
