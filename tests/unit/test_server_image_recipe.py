"""The image recipe, checked without building it (CI's cheap check; `tox -e image` builds and runs it).

Everything the recipe COPYs is in the build context `server_image.build()` makes, and only that; the
reference is the server's version; the inputs hash that decides "rebuild or not" moves with every
input and nothing else; the entrypoint, user and ports are the ones the pod relies on.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from edge_site import server_image  # noqa: E402
from manifests import MODEL_PORT  # noqa: E402

RECIPE = (ROOT / "models/server/Containerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in RECIPE.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_every_copy_source_is_in_the_build_context_and_nothing_else_is():
    copied = set()
    for op, args in instructions():
        if op == "COPY":
            sources = shlex.split(args)[:-1]
            copied.update(s for s in sources if not s.startswith("--"))
    context = {rel for rel, _ in server_image.context_files()}
    for source in copied:
        assert any(rel == source or rel.startswith(source.rstrip("/") + "/") for rel in context), source
    needed = {rel for rel in context if rel != "models/server/Containerfile"}
    for rel in needed:
        assert any(rel == s or rel.startswith(s.rstrip("/") + "/") for s in copied), f"{rel} is hashed but never copied"


def test_base_is_a_build_argument_defaulting_to_python_310_slim():
    ops = instructions()
    assert ops[0] == ("ARG", f"BASE={server_image.DEFAULT_BASE}")
    assert ops[1] == ("FROM", "${BASE}")
    assert server_image.DEFAULT_BASE == "docker.io/library/python:3.10-slim-bookworm"


def test_the_pod_gets_user_10001_the_wrappers_entrypoint_and_its_port():
    ops = {op: args for op, args in instructions() if op in ("USER", "CMD", "EXPOSE")}
    assert ops["USER"] == "10001:10001"
    assert ops["CMD"] == '["seldon-core-microservice", "defect_server.seldon_model.DefectModel"]'
    assert str(MODEL_PORT) in ops["EXPOSE"].split()


def test_the_reference_is_the_servers_version():
    version = re.search(r'^version = "(.+)"', (ROOT / "models/server/pyproject.toml").read_text(), re.M).group(1)
    assert server_image.reference() == f"localhost/defect-server:{version}" == "localhost/defect-server:0.2.0"


def test_the_charm_defaults_to_exactly_the_image_the_recipe_builds():
    # bootstrap imports reference() into MicroK8s: a pod naming anything else would try to pull it
    from model_config import DEFAULT_SERVER_IMAGE

    charmcraft = yaml.safe_load((ROOT / "charms/onnx-model/charmcraft.yaml").read_text())
    default = charmcraft["config"]["options"]["server-image"]["default"]
    assert DEFAULT_SERVER_IMAGE == default == server_image.reference()


def test_the_inputs_hash_moves_with_every_input_and_only_with_them(tmp_path, monkeypatch):
    before = server_image.inputs_sha256("base:1", "id1")
    assert server_image.inputs_sha256("base:1", "id1") == before
    assert server_image.inputs_sha256("base:2", "id1") != before
    assert server_image.inputs_sha256("base:1", "id2") != before
    files = server_image.context_files()
    changed = tmp_path / "copy"
    changed.write_bytes(files[1][1].read_bytes() + b"\n# changed\n")
    monkeypatch.setattr(server_image, "context_files", lambda: [files[0], (files[1][0], changed), *files[2:]])
    assert server_image.inputs_sha256("base:1", "id1") != before


def test_no_bytecode_enters_the_context():
    assert not [rel for rel, _ in server_image.context_files() if "__pycache__" in rel or rel.endswith(".pyc")]


@pytest.mark.parametrize("name", ["buildah", "kaniko"])
def test_a_builder_that_is_not_here_is_a_clear_error(name, monkeypatch):
    monkeypatch.setattr(server_image.shutil, "which", lambda _: None)
    with pytest.raises(server_image.StepFailed, match="not installed|use one of"):
        server_image.choose_builder(name)


def test_the_image_holds_no_agpl_training_code():
    """README, Licences: ultralytics (AGPL-3.0) and torch are training-only; the image's
    requirements and the server's imports name neither."""
    import ast

    pinned = {
        re.split(r"[=<>\[ ;]", line, maxsplit=1)[0].lower()
        for line in (ROOT / "models/server/requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert "seldon-core" in pinned and not pinned & {"ultralytics", "torch", "torchvision"}
    imported = set()
    for source in (ROOT / "models/server/defect_server").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    assert "onnxruntime" in imported and not imported & {"ultralytics", "torch"}
    assert "seldon-core==1.17.1" in (ROOT / "models/server/requirements.txt").read_text()  # the last Apache-2.0
