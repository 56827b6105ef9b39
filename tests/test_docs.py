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


_FROM_BUNDLE = re.compile(r"[Ff]rom `bundles/(\w+)`")


def _blocks(text: str) -> list[tuple[str, str | None]]:
    """Each ``bash`` block of a page, with the bundle folder its text names last before it ("from
    `bundles/NAME`", the folder its bundle commands run from; ``None`` when it names none)."""
    blocks = []
    for match in re.finditer(r"^```bash\n(.*?)^```", text, re.S | re.M):
        named = _FROM_BUNDLE.findall(text[: match.start()])
        blocks.append((match.group(1), named[-1] if named else None))
    return blocks


def _commands(text: str) -> list[list[str]]:
    """The commands of the ``bash`` blocks of a Markdown page, as argument lists (arrays expanded)."""
    return [argv for argv, _ in _commands_and_bundles(text)]


def _commands_and_bundles(text: str) -> list[tuple[list[str], str | None]]:
    """:func:`_commands`, each with the bundle folder of its block (:func:`_blocks`)."""
    commands = []
    for block, bundle in _blocks(text):
        block = block.replace("\\\n", "")  # bash's line continuation
        arrays = {name: shlex.split(body, comments=True) for name, body in _ARRAY.findall(block)}
        block = _ARRAY.sub("", block)
        for name, words in arrays.items():
            block = block.replace(f'"${{{name}[@]}}"', shlex.join(words))
        commands += [(shlex.split(line, comments=True), bundle) for line in block.splitlines()]
    return [(c, bundle) for c, bundle in commands if c]


def _cases() -> list:
    cases = []
    for page in PAGES:
        for i, (argv, bundle) in enumerate(_commands_and_bundles(page.read_text())):
            case_id = f"{page.relative_to(ROOT)}:{i}:{' '.join(argv[:4])}"
            cases.append(pytest.param(page, argv, bundle, id=case_id))
    return cases


def _bundle_dir(page: Path, bundle: str | None) -> Path:
    """The folder a bundle command runs from: the page's own bundle, else the one its text names before the block
    ("from `bundles/NAME`"), else the pretrain bundle."""
    if page.parent.name == "docs" and page.parent.parent.parent.name == "bundles":
        return page.parent.parent
    return ROOT / "bundles" / (bundle or "pgnm_pretrain")


def _option(argv: list[str], name: str) -> str:
    i = argv.index(f"--{name}")
    return argv[i + 1]


def _check_monai_bundle(page: Path, argv: list[str], bundle: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m monai.bundle <command> ...`` (argv from ``<command>``), checked in its bundle's folder."""
    from monai.bundle import ConfigParser

    monkeypatch.chdir(_bundle_dir(page, bundle))
    if argv[0] == "verify_metadata":  # the bundle's or a run's metadata, and the shipped schema: no download
        names, others = [], [_option(argv, "meta_file"), _option(argv, "filepath")]
    else:
        files = _option(argv, "config_file")
        names = eval(files) if files.startswith("[") else [files]  # noqa: S307 - the docs' own literal lists
        others = [_option(argv, "meta_file"), *(["configs/logging.conf"] if "--logging_file" in argv else [])]
    for name in [*names, *others]:  # a bundle's file, or what a trained run writes in models/ (metadata.json)
        exists = os.path.isfile(name) or (name in others and name.startswith("models/"))
        assert exists, f"{page.name}: {' '.join(argv)} names {name!r}, which does not exist"
    if argv[0] == "verify_metadata":
        return
    if argv[0] == "run":
        assert check_cli_overrides([_MONAI_MAIN, *argv])
    else:
        assert argv[1] == "network_def" and "network_def" in ConfigParser(ConfigParser.load_config_files(names))


@pytest.mark.parametrize("page,argv,bundle", _cases())
def test_documented_command_is_accepted(
    page: Path, argv: list[str], bundle: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = argv[0]
    if program == "make":
        assert re.search(rf"^{re.escape(argv[1])}:", (ROOT / "Makefile").read_text(), re.M), argv
    elif program == "pgnm":
        from pgnm_monai.cli import build_parser

        args = build_parser().parse_args(argv[1:])  # SystemExit (argparse's error) fails the test
        assert callable(args.func)
    elif program == "python" and argv[1:3] == ["-m", "pgnm_monai"]:  # the same CLI as `pgnm`
        from pgnm_monai.cli import build_parser

        assert callable(build_parser().parse_args(argv[3:]).func)
    elif program == "python" and argv[1:3] == ["-m", "pgnm_monai.experiments.ladder"]:
        from pgnm_monai.experiments.ladder import build_parser as ladder_parser

        ladder_parser().parse_args(argv[3:])
    elif program == "python" and argv[1:3] == ["-m", "monai.bundle"]:
        _check_monai_bundle(page, argv[3:], bundle, monkeypatch)
    elif program == "torchrun":
        module = argv.index("-m")
        assert argv[module + 1] == "monai.bundle", argv
        _check_monai_bundle(page, argv[module + 2 :], bundle, monkeypatch)
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
        _check_monai_bundle(ROOT / "README.md", argv, None, monkeypatch)
    with pytest.raises(AssertionError, match="configs/nope.json"):
        _check_monai_bundle(
            ROOT / "README.md", ["run", "--config_file", "configs/nope.json", *argv[3:5]], None, monkeypatch
        )
