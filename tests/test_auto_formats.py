"""`quantize --mode auto` across ONNX and TFLite, and the int8 hardware check (issue 13, items 4 and 6).

Real exports (torch -> ONNX, torch -> TFLite, ONNX -> torch -> TFLite), real quantizers and real
timings on the builtin digits CNN; the CPU facts from the shipped device profiles and /proc/cpuinfo.
"""

from __future__ import annotations

import json
import warnings

import pytest

from toolkit.errors import BadInput, EdgewardWarning

pytestmark = pytest.mark.slow


def test_auto_from_a_source_tries_both_formats(run_cli, tmp_path):
    out = tmp_path / "auto"
    result = run_cli("--json", "quantize", "builtin:digits-cnn", "--mode", "auto", "--data", "builtin:digits:test",
                     "--max-drop", "2", "--budget", "900", "-o", out)
    assert result.exit_code == 0, result.stderr
    table = json.loads((out / "tries.json").read_text())
    assert table["formats"] == ["onnx", "tflite"] and table["passed"]
    assert {row["format"] for row in table["tries"]} == {"onnx", "tflite"}
    for fmt in ("onnx", "tflite"):
        assert (out / f"float-{fmt}" / f"model.{fmt}").stat().st_size == table["float_sizes"][fmt]
    for row in table["tries"]:
        if not row["error"]:
            model = out / row["folder"] / f"model.{row['format']}"
            assert row["size_bytes"] == model.stat().st_size
            assert row["size_ratio"] == pytest.approx(row["size_bytes"] / table["float_sizes"][row["format"]], abs=1e-4)
    chosen = table["tries"][table["chosen"]]
    passing = [row for row in table["tries"] if row["passed"] and row["smaller"]]
    assert chosen["size_bytes"] == min(row["size_bytes"] for row in passing)  # smallest of either format
    assert (out / f"model.{chosen['format']}").read_bytes() == (out / chosen["folder"] / f"model.{chosen['format']}").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["auto"]["format"] == chosen["format"] and manifest["auto"]["formats"] == ["onnx", "tflite"]
    markdown = (out / "tries.md").read_text()
    assert "| format |" in markdown and "| onnx |" in markdown and "| tflite |" in markdown
    assert "format" in result.stdout.splitlines()[0] or result.json()["formats"] == ["onnx", "tflite"]


def test_formats_limits_the_search(run_cli, tmp_path):
    out = tmp_path / "auto"
    result = run_cli("quantize", "builtin:digits-cnn", "--mode", "auto", "--data", "builtin:digits:test",
                     "--formats", "tflite", "--budget", "900", "-o", out)
    assert result.exit_code == 0, result.stderr
    table = json.loads((out / "tries.json").read_text())
    assert table["formats"] == ["tflite"] and {row["format"] for row in table["tries"]} == {"tflite"}
    assert not (out / "float-onnx").exists() and (out / "model.tflite").is_file()
    bad = run_cli("quantize", "builtin:digits-cnn", "--mode", "auto", "--data", "builtin:digits:test",
                  "--formats", "onnx,coreml", "-o", tmp_path / "never")
    assert bad.exit_code == 2 and "--formats" in bad.stderr and not (tmp_path / "never").exists()
    not_auto = run_cli("quantize", "builtin:digits-cnn", "--mode", "fp16", "--formats", "onnx")
    assert not_auto.exit_code == 2 and "--mode auto" in not_auto.stderr


def test_latency_objective_across_formats_keeps_the_fastest(digits_cnn_onnx, digits_test, tmp_path):
    """An ONNX file with formats onnx,tflite: rebuilt as torch, converted to TFLite, both searched and timed."""
    from toolkit.quantize.auto import LATENCY_TIE, auto_quantize
    from toolkit.quantize.modes import modes_for

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = auto_quantize(digits_cnn_onnx, tmp_path / "auto", data=digits_test, max_drop=2.0,
                               calibration="builtin:digits:train", objective="latency", formats=["onnx", "tflite"],
                               device="raspberry-pi-4", budget_s=900)
    assert result.passed and result.formats == ["onnx", "tflite"]
    for fmt in ("onnx", "tflite"):  # no size short-cut: every mode of both formats
        assert {t.mode for t in result.tries if t.format == fmt and not t.excluded} == {m.name for m in modes_for(fmt)}
    timed = [t for t in result.tries if t.passed and t.smaller]
    assert {t.format for t in timed} == {"onnx", "tflite"} and all(t.p50_ms > 0 for t in timed)
    fastest = min(t.p50_ms for t in timed)
    chosen = result.tries[result.chosen]
    assert chosen.p50_ms <= fastest * (1 + LATENCY_TIE)
    assert chosen.size_bytes == min(t.size_bytes for t in timed if t.p50_ms <= fastest * (1 + LATENCY_TIE))
    assert set(result.float_p50_ms) == {t.format for t in timed} and all(v > 0 for v in result.float_p50_ms.values())
    assert result.model_path.suffix == f".{chosen.format}" and result.format == chosen.format
    # the int8 check ran against the Raspberry Pi 4's Cortex-A72 (no dot product), and is recorded
    hardware = result.int8_hardware
    assert hardware["where"] == "device raspberry-pi-4" and hardware["fast_int8"] is False
    int8 = chosen.mode in ("dynamic-int8", "static-int8", "dynamic-int8-int4emb")
    assert hardware["may_be_slower_than_float"] == int8
    assert any(issubclass(w.category, EdgewardWarning) and "no faster than float" in str(w.message)
               for w in caught) == int8
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert manifest["auto"]["int8_hardware"] == hardware and manifest["auto"]["format"] == chosen.format


