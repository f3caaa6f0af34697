"""The README as a newcomer's page: the two commands, a quickstart whose commands parse, a
citation, a licence, no project internals; developer material in CONTRIBUTING.md."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _block_after(marker: str) -> str:
    rest = README.split(marker, 1)[1]
    return rest.split("```bash\n", 1)[1].split("```", 1)[0].strip()


def test_exactly_two_marked_commands_near_the_top():
    assert README.count("<!-- demo-command -->") == 1 and README.count("<!-- test-command -->") == 1
    assert README.index("<!-- test-command -->") < len(README) // 10
    assert _block_after("<!-- demo-command -->").endswith("sare-tf demo")
    assert _block_after("<!-- test-command -->").endswith("pytest")


def test_the_quickstart_commands_parse_with_the_real_command_line():
    from sare_tf.cli import build_parser

    block = README.split("## Quickstart", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(c) for c in block.replace("\\\n", " ").strip().splitlines()]
    assert len(commands) == 4 and all(c[0] == "sare-tf" for c in commands)
    parser = build_parser()
    for command in commands:
        parser.parse_args(command[1:])  # a stale flag exits here
    image = re.search(r"!\[[^\]]*\]\(([^)]+)\)", README.split("## Quickstart", 1)[1]).group(1)
    assert (ROOT / image).is_file()


def test_no_project_internals_on_the_users_page():
    lowered = README.lower()
    for word in ("issue", "round 2", "round 3", "this session", "design document", "the design's"):
        assert word not in lowered, word
    assert "## Package layout" not in README
    contributing = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert "## Package layout" in contributing and 'pytest -m "not slow"' in contributing


def test_citation_licence_and_tensorboard():
    bibtex = README.split("```bibtex\n", 1)[1].split("```", 1)[0]
    assert bibtex.startswith("@inproceedings{")
    assert {"title", "author", "booktitle", "year"} <= set(
        re.findall(r"^\s*(\w+)\s*=", bibtex, re.M)
    )
    assert "Liu, Liu and Li, Hongdong and Dai, Yuchao" in bibtex
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert setup["metadata"]["license"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert "tensorboard" in setup["options.extras_require"]["tensorboard"]
    assert 'pip install -e ".[tensorboard]"' in README and "tensorboard --logdir" in README
