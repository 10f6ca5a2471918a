"""A run's output root on shared storage: a path outside the checkout (what a network file system
looks like), an fsspec `memory://` root, and an S3 bucket on a local S3-compatible server (moto's
server mode on 127.0.0.1, started here with dummy credentials). Every step folder is published
with its manifest and step record; a rerun reuses every step from the URL (even with the local
staging folder gone); a publish interrupted between files is not taken as done."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from toolkit.pipeline import run
from toolkit.pipeline.recipe import load_recipe

# the demo's stages on one format and one quantize mode (as tests/test_ray_executor.py)
SMALL_RECIPE = {
    "name": "storage-small",
    "source": "builtin:digits-cnn",
    "export": ["onnx"],
    "quantize": {"modes": ["dynamic-int8"]},
    "validate": {"data": "builtin:digits:test", "max_drop": 2.0, "min_agreement": 0.97},
    "bench": {"estimate": ["raspberry-pi-5"]},
}
STEPS = ["export-onnx", "quantize-onnx-dynamic-int8", "validate-export-onnx", "validate-quantize-onnx-dynamic-int8",
         "bench/export-onnx-raspberry-pi-5-estimate", "bench/quantize-onnx-dynamic-int8-raspberry-pi-5-estimate"]
ARTIFACTS = ["export-onnx", "quantize-onnx-dynamic-int8"]  # the step folders that hold a manifest and a model


def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(SMALL_RECIPE))
    return path


def statuses(result) -> dict[str, str]:
    return {record["step"]: record["status"] for record in result.steps}


def test_a_root_outside_the_checkout_given_as_an_absolute_path(tmp_path):
    """A network file system is a path every node sees: the local code path, unchanged."""
    root = (tmp_path / "nfs" / "runs" / "r1").absolute()
    first = run(load_recipe(recipe_file(tmp_path)), root)
    assert first.url is None and first.out_dir == root
    for name in STEPS:
        assert json.loads((root / name / "step.json").read_text())["key"]
    for name in ARTIFACTS:
        manifest = json.loads((root / name / "manifest.json").read_text())
        assert (root / name / manifest["model_file"]).is_file()
    again = run(load_recipe(recipe_file(tmp_path)), str(root))
    assert set(statuses(again).values()) == {"reused"}


def test_memory_root_publishes_every_folder_and_an_interrupted_publish_reruns(tmp_path, monkeypatch):
    import fsspec

    url = f"memory://edgeward-test-{uuid.uuid4().hex[:8]}/run"
    fs = fsspec.filesystem("memory")
    first = run(load_recipe(recipe_file(tmp_path)), url)
    assert first.url == url and set(statuses(first).values()) == {"ran"}
    root = fs._strip_protocol(url)
    for name in STEPS:
        # the published record names the staging folder by a token, replaced on fetch
        record = fs.cat_file(f"{root}/{name}/step.json").decode()
        local = (first.out_dir / name / "step.json").read_text()
        assert str(first.out_dir) not in record
        assert json.loads(record.replace("{edgeward-staging}", str(first.out_dir))) == json.loads(local)
    for name in ARTIFACTS:
        manifest = json.loads(fs.cat_file(f"{root}/{name}/manifest.json"))
        local = first.out_dir / name / manifest["model_file"]
        assert fs.cat_file(f"{root}/{name}/{manifest['model_file']}") == local.read_bytes()
    assert fs.exists(f"{root}/index.html") and fs.exists(f"{root}/edgeward-run.json")

    # the quantize step's publish dies after its first file: neither manifest nor step record is there
    quantize = "quantize-onnx-dynamic-int8"
    put_file = type(fs).put_file
    calls = []

    def dying_put(self, lpath, rpath, *args, **kwargs):
        if f"/{quantize}/" in rpath:
            calls.append(rpath)
            if len(calls) == 2:
                raise OSError("connection lost (test)")
        return put_file(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(type(fs), "put_file", dying_put)
    with pytest.raises(OSError, match="connection lost"):
        run(load_recipe(recipe_file(tmp_path)), url, force=True)
    monkeypatch.setattr(type(fs), "put_file", put_file)
    assert not fs.exists(f"{root}/{quantize}/step.json") and not fs.exists(f"{root}/{quantize}/manifest.json")

    resumed = run(load_recipe(recipe_file(tmp_path)), url)
    status = statuses(resumed)
    assert status[quantize] == "ran"  # staging held its record, but the URL did not: not taken as done
    assert {name: value for name, value in status.items() if name != quantize} == {
        name: "reused" for name in status if name != quantize}  # export was republished whole before the crash
    assert fs.exists(f"{root}/{quantize}/step.json") and fs.exists(f"{root}/{quantize}/manifest.json")


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3 on a free loopback port, with dummy credentials; yields its endpoint URL."""
    moto_server = pytest.importorskip("moto.server")
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("NO_PROXY", "127.0.0.1"), ("no_proxy", "127.0.0.1")):
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_s3_bucket_on_a_local_server(s3_server, run_cli, tmp_path, monkeypatch):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="edgeward-runs")
    url = "s3://edgeward-runs/team/r1"
    args = ("--json", "run", recipe_file(tmp_path), "-o", url, "--storage-option", f"endpoint_url={s3_server}")
    first = run_cli(*args)
    assert first.exit_code == 0, first.stderr
    assert {step["status"] for step in first.json()["steps"]} == {"ran"}
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="edgeward-runs", Prefix="team/r1/")["Contents"]}
    for name in STEPS:
        assert f"team/r1/{name}/step.json" in keys
    for name in ARTIFACTS:
        body = s3.get_object(Bucket="edgeward-runs", Key=f"team/r1/{name}/manifest.json")["Body"].read()
        assert f"team/r1/{name}/{json.loads(body)['model_file']}" in keys
    assert "team/r1/edgeward-run.json" in keys and "team/r1/index.html" in keys

    # another machine: no local staging at all; every step is fetched from the bucket and reused
    shutil.rmtree(first.json()["out_dir"])
    again = run_cli(*args)
    assert again.exit_code == 0, again.stderr
    assert {step["status"] for step in again.json()["steps"]} == {"reused"}
    assert [row["accuracy"] for row in again.json()["summary"]] == [row["accuracy"] for row in first.json()["summary"]]

    # the endpoint through botocore's own AWS_ENDPOINT_URL instead of a storage option
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    planned = run(load_recipe(recipe_file(tmp_path)), url, dry_run=True)
    assert {step["status"] for step in planned.steps} == {"reuse"}


