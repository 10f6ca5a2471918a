"""HTML reports escape every string that comes from a model or a user file."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import yaml

HOSTILE = '<img src=x onerror="alert(1)">'
ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "h4", "p", "table", "thead",
                "tbody", "tr", "th", "td", "a", "img", "code", "b", "i", "em", "strong", "small", "span", "div",
                "ul", "ol", "li", "figure", "figcaption", "section", "header", "footer", "br", "hr", "pre", "sup",
                "caption", "details", "summary", "main", "nav", "abbr", "colgroup", "col", "!doctype"}


def unescaped_markup(page: str) -> list[str]:
    """Hostile markup that reached the page as markup: event handlers, scripts, odd tags."""
    problems = []
    if re.search(r"<script", page, re.I):
        problems.append("<script")
    if re.search(r"<[a-z][^>]*\son[a-z]+\s*=", page, re.I):
        problems.append("an on*= event handler inside a tag")
    for tag in re.findall(r"<\s*([!a-zA-Z][a-zA-Z0-9]*)", page):
        if tag.lower() not in ALLOWED_TAGS:
            problems.append(f"<{tag}>")
    for match in re.finditer(r"<img\b[^>]*>", page, re.I):
        if "data:image/" not in match.group(0):
            problems.append(f"an <img> that is not a chart: {match.group(0)[:80]}")
    return problems


def hostile_onnx(folder: Path, digits_cnn_onnx: Path) -> Path:
    """The digits CNN with a hostile file name, input name and metadata."""
    import onnx

    model = onnx.load(str(digits_cnn_onnx))
    old = model.graph.input[0].name
    new = f"x{HOSTILE}"
    model.graph.input[0].name = new
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
    model.doc_string = HOSTILE
    model.producer_name = HOSTILE
    entry = model.metadata_props.add()
    entry.key, entry.value = "author", HOSTILE
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m<b>name<i>.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.slow
def test_breakeven_html_escapes_scenario_and_bench_strings(run_cli, tmp_path, digits_cnn_onnx):
    model = hostile_onnx(tmp_path / "model", digits_cnn_onnx)
    bench = run_cli("--json", "bench", model, "--runs", "3", "--warmup", "0")
    assert bench.exit_code == 0, bench.stderr
    bench_file = tmp_path / "bench.json"
    bench_file.write_text(bench.stdout)

    example = run_cli("breakeven", "--example")
    scenario = yaml.safe_load(example.stdout)
    scenario["name"] = f"Tagging {HOSTILE}"
    scenario["description"] = f"<script>alert('d')</script> {HOSTILE}"
    scenario["model"] = model.name
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario))
    out = tmp_path / "report"
    result = run_cli("breakeven", path, "--bench", bench_file, "-o", out)
    assert result.exit_code == 0, result.stderr
    page = (out / "breakeven.html").read_text()
    assert unescaped_markup(page) == []
    assert html.escape(HOSTILE) in page or html.escape(HOSTILE, quote=False) in page


def test_pipeline_summary_table_escapes_model_names():
    from toolkit.pipeline.report import summary_table_html

    table = summary_table_html([{"model": HOSTILE, "format": "<script>x</script>", "mode": HOSTILE,
                                 "size_bytes": 10, "accuracy": 0.9, "drop": 0.1, "passed": True,
                                 "p50_ms": 1.0, "breakeven_month": 3}])
    assert unescaped_markup(table) == []
    assert html.escape(HOSTILE) in table


def test_the_checker_itself_catches_raw_markup():
    assert unescaped_markup(f"<p>{HOSTILE}</p>")
    assert unescaped_markup("<p><script>alert(1)</script></p>")
    assert unescaped_markup(f"<p>{html.escape(HOSTILE)}</p>") == []


def test_every_html_file_the_package_writes_uses_escaping():
    """A source file that builds HTML must escape (html.escape) what it interpolates."""
    root = Path(__file__).resolve().parent.parent / "toolkit"
    builders = [p for p in root.rglob("*.py") if re.search(r"<(td|p|h1|title)>", p.read_text())]
    assert builders, "no HTML builders found: has the layout changed?"
    for path in builders:
        assert "html.escape" in path.read_text() or "escape(" in path.read_text(), path
