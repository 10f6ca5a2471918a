"""`edgeward breakeven`: the example end to end, the reports, bench files and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, edgeward_process

REPORTS = ("breakeven.md", "breakeven.json", "breakeven.html", "cumulative.png", "monthly.png", "tornado.png")


def base_scenario(**changes) -> dict:
    scenario = {
        "name": "test scenario",
        "model": "digits-int8",
        "traffic": {"active_users": 10_000, "requests_per_user_per_day": 10},
        "cloud": {"price_per_request": 0.002},
        "edge": {"engineering_hours": 200, "hourly_rate": 100},
        "router": {"on_device_share": 0.5},
    }
    for dotted, value in changes.items():
        node = scenario
        *path, last = dotted.split(".")
        for key in path:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return scenario


def write_yaml(folder: Path, data: dict, name: str = "scenario.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def bench_json(folder: Path, *, model_path="exported/digits-int8/model.onnx", device="raspberry-pi-5",
               p50=12.5, kind="board", name="bench.json") -> Path:
    """A bench result in the shape `edgeward bench --json` prints (toolkit/bench/)."""
    record = {
        "model": {"path": model_path, "format": "onnx", "sha256": "ab" * 32, "size_bytes": 164_171},
        "device": {"name": device, "kind": kind, "transport": "ssh",
                   "power_w": {"idle": {"value": 2.7, "estimate": "idle"}, "typical": {"value": 4.0, "source": "doc"},
                               "max": {"value": 12, "estimate": "max"}},
                   "unit_price_usd": {"value": 80, "source": "launch"}},
        "mode": "measured", "estimate": False,
        "latency_ms": {"p50": p50, "p90": p50 * 1.2, "mean": p50 * 1.05},
    }
    path = folder / name
    path.write_text(json.dumps(record))
    return path


def test_example_piped_writes_all_reports(tmp_path):
    example = edgeward_process("breakeven", "--example")
    assert example.exit_code == 0
    assert "router:" in example.stdout and "# " in example.stdout
    out = tmp_path / "report"
    # how long this takes is measured in benchmarks/bench_breakeven.py, against a bare matplotlib baseline
    done = subprocess.run([sys.executable, "-m", "toolkit", "breakeven", "-", "-o", str(out)], input=example.stdout,
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in REPORTS:
        assert (out / name).stat().st_size > 1000, name
    data = json.loads((out / "breakeven.json").read_text())
    # The Vision API is tiered per month (issue 12): 12M units = 1,000 free + 4,999,000 x $1.50/1k
    # + 7,000,000 x $1.00/1k = $14,498.50 (it was priced flat at $1.50/1k: $18,000, 24% too high),
    # so the break-even moved from 4.5 to 6.1 months.
    assert data["breakeven"] == "6.1 months"
    assert 6.0 < data["breakeven_month"] < 6.2
    assert data["first_month"]["cloud"] == 14_498.5
    assert "Break-even: 6.1 months" in done.stdout
    html = (out / "breakeven.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "<script" not in html and "src=\"http" not in html and "href=\"http" not in html
    assert "@media print" in html
    for name in ("cumulative.png", "monthly.png", "tornado.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    markdown = (out / "breakeven.md").read_text()
    assert "![Cumulative cost](cumulative.png)" in markdown and "| Break-even | 6.1 months |" in markdown


def test_example_is_a_valid_scenario():
    from toolkit.costs.example import EXAMPLE
    from toolkit.costs.scenario import scenario_problems

    assert scenario_problems(yaml.safe_load(EXAMPLE)) == []


def test_json_output_and_a_file(run_cli, tmp_path):
    path = write_yaml(tmp_path, base_scenario())
    result = run_cli("--json", "breakeven", path, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["breakeven_month"] == pytest.approx(20000 / 3000, abs=1e-4)
    assert data["savings"]["12"] == 16_000.0  # 12 x 3,000 - 20,000
    assert set(data["reports"]) == {"md", "json", "html", "cumulative_png", "monthly_png", "tornado_png"}


def test_rerun_replaces_its_own_report_but_not_other_files(run_cli, tmp_path):
    path = write_yaml(tmp_path, base_scenario())
    out = tmp_path / "out"
    assert run_cli("breakeven", path, "-o", out).exit_code == 0
    assert run_cli("breakeven", path, "-o", out, "--months", "24").exit_code == 0
    assert json.loads((out / "breakeven.json").read_text())["scenario"]["months"] == 24
    (out / "mine.txt").write_text("keep")
    before = (out / "breakeven.json").read_bytes()
    refused = run_cli("breakeven", path, "-o", out, "--months", "12")
    assert refused.exit_code == 2 and "--force" in refused.stderr
    assert (out / "breakeven.json").read_bytes() == before and (out / "mine.txt").read_text() == "keep"


def test_bench_fills_latency_and_power(run_cli, tmp_path):
    scenario = base_scenario(**{"edge.electricity_per_kwh": 0.2, "traffic.active_users": 1_000_000})
    path = write_yaml(tmp_path, scenario)
    bench = bench_json(tmp_path, p50=12.5)
    result = run_cli("--json", "breakeven", path, "--bench", bench, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["inputs"]["latency_ms"] == 12.5
    assert data["inputs"]["power_w"] == 4.0
    assert data["sources"]["latency_ms"].startswith(f"bench {bench}: p50 measured on raspberry-pi-5")
    assert data["inputs"]["model_size_mb"] == 0.164171
    # energy: 150M on-device requests x 0.0125 s x 4 W = 7.5e6 J = 2.083 kWh x $0.2 = $0.42 a month
    assert data["months"][0]["edge_items"]["energy"] == 0.42
    assert data["capacity"]["ok"] is True


def test_bench_on_the_cloud_instance_gives_throughput(run_cli, tmp_path):
    scenario = base_scenario(**{"cloud.price_per_request": None, "cloud.instance": "aws-g4dn-xlarge",
                                "cloud.utilisation": 0.5})
    path = write_yaml(tmp_path, scenario)
    bench = bench_json(tmp_path, device="aws-g4dn-xlarge", kind="cloud", p50=4)
    result = run_cli("--json", "breakeven", path, "--bench", bench, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert result.json()["inputs"]["throughput_rps"] == 250.0  # 1000 / 4 ms


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"traffic.active_users": None}, "traffic.active_users is required"),
        ({"traffic": None}, "traffic is required"),
        ({"traffic.requests_per_user_per_day": 0}, "traffic.requests_per_user_per_day must be more than 0"),
        ({"traffic.active_users": -5}, "traffic.active_users must be more than 0"),
        ({"router.on_device_share": 1.5}, "router.on_device_share must be within [0, 1]"),
        ({"router.on_device_share": "-10%"}, "router.on_device_share must be within [0, 1]"),
        ({"router": None}, "router.on_device_share is required"),
        ({"cloud.price_per_request": None, "cloud.api": "gpt-4o-mni"},
         "cloud.api: unknown api 'gpt-4o-mni' (did you mean openai-gpt-4o-mini"),
        ({"cloud.price_per_request": None, "cloud.instance": "aws-g9-xlarge", "cloud.utilisation": 0.5},
         "cloud.instance: unknown instance 'aws-g9-xlarge' (did you mean"),
        ({"currency": "EUR", "cloud.price_per_request": None, "cloud.api": "gpt-4o"},
         "cloud.api 'openai-gpt-4o' is priced in USD but the scenario's currency is EUR"),
        ({"currency": "EUR", "edge.hourly_rate": "95 USD"},
         "edge.hourly_rate is in USD but the scenario's currency is EUR"),
        ({"currency": "euros"}, "currency must be a three-letter ISO code"),
        ({"edge.engineering_hours": None}, "edge.engineering_hours is required"),
        ({"edge.latency_ms": "fast"}, "edge.latency_ms must be a number"),
        ({"trafic": {"active_users": 1}}, "unknown field 'trafic' (did you mean traffic?)"),
        ({"cloud.price_per_request": None, "cloud.price_per_hour": 1.0, "cloud.utilisation": 0.5},
         "cloud.throughput_rps is required"),
        ({"edge.device": "pixel8"}, "edge.device: unknown device 'pixel8'; did you mean pixel-8?"),
    ],
)
def test_bad_scenario_is_one_line_exit_2(run_cli, tmp_path, changes, expected):
    path = write_yaml(tmp_path, base_scenario(**changes))
    out = tmp_path / "out"
    result = run_cli("breakeven", path, "-o", out)
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_every_problem_is_listed_together(run_cli, tmp_path):
    path = write_yaml(tmp_path, base_scenario(**{"traffic.active_users": 0, "router.on_device_share": 2,
                                                 "edge.hourly_rate": -1}))
    result = run_cli("breakeven", path, "-o", tmp_path / "out")
    assert result.exit_code == 2
    for field in ("traffic.active_users", "router.on_device_share", "edge.hourly_rate"):
        assert field in result.stderr


def test_bench_of_another_model_is_refused(run_cli, tmp_path):
    path = write_yaml(tmp_path, base_scenario())
    bench = bench_json(tmp_path, model_path="exported/digits-mlp/model.onnx")
    result = run_cli("breakeven", path, "--bench", bench, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "measured model model.onnx" in result.stderr and "scenario names model 'digits-int8'" in result.stderr
    assert not (tmp_path / "out").exists()
    matching = bench_json(tmp_path, name="ok.json")  # exported/digits-int8/model.onnx: the folder names it
    assert run_cli("breakeven", path, "--bench", matching, "-o", tmp_path / "out").exit_code == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [("{not yaml: [", "not valid YAML"), ("- a list\n", "a scenario is a YAML mapping"), (None, "file not found")],
)
def test_unreadable_scenario(run_cli, tmp_path, content, expected):
    path = tmp_path / "scenario.yaml"
    if content is not None:
        path.write_text(content)
    result = run_cli("breakeven", path, "-o", tmp_path / "out")
    assert result.exit_code == 2 and expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_bench_files(run_cli, tmp_path):
    path = write_yaml(tmp_path, base_scenario())
    (tmp_path / "junk.json").write_text("{}")
    result = run_cli("breakeven", path, "--bench", tmp_path / "junk.json", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "no latency_ms" in result.stderr
    result = run_cli("breakeven", path, "--bench", tmp_path / "missing.json", "-o", tmp_path / "out")
    assert result.exit_code == 2


def test_strings_from_the_scenario_are_escaped(tmp_path):
    from toolkit.costs import breakeven
    from toolkit.costs.report import write_reports

    hostile = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    result = breakeven(base_scenario(name=hostile, description=hostile, **{"edge.description": hostile}))
    paths = write_reports(result, tmp_path / "out")
    html = paths["html"].read_text()
    assert "<script>" not in html and "<img src=x" not in html
    # Jinja2 autoescape spells the quote &#34; (html.escape wrote &quot;): the same character, escaped
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp;" in html


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_html_renders_in_headless_chromium(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_report_html"), "-o", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "breakeven-screenshot.png").stat().st_size > 50_000
    assert (tmp_path / "breakeven-print.pdf").read_bytes().startswith(b"%PDF")
