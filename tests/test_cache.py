"""The stage cache never serves stale work: code fingerprints from the import closure of what each
stage runs (edits in a copy of the package), and a pipeline whose stage code was edited."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import fustal.pipeline.cache as cache
from fustal.config import to_plain
from fustal.data.views import load_pipeline_data
from fustal.pipeline.cache import code_fingerprint, import_closure, target_modules
from fustal.pipeline.keys import COSMETIC_MODULES, selection_identity, stage_identity
from tests.conftest import REPO_ROOT, compose_train, train

STAGES = {
    "generator": ["fustal.pipeline.stages.generator"],
    "filter": ["fustal.pipeline.stages.filter"],
    # the student's scheduler is named only by its config's _target_
    "student": ["fustal.pipeline.stages.student", "fustal.student.schedule"],
}


def copy_package(tmp: Path) -> Path:
    package = tmp / "fustal"
    shutil.copytree(REPO_ROOT / "fustal", package, ignore=shutil.ignore_patterns("__pycache__"))
    return package


def fingerprints(package: Path) -> dict[str, str]:
    return {name: code_fingerprint(roots, package) for name, roots in STAGES.items()}


@pytest.mark.parametrize(
    "edited, changed",
    [
        # reached only indirectly: generator.module -> pseudo.parallel
        ("pseudo/parallel.py", {"generator"}),
        # the stages' shared inference and helpers
        ("inference.py", {"generator", "student"}),
        ("pipeline/stages/common.py", {"generator", "student"}),
        # reached only through the scheduler's _target_
        ("student/schedule.py", {"student"}),
        ("pseudo/filters.py", {"filter"}),
        # lazily imported inside a function (data.views -> data.synthetic)
        ("data/synthetic.py", {"generator", "filter", "student"}),
        # cosmetic: console, progress, pictures
        ("training/progress.py", set()),
        ("viz/timeline.py", set()),
        ("viz/pictures.py", set()),
        ("training/loggers.py", set()),
    ],
)
def test_an_edit_changes_the_fingerprint_of_exactly_the_stages_that_run_it(
    tmp_path: Path, edited: str, changed: set[str]
) -> None:
    package = copy_package(tmp_path)
    before = fingerprints(package)
    path = package / edited
    path.write_text(path.read_text() + "\n# an edit\n")
    after = fingerprints(package)
    assert {name for name in STAGES if after[name] != before[name]} == changed


def test_the_key_rule_keeps_what_a_stage_reads_and_leaves_out_the_rest(tmp_path: Path) -> None:
    """What enters a training stage's key (fustal.pipeline.keys) on the composed config: its
    module, data, dataset, features, seed, trainer and (held-out videos) the split are in;
    worker counts, the progress bar and the cosmetic modules' code are out."""
    noisy = ["num_workers=3", "trainer.enable_progress_bar=true", "trainer.log_every_n_steps=7"]
    cfg = compose_train(tmp_path, "validation=heldout", *noisy)
    quiet = compose_train(tmp_path, "validation=heldout")
    data = load_pipeline_data(cfg)
    for stage in ("generator", "student"):
        module, spec = cfg[stage].module, getattr(data, stage).features
        identity = stage_identity(cfg, stage, module, spec)
        read = {"module", "data", "dataset", "features", "seed", "trainer", "heldout"}
        assert set(identity) == read
        assert identity == stage_identity(quiet, stage, quiet[stage].module, spec)
        assert "num_workers" not in identity["data"]
        assert "proposal_workers" not in identity["module"]
        assert identity["trainer"]["accelerator"] == cfg.trainer.accelerator
        assert identity["heldout"] == {"fraction": 0.1, "seed": cfg.validation.seed}
        assert identity["dataset"]["synthetic"] == to_plain(cfg.dataset.synthetic)
    test_mode = compose_train(tmp_path)
    spec = data.student.features
    assert "heldout" not in stage_identity(test_mode, "student", test_mode.student.module, spec)
    assert selection_identity(test_mode, False) == {}
    assert selection_identity(cfg, True, 3) == {"select": {"metric": "avg", "patience": 3}}
    video = compose_train(tmp_path, "validation=video_labels")
    assert selection_identity(video, True)["select"]["metric"] == "video_map"
    closure = import_closure(list(STAGES["student"]))
    assert not [m for m in closure if m.startswith(COSMETIC_MODULES)]
    assert "fustal.student.model" in closure and "fustal.pipeline.keys" in closure


def test_import_closure_follows_lazy_relative_and_submodule_imports(tmp_path: Path) -> None:
    package = tmp_path / "fustal"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import leaf\n")
    (package / "sub" / "leaf.py").write_text("X = 1\n")
    (package / "lazy.py").write_text("Y = 2\n")
    (package / "never.py").write_text("Z = 3\n")
    (package / "root.py").write_text(
        "from fustal.sub import leaf\n\ndef f():\n    import fustal.lazy\n    return fustal.lazy\n"
    )
    closure = import_closure(["fustal.root"], package)
    assert closure == ["fustal", "fustal.lazy", "fustal.root", "fustal.sub", "fustal.sub.leaf"]
    assert import_closure(["fustal.root"], package, excluded=["fustal.sub"]) == [
        "fustal",
        "fustal.lazy",
        "fustal.root",
    ]
    with pytest.raises(ValueError, match="no module fustal.gone"):
        import_closure(["fustal.gone"], package)


def test_target_modules_name_the_code_only_instantiate_reaches(tmp_path: Path) -> None:
    cfg = compose_train(tmp_path)
    named = target_modules([to_plain(cfg.student.module), to_plain(cfg.callbacks)])
    assert "fustal.student.schedule" in named  # scheduler: a _target_ string only
    assert "fustal.training.callbacks" in named  # batch reseeding
    assert all(m.startswith("fustal.") for m in named)  # torch / Lightning targets are not ours


def test_editing_stage_code_recomputes_that_stage_and_what_depends_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline as a user runs it, with the cache reading the code of an edited copy."""
    package = copy_package(tmp_path)
    monkeypatch.setattr(cache, "PACKAGE_DIR", package)

    def entries() -> dict[str, int]:
        return {s: len(list((tmp_path / "cache" / s).iterdir())) for s in ("generator", "student")}

    train(tmp_path, "plot_videos=0")
    assert entries() == {"generator": 1, "student": 1}
    parallel = package / "pseudo" / "parallel.py"  # reached only through the generator module
    parallel.write_text(parallel.read_text() + "\n# an edit\n")
    train(tmp_path, "plot_videos=0")
    assert entries() == {"generator": 2, "student": 2}  # the student is downstream
    progress = package / "training" / "progress.py"  # cosmetic
    progress.write_text(progress.read_text() + "\n# an edit\n")
    train(tmp_path, "plot_videos=0")
    assert entries() == {"generator": 2, "student": 2}
