"""Each stage in dvc.yaml depends on exactly the library modules its script imports.

A module missing from a stage's deps lets an edit change the stage's output without DVC
rerunning it (a stale model); an extra one reruns it for nothing (a preprocess rerun on RSNA
takes minutes). Imports are followed through the library, lazy ones inside functions
included, by reading the source (nothing is imported).
"""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

# Imported by every stage, but cannot change what a stage writes, so not deps (an edit
# would otherwise rerun the whole pipeline): config only validates params.yaml, which spells
# out every knob (tests/test_config.py) and whose values DVC tracks per stage; errors and
# runner only word messages and set up logging.
NOT_DEPS = {"boneage/config.py", "boneage/errors.py", "boneage/runner.py"}


def _module_file(name: str) -> Path | None:
    base = ROOT / name.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _dep(path: Path) -> str:
    """The dvc.yaml dep that covers a module file: the file, or its subpackage's folder
    (``boneage/sources`` for ``boneage/sources/labels.py``)."""
    parts = path.relative_to(ROOT).parts
    return "/".join(parts[:2]) if len(parts) > 2 else "/".join(parts)


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:  # a submodule, or a name defined in the module itself
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule if _module_file(submodule) else node.module)
    return {name for name in names if name.startswith("boneage") and _module_file(name)}


def library_modules(script: Path) -> set[str]:
    """The ``boneage/`` modules (files, or subpackage folders) ``script`` imports, directly or
    through other library modules."""
    seen, pending = set(), list(_imported(script))
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending += _imported(_module_file(name))
    return {_dep(_module_file(name)) for name in seen}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_the_library_modules_its_script_imports(stage):
    script = ROOT / "stages" / f"{stage}.py"
    assert f"stages/{stage}.py" in STAGES[stage]["deps"]
    needed = library_modules(script) - NOT_DEPS
    listed = {dep for dep in STAGES[stage]["deps"] if dep.startswith("boneage/")}
    assert listed == needed, (f"{stage}: missing from deps {sorted(needed - listed)}, "
                              f"not imported {sorted(listed - needed)}")


def test_the_import_walk_follows_lazy_imports_inside_functions():
    modules = library_modules(ROOT / "stages" / "train.py")
    # models imports efficientnet_lite only inside lite_backbone: still a dep of train
    assert {"boneage/training.py", "boneage/models.py",
            "boneage/efficientnet_lite.py", "boneage/torch_checkpoint.py"} <= modules
