"""Every command in the README and docs/ works as written: parsed by the program that runs it.

Each ``bash`` block of README.md, docs/*.md, results/README.md and the bundles' docs/README.md is split into
commands as bash would (line continuations, arrays such as ``"${D3[@]}"``); each command is then checked by its
own program without training: ``pgnm ...`` by the CLI's parser, ``python -m monai.bundle run ...`` (also under
``torchrun``) by the bundle's own override check in the bundle's folder (config files, meta and logging files
exist; every ``--id`` names something in the configs), the other ``monai.bundle`` commands by loading their
configs, ``make X`` by the Makefile. A command of any other kind fails the test, so a new one gets a check.
The runs themselves are tested elsewhere (``test_bundles``, ``test_cli``, ``test_ddp``).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from pgnm_monai.components import check_cli_overrides

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", ROOT / "results" / "README.md", *(ROOT / "docs").glob("*.md")]
    + list((ROOT / "bundles").glob("*/docs/README.md"))
)
_ARRAY = re.compile(r"^(\w+)=\((.*?)\)\s*$", re.S | re.M)
_MONAI_MAIN = os.path.join("monai", "bundle", "__main__.py")


def _commands(text: str) -> list[list[str]]:
    """The commands of the ``bash`` blocks of a Markdown page, as argument lists (arrays expanded)."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        block = block.replace("\\\n", "")  # bash's line continuation
        arrays = {name: shlex.split(body, comments=True) for name, body in _ARRAY.findall(block)}
        block = _ARRAY.sub("", block)
        for name, words in arrays.items():
            block = block.replace(f'"${{{name}[@]}}"', shlex.join(words))
        commands += [shlex.split(line, comments=True) for line in block.splitlines()]
    return [c for c in commands if c]


def _cases() -> list:
    cases = []
    for page in PAGES:
        for i, argv in enumerate(_commands(page.read_text())):
            cases.append(pytest.param(page, argv, id=f"{page.relative_to(ROOT)}:{i}:{' '.join(argv[:4])}"))
    return cases


def _bundle_dir(page: Path, argv: list[str]) -> Path:
    """The folder a bundle command runs from: the page's bundle, else the fine-tune overlay or the pretrain one."""
    if page.parent.name == "docs" and page.parent.parent.parent.name == "bundles":
        return page.parent.parent
    return ROOT / "bundles" / ("pgnm_finetune" if any("../pgnm_pretrain" in a for a in argv) else "pgnm_pretrain")


def _option(argv: list[str], name: str) -> str:
    i = argv.index(f"--{name}")
    return argv[i + 1]


def _check_monai_bundle(page: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m monai.bundle <command> ...`` (argv from ``<command>``), checked in its bundle's folder."""
    from monai.bundle import ConfigParser

    monkeypatch.chdir(_bundle_dir(page, argv))
    files = _option(argv, "config_file")
    names = eval(files) if files.startswith("[") else [files]  # noqa: S307 - the docs' own literal lists
    for name in [*names, _option(argv, "meta_file"), *(["configs/logging.conf"] if "--logging_file" in argv else [])]:
        assert os.path.isfile(name), f"{page.name}: {' '.join(argv)} names {name!r}, which does not exist"
    if argv[0] == "run":
        assert check_cli_overrides([_MONAI_MAIN, *argv])
    else:
        assert argv[1] == "network_def" and "network_def" in ConfigParser(ConfigParser.load_config_files(names))


@pytest.mark.parametrize("page,argv", _cases())
def test_documented_command_is_accepted(page: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    program = argv[0]
    if program == "make":
        assert re.search(rf"^{re.escape(argv[1])}:", (ROOT / "Makefile").read_text(), re.M), argv
    elif program == "pgnm":
        from pgnm_monai.cli import build_parser

        args = build_parser().parse_args(argv[1:])  # SystemExit (argparse's error) fails the test
        assert callable(args.func)
    elif program == "python" and argv[1:3] == ["-m", "monai.bundle"]:
        _check_monai_bundle(page, argv[3:], monkeypatch)
    elif program == "torchrun":
        module = argv.index("-m")
        assert argv[module + 1] == "monai.bundle", argv
        _check_monai_bundle(page, argv[module + 2 :], monkeypatch)
    else:
        pytest.fail(f"{page.name}: no check for the command {shlex.join(argv)!r}; add one to tests/test_docs.py")


def test_every_page_with_commands_is_read():
    """The pages above hold the commands users copy; a page's bash blocks must yield commands."""
    counts = {page.relative_to(ROOT).as_posix(): len(_commands(page.read_text())) for page in PAGES}
    assert counts["README.md"] >= 6 and counts["docs/bundles.md"] >= 8 and counts["docs/volumes.md"] >= 8, counts


def test_commands_split_as_bash_would():
    text = "```bash\nA=(--x 1\n    --y \"{'k': 2}\")\ncmd \\\n  --z \"['a',\\\n'b']\" \"${A[@]}\"  # note\n```\n"
    assert _commands(text) == [["cmd", "--z", "['a','b']", "--x", "1", "--y", "{'k': 2}"]]


def test_a_misspelt_documented_id_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["run", "--config_file", "configs/train.json", "--meta_file", "configs/metadata.json", "--netwrok", "x"]
    with pytest.raises(ValueError, match="unknown config id 'netwrok'.*did you mean 'network'"):
        _check_monai_bundle(ROOT / "README.md", argv, monkeypatch)
    with pytest.raises(AssertionError, match="configs/nope.json"):
        _check_monai_bundle(ROOT / "README.md", ["run", "--config_file", "configs/nope.json", *argv[3:5]], monkeypatch)
