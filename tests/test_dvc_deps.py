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
# The top-level pipeline and the release pipeline (release/dvc.yaml, paths relative to it).
PIPELINES = {"dvc.yaml": ROOT / "dvc.yaml", "release/dvc.yaml": ROOT / "release" / "dvc.yaml"}
STAGES = {(name, stage): definition for name, path in PIPELINES.items()
          for stage, definition in yaml.safe_load(path.read_text())["stages"].items()}

# Imported by every stage, but cannot change what a stage writes, so not deps (an edit
# would otherwise rerun the whole pipeline): config only validates params.yaml, which spells
# out every knob (tests/test_config.py) and whose values DVC tracks per stage; errors and
# runner only word messages and set up logging.
NOT_DEPS = {"boneage/kernel/config.py", "boneage/kernel/errors.py", "boneage/kernel/runner.py"}


def _module_file(name: str) -> Path | None:
    base = ROOT / name.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _dep(path: Path) -> str:
    """The dvc.yaml dep that covers a module file: the file (``boneage/imaging/dicom.py``), or
    for a package inside a layer, its folder (``boneage/data/sources`` for
    ``boneage/data/sources/labels.py``)."""
    parts = path.relative_to(ROOT).parts
    return "/".join(parts[:3]) if len(parts) > 3 else "/".join(parts)


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


def _from_root(pipeline: str, dep: str) -> str:
    """A dep of ``pipeline`` as a path from the repository root."""
    return (PIPELINES[pipeline].parent / dep).resolve().relative_to(ROOT).as_posix()


@pytest.mark.parametrize("pipeline,stage", sorted(STAGES), ids=[f"{p}:{s}" for p, s in sorted(STAGES)])
def test_stage_deps_are_the_library_modules_its_script_imports(pipeline, stage):
    definition = STAGES[pipeline, stage]
    scripts = [word for word in definition["cmd"].split() if word.endswith(".py")]
    assert len(scripts) == 1, f"{pipeline}:{stage} runs {scripts}, expected one stage script"
    script = _from_root(pipeline, scripts[0])
    deps = {_from_root(pipeline, dep) for dep in definition["deps"]}
    assert script.startswith("stages/") and script in deps
    needed = library_modules(ROOT / script) - NOT_DEPS
    listed = {dep for dep in deps if dep.startswith("boneage/")}
    assert listed == needed, (f"{pipeline}:{stage}: missing from deps {sorted(needed - listed)}, "
                              f"not imported {sorted(listed - needed)}")


def test_the_import_walk_follows_lazy_imports_inside_functions():
    modules = library_modules(ROOT / "stages" / "train.py")
    # models imports efficientnet_lite only inside lite_backbone: still a dep of train
    assert {"boneage/learning/training.py", "boneage/learning/models.py",
            "boneage/learning/efficientnet_lite.py", "boneage/learning/torch_checkpoint.py"} <= modules