def test_a_cpu_without_int8_dot_products_warns():
    from toolkit.quantize.int8_hardware import check_int8_speed

    with pytest.warns(EdgewardWarning, match="raspberry-pi-4.*no int8 dot-product"):
        record = check_int8_speed("dynamic-int8", "raspberry-pi-4")
    assert record["may_be_slower_than_float"] and record["instructions"] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_int8_speed("weight-int4", "raspberry-pi-4")["may_be_slower_than_float"] is False  # float compute
        pi5 = check_int8_speed("static-int8", "raspberry-pi-5")  # Cortex-A76: dot product, no i8mm
        assert pi5["fast_int8"] and pi5["instructions"] == ["asimddp"]
        assert check_int8_speed("static-int8", "pixel-8")["instructions"] == ["asimddp", "i8mm"]
        # measured here, faster than float: the measurement settles it, whatever the flags say
        assert check_int8_speed("dynamic-int8", measured_speedup=1.8)["may_be_slower_than_float"] is False
    with pytest.warns(EdgewardWarning, match="measured 0.90x"):
        check_int8_speed("dynamic-int8", measured_speedup=0.9)


def test_the_host_facts_come_from_cpuinfo():
    from toolkit.common.cpu import host_cpu_flags
    from toolkit.quantize.int8_hardware import INT8_FLAGS, host_int8_hardware

    flags = host_cpu_flags()
    facts = host_int8_hardware()
    if flags:
        assert facts.instructions == sorted(flags & INT8_FLAGS) and facts.fast_int8 == bool(flags & INT8_FLAGS)
    else:
        assert facts.fast_int8 is None


def test_profile_field_is_typed():
    from toolkit.devices.profile_schema import check_profile
    from toolkit.devices.profiles import get_profile

    data = get_profile("raspberry-pi-5").as_dict()
    data.pop("name", None)
    assert not [p for p in check_profile({**data, "cpu_int8_instructions": {"value": ["asimddp"], "source": "TRM"}})
                if "cpu_int8" in p]
    problems = check_profile({**data, "cpu_int8_instructions": {"value": "asimddp", "source": "TRM"}})
    assert any("cpu_int8_instructions" in p and "list of instruction names" in p for p in problems)
    problems = check_profile({**data, "cpu_int8_instructions": {"value": []}})
    assert any("cpu_int8_instructions" in p and "source" in p for p in problems)


def test_unknown_device_is_refused(digits_cnn_onnx, digits_test, tmp_path):
    from toolkit.quantize.auto import auto_quantize

    with pytest.raises(BadInput):
        auto_quantize(digits_cnn_onnx, tmp_path / "never", data=digits_test, device="no-such-board")
    assert not (tmp_path / "never").exists()


@pytest.fixture(scope="module")
def outlier_cnn(tmp_path_factory, digits_cnn_onnx):
    """The digits CNN as an equivalent float function with outliers 8-bit cannot hold (as in test_auto):
    conv1 channel 0 x300, the even channels of conv2 /300 and the matching Gemm columns x300."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(digits_cnn_onnx))
    inits = {init.name: init for init in model.graph.initializer}

    def update(name, change):
        array = numpy_helper.to_array(inits[name]).copy()
        change(array)
        inits[name].CopyFrom(numpy_helper.from_array(array, name))

    update("0.weight", lambda a: a.__setitem__(0, a[0] * 300.0))
    update("0.bias", lambda a: a.__setitem__(0, a[0] * 300.0))
    update("2.weight", lambda a: a.__setitem__((slice(None), 0), a[:, 0] / 300.0))
    update("2.weight", lambda a: a.__setitem__(slice(0, None, 2), a[0::2] / 300.0))
    update("2.bias", lambda a: a.__setitem__(slice(0, None, 2), a[0::2] / 300.0))

    def gemm(array):
        for channel in range(0, 32, 2):
            array[:, channel * 16 : (channel + 1) * 16] *= 300.0

    update("6.weight", gemm)
    path = tmp_path_factory.mktemp("outlier") / "outlier.onnx"
    onnx.save(model, str(path))
    return path


def test_tflite_mixed_precision_when_no_int8_mode_passes(outlier_cnn, digits_test, tmp_path):
    from toolkit.quantize.auto import auto_quantize

    result = auto_quantize(outlier_cnn, tmp_path / "auto", data=digits_test, max_drop=0.5,
                           calibration="builtin:digits:train", formats=["tflite"], budget_s=900)
    assert {t.format for t in result.tries} == {"tflite"}
    full_int8 = [t for t in result.tries if t.mode in ("dynamic-int8", "weight-int8", "static-int8") and not t.excluded]
    assert full_int8 and not any(t.passed for t in full_int8), [(t.label, t.drop) for t in full_int8]
    mixed = [t for t in result.tries if t.excluded]
    assert mixed and all(t.mode == "static-int8" for t in mixed), "no TFLite mixed-precision try"
    assert [len(t.excluded) for t in mixed] == sorted(len(t.excluded) for t in mixed)
    markdown = (tmp_path / "auto" / "tries.md").read_text()
    assert "Nodes kept in float:" in markdown
    if any(t.passed for t in mixed):  # a mixed int8 model is smaller than every float16 one
        assert result.tries[result.chosen].excluded and result.model_path.suffix == ".tflite"
