"""The package's seams: what loading a model imports, and how modules import each other."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PACKAGE = Path(__file__).parents[1] / "segcli"
HEAVY = ("segcli.backends.export", "onnx", "onnxruntime", "onnxscript")


def test_the_cli_starts_without_torch():
    """`segcli --help`, `--version` and typos answer at once: the command modules import no torch (two
    seconds) until a command runs."""
    script = "import sys; import segcli.cli.app; print(sorted(m for m in ('torch',) if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.slow  # a fresh interpreter
def test_loading_a_local_model_and_predicting_imports_no_exporter(tiny_convnext_dir, tmp_path):
    """The API and `segcli predict` on a local model directory never import the exporter or ONNX."""
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(tmp_path / "x.png")
    script = f"""
import json, sys
import numpy as np
import pytest
from segcli import Segmenter
from segcli.cli.app import app
seg = Segmenter.from_pretrained({str(tiny_convnext_dir)!r})
labels = seg.predict(np.zeros((32, 48, 3), np.uint8))
try:
    app(["predict", {str(tmp_path / "x.png")!r}, "-m", {str(tiny_convnext_dir)!r}, "-o", {str(tmp_path / "out")!r},
         "-q"], prog_name="segcli")
except SystemExit as e:
    assert e.code in (0, None), e.code
print(json.dumps({{"shape": list(labels.shape), "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["shape"] == [32, 48] and (tmp_path / "out" / "x.png").is_file()
    assert doc["loaded"] == []


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    base = PACKAGE.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def test_no_module_imports_the_init_of_a_package_containing_it():
    """`from . import name` / `from .. import name` may only name submodules: a module that took a name from
    the `__init__` of its own package (or of a package above it) would depend on its package's assembly."""
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + (node.module.split(".") if node.module else []))
            if not (PACKAGE.parent.joinpath(*target.split(".")) / "__init__.py").is_file():
                continue  # from a plain module
            if not (module == target or module.startswith(target + ".")):
                continue  # another package's __init__ (its public names) is fine
            names = [a.name for a in node.names if not _is_module(f"{target}.{a.name}")]
            if names and path.name != "__init__.py":
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {names} from {target}")
    assert offences == []


# The top-level units in layers, lowest first: a module imports only from its own unit or from a lower layer
# (lazy imports inside functions count too), so the tree is a diagram with no import running back up.
LAYERS = [
    ("errors", "fsutil", "_version"),
    ("extras", "versions"),
    ("engine",),  # inference for any SegModel, and the presets
    ("model",),  # the networks (they describe their heads in engine.heads' terms)
    ("loading",),  # model files → described, strictly loaded networks
    ("io", "backends"),  # files in and out; how a loaded network runs
    ("api",),
    ("report",),
    ("batch",),  # runs over collections: prediction
    ("evaluation",),  # predicts first when asked (batch), then scores
    ("quantization",),  # int8 models, checked with evaluation's metrics
    ("train",),  # fine-tuning, validated with evaluation's metrics
    ("cli",),  # the command line: parses, calls the library, prints
    ("ray", "__init__", "__main__"),  # the package's public faces
]


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + (node.module.split(".") if node.module else []))
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            found += [(node.lineno, t) for t in names]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [(node.lineno, n) for n in names if n == "segcli" or n.startswith("segcli.")]
    return found


def test_imports_only_go_down_the_layers():
    layer = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = _unit(_module_name(path))
        assert here in layer or path.stem in layer, f"{path}: its top-level unit is in no layer"
        here = here if here in layer else path.stem
        for line, target in _imports(path):
            there = _unit(target) if target != "segcli" else "__init__"
            there = there if there in layer else target.split(".")[1]
            if there != here and layer[there] >= layer[here]:
                offences.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here}) imports {target} ({there})")
    assert offences == []


def test_first_line_is_the_one_exception_summary():
    from segcli.errors import first_line

    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("x" * 500), 10) == "x" * 10
    assert first_line(KeyError("k"), typed=True) == "KeyError: 'k'"
    err = PermissionError(13, "Permission denied", "/a/b")
    assert first_line(err, strerror=True) == "Permission denied" and "/a/b" in first_line(err)


def test_every_checkpoint_format_has_a_reader():
    from segcli.loading.convert import READERS
    from segcli.loading.registry import FORMATS

    assert set(READERS) == set(FORMATS)
