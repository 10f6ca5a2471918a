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


def shown_as_text(text: str, page: str) -> bool:
    """The text reaches the reader as text: absent raw, present once entities are decoded
    (`&quot;` or Jinja2's `&#34;`, either way)."""
    return text not in page and text in html.unescape(page)


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
    assert shown_as_text(HOSTILE, page)


def test_pipeline_summary_table_escapes_model_names():
    from toolkit.pipeline.report import summary_table_html

    table = summary_table_html([{"model": HOSTILE, "format": "<script>x</script>", "mode": HOSTILE,
                                 "size_bytes": 10, "accuracy": 0.9, "drop": 0.1, "passed": True,
                                 "p50_ms": 1.0, "breakeven_month": 3}])
    assert unescaped_markup(table) == []
    assert shown_as_text(HOSTILE, table)


def test_the_checker_itself_catches_raw_markup():
    assert unescaped_markup(f"<p>{HOSTILE}</p>")
    assert unescaped_markup("<p><script>alert(1)</script></p>")
    assert unescaped_markup(f"<p>{html.escape(HOSTILE)}</p>") == []


def test_breakeven_html_escapes_the_scenario_strings(run_cli, tmp_path):
    scenario = yaml.safe_load(run_cli("breakeven", "--example").stdout)
    scenario["name"] = f"<script>alert(1)</script> {HOSTILE}"
    scenario["description"] = HOSTILE
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario))
    result = run_cli("breakeven", path, "-o", tmp_path / "report")
    assert result.exit_code == 0, result.stderr
    page = (tmp_path / "report" / "breakeven.html").read_text()
    assert unescaped_markup(page) == []
    assert html.escape("<script>alert(1)</script>") in page
    assert "&lt;img src=x onerror=" in page  # shown as text (quotes escaped one way or another)


def test_pipeline_index_escapes_recipe_step_and_model_names(tmp_path):
    from toolkit.pipeline import Step
    from toolkit.pipeline.recipe import Recipe
    from toolkit.pipeline.report import write_index

    recipe = Recipe(name=f"<script>alert(1)</script>{HOSTILE}", source=f"/models/{HOSTILE}.onnx")
    step = Step(f"export-{HOSTILE}", "export", tmp_path / "export", {})
    done = {step.name: {"format": HOSTILE, "mode": HOSTILE, "size_bytes": 10},
            "breakeven": {"chosen_model": HOSTILE, "breakeven_month": 3.0, "reports": {}},
            "distill": {"teacher_parameters": 10, "student_parameters": 5}}
    rows = [{"model": step.name, "format": HOSTILE, "mode": HOSTILE, "estimated_p50_ms": {HOSTILE: 1.0}}]
    records = [{"step": step.name, "status": HOSTILE, "seconds": HOSTILE}]
    page = write_index(tmp_path / "index.html", recipe, rows, [step], done, records).read_text()
    assert unescaped_markup(page) == []
    assert html.escape("<script>alert(1)</script>") in page
    assert page.count("&lt;img src=x onerror=") >= 6  # source, step, status, chosen model, table cells


def test_plan_html_escapes_variant_and_scenario_names():
    from toolkit.costs.example import EXAMPLE
    from toolkit.plan import build_plan
    from toolkit.plan.report import html_page
    from toolkit.plan.variants import Measurement, Variant

    record = {"device": "raspberry-pi-5", "estimate": True, "latency": {"p50_ms": 1.0}, "fit": {"fits": True},
              "model": {"size_bytes": 1000}}
    measurement = Measurement(device="raspberry-pi-5", p50_ms=1.0, p95_ms=1.2, estimate=True, memory_mb=1.0,
                              fit={"fits": True}, record=record, source=HOSTILE)
    variant = Variant(name=f"v{HOSTILE}", model_path=Path(f"/models/{HOSTILE}.onnx"), format="onnx", mode=HOSTILE,
                      size_bytes=1000, validation={"accuracy": 0.97, "reference_accuracy": 0.98, "passed": True},
                      benches={"raspberry-pi-5": measurement})
    scenario = yaml.safe_load(EXAMPLE)
    scenario["name"] = f"<script>alert(1)</script>{HOSTILE}"
    page = html_page(build_plan([variant], ["raspberry-pi-5"], scenario), {})
    assert unescaped_markup(page) == []
    assert html.escape("<script>alert(1)</script>") in page
    assert "&lt;img src=x onerror=" in page  # shown as text (quotes escaped one way or another)