def test_bad_storage_roots_are_one_line_exit_2(run_cli, tmp_path, monkeypatch):
    path = recipe_file(tmp_path)
    result = run_cli("run", path, "-o", "nosuchproto://bucket/run")
    assert result.exit_code == 2 and "unknown storage protocol 'nosuchproto'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("run", path, "-o", "memory://x/run", "--storage-option", "endpoint_url")
    assert result.exit_code == 2 and "KEY=VALUE" in result.stderr
    monkeypatch.setitem(__import__("sys").modules, "s3fs", None)  # the storage extra not installed
    result = run_cli("run", path, "-o", "s3://bucket/run")
    assert result.exit_code == 2 and "pip install 'edgeward[storage]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(__import__("os").environ.get("EDGEWARD_TEST_LOOPBACK_ONLY") != "1",
                    reason="Ray tests run in a loopback-only network namespace: use scripts/test")
def test_ray_tasks_publish_their_steps_and_a_serial_run_reuses_them(tmp_path):
    """Each Ray task publishes the folder it made; a serial run elsewhere (no staging) reuses all."""
    pytest.importorskip("ray")
    bucket = tmp_path / "bucket"
    url = f"file://{bucket}/run"
    first = run(load_recipe(recipe_file(tmp_path)), url, executor="ray")
    assert set(statuses(first).values()) == {"ran"}
    for name in STEPS:
        assert json.loads((bucket / "run" / name / "step.json").read_text())["key"]
    for name in ARTIFACTS:
        manifest = json.loads((bucket / "run" / name / "manifest.json").read_text())
        assert (bucket / "run" / name / manifest["model_file"]).is_file()
    shutil.rmtree(first.out_dir)
    again = run(load_recipe(recipe_file(tmp_path)), url)
    assert set(statuses(again).values()) == {"reused"}
